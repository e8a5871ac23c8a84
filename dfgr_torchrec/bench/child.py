"""One command run as a child process, timed, with its own peak memory (``wait4``'s rusage)."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Dict, List, Optional, Tuple


def run_child(cmd: List[str], env: Optional[Dict[str, str]] = None, capture: bool = False) -> Tuple[float, float, str]:
    """Runs ``cmd``: ``(wall seconds, its peak RSS in MiB, its stdout when captured, else "")``.
    Raises :class:`subprocess.CalledProcessError` when it fails."""
    start = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE if capture else None, text=True)
    out = child.stdout.read() if capture else ""  # type: ignore[union-attr]
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise subprocess.CalledProcessError(code, cmd)
    return seconds, usage.ru_maxrss / 1024, out  # ru_maxrss is in KiB on Linux
