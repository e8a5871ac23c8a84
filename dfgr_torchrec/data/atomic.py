"""Write a folder all at once: build it under a temporary name, then rename it into place; and
the content digest that prepared data sets and checkpoints record for each file."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import time
from typing import Iterator


def file_digest(path: str, digest_size: int = 16) -> str:
    """blake2b (``digest_size`` bytes, 128-bit by default; hex) of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=digest_size)).hexdigest()


STALE_SECONDS = 24 * 3600  # a leftover not provably ours (another host, an older naming) is stale after this


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(out: str) -> None:
    """Removes the ``.tmp-<name>-*`` folders a killed writer of ``out`` left beside it: those of a
    process of this host that no longer runs, and any other older than ``STALE_SECONDS``."""
    parent, base = os.path.split(os.path.abspath(out))
    ours = re.compile(rf"\.tmp-{re.escape(base)}-pid(\d+)@{re.escape(socket.gethostname())}-[0-9a-f]{{8}}")
    for entry in os.scandir(parent):
        if not (entry.name.startswith(f".tmp-{base}-") and entry.is_dir(follow_symlinks=False)):
            continue
        match = ours.fullmatch(entry.name)
        if match:
            stale = not _pid_alive(int(match.group(1)))
        else:
            stale = time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS
        if stale:
            shutil.rmtree(entry.path, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(out: str) -> Iterator[str]:
    """Yields a temporary folder beside ``out``; on success it replaces ``out``, on error it is removed.

    A crash mid-write therefore never leaves a half-written ``out`` for a later run to read, and
    what a killed run left behind is removed by the next one (:func:`remove_stale_temporaries`).
    The folder gets the usual mode (0777 less the umask, e.g. 0755), so a team can share it.
    """
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    remove_stale_temporaries(out)
    name = (
        f".tmp-{os.path.basename(os.path.abspath(out))}-pid{os.getpid()}@{socket.gethostname()}-{secrets.token_hex(4)}"
    )
    tmp = os.path.join(parent, name)
    os.mkdir(tmp, 0o777)
    try:
        yield tmp
        if os.path.exists(out):
            shutil.rmtree(out)
        os.rename(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _write_failed(out, e) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class WriteFailed(ValueError):
    """The disk refused a write (full, over quota, read-only): nothing was replaced."""


def _write_failed(out: str, error: OSError) -> BaseException:
    if error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return error
    kept = "the previous copy is kept" if os.path.exists(out) else "nothing was written"
    return WriteFailed(f"cannot write {out}: {os.strerror(error.errno).lower()} ({kept}); free space and run again")


@contextlib.contextmanager
def atomic_file(out: str) -> Iterator[str]:
    """Yields a temporary path beside ``out``; on success it replaces ``out``, on error it is removed."""
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".tmp-{os.path.basename(out)}-pid{os.getpid()}-{secrets.token_hex(4)}")
    try:
        yield tmp
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
