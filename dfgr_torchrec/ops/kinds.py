"""The attention choices a config names, without importing torch (configs load in well under a second)."""

from __future__ import annotations

import enum


class AttentionForm(str, enum.Enum):
    """How attention weights are formed from query-key scores."""

    POINTWISE = "pointwise"  # HSTU: SiLU(q.k / sqrt(d)) / max_seq_len, no softmax, gated by u
    SOFTMAX = "softmax"  # softmax(q.k / sqrt(d)) over the visible keys, gated by u


class AttentionKernel(str, enum.Enum):
    """Implementation behind the jagged attention interface."""

    AUTO = "auto"  # per call: triton on CUDA when it imports, else tiled from TILED_FROM_LEN keys up, else padded
    PADDED = "padded"  # batched matmuls on sequences padded to the batch's longest (plain PyTorch)
    REFERENCE = "reference"  # a per-sequence Python loop; slow, the ground truth in tests
    TILED = "tiled"  # query x key tiles with an online softmax; memory O(B H L tile), skips hidden tiles
    TRITON = "triton"  # fused Triton kernels on the jagged values (CUDA; CPU only under TRITON_INTERPRET=1)

    @classmethod
    def _missing_(cls, value: object) -> "AttentionKernel | None":
        return cls.PADDED if value == "pytorch" else None  # its name until 2026-12: older configs and results say so
