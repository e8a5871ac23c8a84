"""One job per run directory: an OS lock on ``<run>/.lock``, held by the job's rank 0 until it exits.

``fcntl.flock`` is released by the kernel when the holder dies (kill -9 included), so a crashed
run never leaves a stale lock; the file's text (pid, host, start time) only names the holder in
the refusal. A process may take the same lock again (training evaluates in-process).
Shared storage must support ``flock`` across nodes (NFSv4, Lustre and GPFS do); where it does not
lock, the lock is local to a node.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from typing import Dict, TextIO

from dfgr_torchrec.errors import RunError

LOCK_FILE = ".lock"
_HELD: Dict[str, TextIO] = {}  # run directory (real path) -> its open, locked file


def lock_run(run_dir: str, purpose: str, instead: str = "another name= or output_dir=") -> None:
    """Takes the run directory's lock for this process, or raises naming the process that holds it
    (``instead``: what the refusal tells the user to choose instead)."""
    key = os.path.realpath(run_dir)
    if key in _HELD:
        return
    path = os.path.join(run_dir, LOCK_FILE)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunError(
            f"{run_dir} is in use by {holder}: one job per run directory; wait for it to end "
            f"(or stop it), or choose {instead} for this {purpose}"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{purpose} pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    handle.flush()
    _HELD[key] = handle


def release_run(run_dir: str) -> None:
    """Releases this process's lock of ``run_dir`` (also done by the kernel when the process exits)."""
    handle = _HELD.pop(os.path.realpath(run_dir), None)
    if handle is not None:
        handle.close()
