"""The padded backend: each operand padded to the batch's longest sequence, then :func:`dense_attention`.

It builds a dense ``[B, 1, Lq, Lk]`` visibility mask from the spec's order keys once and caches
it in the spec, so every layer that reuses the spec pays for it once.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from dfgr_torchrec.ops.attention import AttentionForm, AttentionSpec
from dfgr_torchrec.ops.dense import dense_attention
from dfgr_torchrec.ops.jagged import offsets_to_lengths, to_jagged, to_padded

_CACHE_KEY = "pytorch.mask"


class _DenseMask:
    """The spec as a padded bool mask, and that mask as weights per (dtype, scale)."""

    def __init__(self, spec: AttentionSpec) -> None:
        self.max_q, self.max_kv = max(spec.max_q_len, 1), max(spec.max_kv_len, 1)
        qk = to_padded(spec.q_keys.unsqueeze(-1), spec.q_offsets, self.max_q).squeeze(-1)
        kk = to_padded(spec.kv_keys.unsqueeze(-1), spec.kv_offsets, self.max_kv).squeeze(-1)
        visible = kk.unsqueeze(1) < qk.unsqueeze(2) if spec.strict else kk.unsqueeze(1) <= qk.unsqueeze(2)
        kv_valid = torch.arange(self.max_kv, device=kk.device) < offsets_to_lengths(spec.kv_offsets).unsqueeze(1)
        visible &= kv_valid.unsqueeze(1)  # padding keys are never visible; padding query rows are dropped later
        self.visible = visible.unsqueeze(1)  # [B, 1, Lq, Lk]
        self._weights: Dict[Tuple[torch.dtype, float], torch.Tensor] = {}

    def weights(self, dtype: torch.dtype, scale: float) -> torch.Tensor:
        key = (dtype, scale)
        if key not in self._weights:
            self._weights[key] = self.visible.to(dtype) * scale
        return self._weights[key]


def dense_mask(spec: AttentionSpec) -> _DenseMask:
    if _CACHE_KEY not in spec.backend_cache:
        spec.backend_cache[_CACHE_KEY] = _DenseMask(spec)
    return spec.backend_cache[_CACHE_KEY]


def padded_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    form: AttentionForm,
    scale_len: int,
    self_k: Optional[torch.Tensor],
    self_v: Optional[torch.Tensor],
) -> torch.Tensor:
    """:func:`~dfgr_torchrec.ops.attention.jagged_attention` on padded tensors (``q`` already scaled)."""
    mask = dense_mask(spec)
    if spec.num_users == 1 and spec.q_total > 0 and spec.kv_total > 0:  # one user (serving): padding is a view
        pad_q = pad_kv = lambda t: t.unsqueeze(0).transpose(1, 2)  # noqa: E731
    else:
        pad_q = lambda t: to_padded(t, spec.q_offsets, mask.max_q).transpose(1, 2)  # noqa: E731  [B, H, Lq, d]
        pad_kv = lambda t: to_padded(t, spec.kv_offsets, mask.max_kv).transpose(1, 2)  # noqa: E731  [B, H, Lk, d]
    has_self = self_k is not None
    weights = mask.weights(q.dtype, 1.0 / scale_len) if form == AttentionForm.POINTWISE else None
    out = dense_attention(
        pad_q(q),
        pad_kv(k),
        pad_kv(v),
        mask.visible,
        form,
        scale_len,
        pad_q(self_k) if has_self else None,
        pad_q(self_v) if has_self else None,
        weights,
    )
    if spec.num_users == 1 and spec.q_total > 0 and spec.kv_total > 0:
        return out[0].transpose(0, 1)
    return to_jagged(out.transpose(1, 2), spec.q_offsets, spec.q_total)
