"""Write a folder all at once: build it under a temporary name, then rename it into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator


@contextlib.contextmanager
def atomic_directory(out: str) -> Iterator[str]:
    """Yields a temporary folder beside ``out``; on success it replaces ``out``, on error it is removed.

    A crash mid-write therefore never leaves a half-written ``out`` for a later run to read.
    """
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(out)}-", dir=parent)
    try:
        yield tmp
        if os.path.exists(out):
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
