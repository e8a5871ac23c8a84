"""Jagged tensor helpers and the attention kernel interface."""

from dfgr_torchrec.ops.attention import AttentionMask, build_attention_mask, jagged_attention

__all__ = ["AttentionMask", "build_attention_mask", "jagged_attention"]
