"""Peak memory of a piece of work: CUDA allocator stats on GPU, the process's RSS high-water mark on CPU."""

from __future__ import annotations

import ctypes
from typing import Callable, Optional, Tuple, TypeVar

import torch

from dfgr_torchrec.training.memory import status_bytes

T = TypeVar("T")
_M_MMAP_THRESHOLD = -3
_libc: Optional[ctypes.CDLL] = None


def _glibc() -> Optional[ctypes.CDLL]:
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL("libc.so.6")
            # A fixed mmap threshold makes glibc hand large buffers back to the OS on free,
            # so the RSS high-water mark of one measurement is not hidden by an earlier one.
            _libc.mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
        except OSError:
            return None
    return _libc


def measure_peak(fn: Callable[[], T], device: torch.device) -> Tuple[T, Optional[int]]:
    """Runs ``fn`` and returns ``(result, peak bytes above the starting point)``.

    On CUDA this is ``max_memory_allocated`` above the memory allocated before; on CPU (Linux)
    the rise of the RSS high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``)
    above the RSS before. None when neither is available.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize(device)
        return result, torch.cuda.max_memory_allocated(device) - before
    libc = _glibc()
    try:
        if libc is not None:
            libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        before = status_bytes("VmRSS")
    except OSError:
        return fn(), None
    result = fn()
    return result, max(status_bytes("VmHWM") - before, 0)
