"""Process memory readings: the CUDA allocator on GPU, ``/proc/self/status`` on CPU."""

from __future__ import annotations

import re

import torch


def status_bytes(key: str) -> int:
    """A ``/proc/self/status`` field in bytes, e.g. ``VmRSS`` or ``VmHWM`` (the RSS high-water mark)."""
    with open("/proc/self/status") as f:
        match = re.search(rf"{key}:\s+(\d+) kB", f.read())
    if match is None:
        raise OSError(f"/proc/self/status has no {key}")
    return int(match.group(1)) * 1024


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA ``max_memory_allocated``, or the process's RSS high-water mark."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        return status_bytes("VmHWM") / 2**20
    except OSError:
        return float("nan")
