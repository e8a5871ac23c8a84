"""Progress bars for people: drawn only on a terminal, so logs (TorchX, CI, files) stay readable."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def progress(*args: Any, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A ``tqdm`` bar when ``enabled`` and its stream (stderr unless ``file=``) is a TTY; a silent,
    still iterable one otherwise."""
    stream = kwargs.get("file") or sys.stderr
    return tqdm(*args, disable=not (enabled and stream.isatty()), **kwargs)
