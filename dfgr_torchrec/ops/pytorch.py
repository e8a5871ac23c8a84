"""The padded backend: each operand padded to the batch's longest sequence, batched matmuls.

It builds a dense ``[B, 1, Lq, Lk]`` visibility mask from the spec's order keys once and caches
it in the spec, so every layer that reuses the spec pays for it once.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from dfgr_torchrec.ops.attention import AttentionForm, AttentionSpec
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
    qp = to_padded(q, spec.q_offsets, mask.max_q).transpose(1, 2)  # [B, H, Lq, d]
    kp = to_padded(k, spec.kv_offsets, mask.max_kv).transpose(1, 2)  # [B, H, Lk, d]
    vp = to_padded(v, spec.kv_offsets, mask.max_kv).transpose(1, 2)
    scores = torch.matmul(qp, kp.transpose(-1, -2))  # [B, H, Lq, Lk]
    self_scores = (q * self_k).sum(-1) if self_k is not None else None  # [total_q, H]

    if form == AttentionForm.POINTWISE:
        if scores.requires_grad:
            weights = F.silu(scores) * mask.weights(scores.dtype, 1.0 / scale_len)
        else:  # inference: no graph to keep, reuse the scores buffer
            weights = F.silu(scores, inplace=True).mul_(mask.weights(scores.dtype, 1.0 / scale_len))
        out = to_jagged(torch.matmul(weights, vp).transpose(1, 2), spec.q_offsets, spec.q_total)
        if self_scores is not None:
            out = out + (F.silu(self_scores) / scale_len).unsqueeze(-1) * self_v
        return out

    scores = scores.masked_fill(~mask.visible, torch.finfo(scores.dtype).min)
    if self_scores is None:
        probs = torch.softmax(scores, dim=-1)
        out_padded = torch.matmul(probs, vp) * mask.visible.any(-1, keepdim=True)  # a query that sees nothing outputs 0
        return to_jagged(out_padded.transpose(1, 2), spec.q_offsets, spec.q_total)
    self_padded = to_padded(self_scores, spec.q_offsets, mask.max_q).transpose(1, 2).unsqueeze(-1)
    probs = torch.softmax(torch.cat([scores, self_padded], dim=-1), dim=-1)
    out_padded = torch.matmul(probs[..., :-1], vp)
    out = to_jagged(out_padded.transpose(1, 2), spec.q_offsets, spec.q_total)
    self_prob = to_jagged(probs[..., -1].transpose(1, 2), spec.q_offsets, spec.q_total)  # [total_q, H]
    return out + self_prob.unsqueeze(-1) * self_v
