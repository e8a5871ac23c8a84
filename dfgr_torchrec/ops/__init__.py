"""Jagged tensor helpers and the attention interface (one dispatcher, PyTorch and reference backends)."""

from dfgr_torchrec.ops.attention import AttentionForm, AttentionKernel, AttentionSpec, jagged_attention

__all__ = ["AttentionForm", "AttentionKernel", "AttentionSpec", "jagged_attention"]
