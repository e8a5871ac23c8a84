"""The Triton backend of the jagged attention (``kernel: triton``): fused, jagged, dual-flow aware.

:func:`triton_attention` is the backend function; :func:`available` says whether it can run here
(Triton imports, and a CUDA device or the interpreter is present). Kernels live in
:mod:`.kernels`, block tables in :mod:`.blocks`, the autograd function in :mod:`.function`.
"""

from __future__ import annotations

import importlib.util
import os

import torch


def available(device: torch.device) -> bool:
    """Whether ``kernel: triton`` can run on ``device`` (checked without importing Triton)."""
    if importlib.util.find_spec("triton") is None:
        return False
    if device.type == "cuda":
        return True
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_attention(*args, **kwargs):
    """:func:`dfgr_torchrec.ops.triton.function.triton_attention` (imported on first use)."""
    from dfgr_torchrec.ops.triton.function import triton_attention as run

    return run(*args, **kwargs)
