"""Jagged tensor helpers and the attention interface (one dispatcher, PyTorch and reference backends).

The names below are imported on first use: ``dfgr_torchrec.ops.kinds`` (what a config names)
loads without torch.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "AttentionForm": "dfgr_torchrec.ops.kinds",
    "AttentionKernel": "dfgr_torchrec.ops.kinds",
    "AttentionSpec": "dfgr_torchrec.ops.attention",
    "jagged_attention": "dfgr_torchrec.ops.attention",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dfgr_torchrec.ops' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
