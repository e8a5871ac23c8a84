"""The jagged attention interface: one call, several implementations.

Every attention in DFGR and MetaGR is the same operation: queries of one jagged set attend
to keys/values of another jagged set of the same users, where query ``i`` may see key ``j``
iff ``kv_key[j] < q_key[i]`` (``strict``) or ``kv_key[j] <= q_key[i]``, plus, optionally, one
extra key/value of its own (the fake token's or candidate's ``self`` term). Keys are
positions or timestamps, so one op serves causal self-attention, the fake->real flow,
session masks and candidate scoring.

Implementations (``AttentionKernel``):
- ``pytorch``: pads each operand to the batch's longest sequence with fbgemm's jagged ops and
  runs batched matmuls; the production path on CPU and GPU.
- ``reference``: a per-sequence loop with no padding; slow and obviously correct, the
  ground truth the tests compare every other implementation against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from dfgr_torchrec.config import AttentionForm, AttentionKernel
from dfgr_torchrec.ops.jagged import max_length, offsets_to_lengths, to_jagged, to_padded


@dataclass
class AttentionMask:
    """Which keys each query sees, for one (query set, key set) pair; reusable across layers.

    Build it with :func:`build_attention_mask`.
    """

    q_offsets: torch.Tensor
    kv_offsets: torch.Tensor
    q_keys: torch.Tensor
    kv_keys: torch.Tensor
    strict: bool
    max_q_len: int
    max_kv_len: int
    padded: torch.Tensor  # [B, 1, max_q_len, max_kv_len] bool: key visible and not padding
    _weights: Dict[Tuple[torch.dtype, float], torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def q_total(self) -> int:
        return self.q_keys.shape[0]

    @property
    def kv_total(self) -> int:
        return self.kv_keys.shape[0]

    def weights(self, dtype: torch.dtype, scale: float) -> torch.Tensor:
        """The mask as ``scale`` where visible and 0 elsewhere (cached per dtype and scale)."""
        key = (dtype, scale)
        if key not in self._weights:
            self._weights[key] = self.padded.to(dtype) * scale
        return self._weights[key]


def build_attention_mask(
    q_offsets: torch.Tensor,
    kv_offsets: torch.Tensor,
    q_keys: torch.Tensor,
    kv_keys: torch.Tensor,
    strict: bool,
) -> AttentionMask:
    """Builds the visibility mask: query ``i`` sees key ``j`` iff ``kv_keys[j] (<|<=) q_keys[i]``.

    Args:
        q_offsets: ``[B + 1]`` offsets of the queries.
        kv_offsets: ``[B + 1]`` offsets of the keys/values (same users, same order).
        q_keys: ``[total_q]`` int64 order keys of the queries (positions or timestamps).
        kv_keys: ``[total_kv]`` int64 order keys of the keys.
        strict: ``<`` when True, ``<=`` when False.
    """
    if q_offsets.shape != kv_offsets.shape:
        raise ValueError(f"q_offsets and kv_offsets must describe the same users, got {q_offsets.shape} vs {kv_offsets.shape}")
    max_q = max(max_length(offsets_to_lengths(q_offsets)), 1)
    max_kv = max(max_length(offsets_to_lengths(kv_offsets)), 1)
    qk = to_padded(q_keys.unsqueeze(-1), q_offsets, max_q).squeeze(-1)
    kk = to_padded(kv_keys.unsqueeze(-1), kv_offsets, max_kv).squeeze(-1)
    visible = kk.unsqueeze(1) < qk.unsqueeze(2) if strict else kk.unsqueeze(1) <= qk.unsqueeze(2)
    kv_valid = torch.arange(max_kv, device=kv_keys.device) < offsets_to_lengths(kv_offsets).unsqueeze(1)
    visible &= kv_valid.unsqueeze(1)  # padding keys are never visible; padding query rows are dropped later
    return AttentionMask(
        q_offsets=q_offsets,
        kv_offsets=kv_offsets,
        q_keys=q_keys,
        kv_keys=kv_keys,
        strict=strict,
        max_q_len=max_q,
        max_kv_len=max_kv,
        padded=visible.unsqueeze(1),
    )


def jagged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: AttentionMask,
    *,
    form: AttentionForm,
    scale_len: int,
    self_k: Optional[torch.Tensor] = None,
    self_v: Optional[torch.Tensor] = None,
    kernel: AttentionKernel = AttentionKernel.PYTORCH,
) -> torch.Tensor:
    """Masked multi-head attention over jagged sequences.

    Args:
        q: ``[total_q, H, d_qk]`` queries.
        k: ``[total_kv, H, d_qk]`` keys; ``v``: ``[total_kv, H, d_v]`` values.
        mask: visibility from :func:`build_attention_mask`.
        form: ``POINTWISE`` computes ``sum_j SiLU(q.k_j / sqrt(d)) v_j / scale_len``;
            ``SOFTMAX`` computes ``softmax_j(q.k_j / sqrt(d)) v_j``.
        scale_len: the pointwise normaliser (a constant, so results do not depend on padding).
        self_k, self_v: ``[total_q, H, d]``: each query's own extra key/value, always visible.
        kernel: which implementation runs.

    Returns:
        ``[total_q, H, d_v]``.

    Example::

        mask = build_attention_mask(offsets, offsets, positions, positions, strict=False)
        out = jagged_attention(q, k, v, mask, form=AttentionForm.POINTWISE, scale_len=1024)
    """
    if (self_k is None) != (self_v is None):
        raise ValueError("self_k and self_v must be given together")
    q = q * (q.shape[-1] ** -0.5)
    if kernel == AttentionKernel.PYTORCH:
        return _padded_attention(q, k, v, mask, form, scale_len, self_k, self_v)
    if kernel == AttentionKernel.REFERENCE:
        return _reference_attention(q, k, v, mask, form, scale_len, self_k, self_v)
    raise ValueError(f"kernel: expected one of {[k.value for k in AttentionKernel]}, got {kernel!r}")


def _padded_attention(q, k, v, mask, form, scale_len, self_k, self_v):
    qp = to_padded(q, mask.q_offsets, mask.max_q_len).transpose(1, 2)  # [B, H, Lq, d]
    kp = to_padded(k, mask.kv_offsets, mask.max_kv_len).transpose(1, 2)  # [B, H, Lk, d]
    vp = to_padded(v, mask.kv_offsets, mask.max_kv_len).transpose(1, 2)
    scores = torch.matmul(qp, kp.transpose(-1, -2))  # [B, H, Lq, Lk]
    self_scores = (q * self_k).sum(-1) if self_k is not None else None  # [total_q, H]

    if form == AttentionForm.POINTWISE:
        if scores.requires_grad:
            weights = F.silu(scores) * mask.weights(scores.dtype, 1.0 / scale_len)
        else:  # inference: no graph to keep, reuse the scores buffer
            weights = F.silu(scores, inplace=True).mul_(mask.weights(scores.dtype, 1.0 / scale_len))
        out = to_jagged(torch.matmul(weights, vp).transpose(1, 2), mask.q_offsets, mask.q_total)
        if self_scores is not None:
            out = out + (F.silu(self_scores) / scale_len).unsqueeze(-1) * self_v
        return out

    scores = scores.masked_fill(~mask.padded, torch.finfo(scores.dtype).min)
    if self_scores is None:
        probs = torch.softmax(scores, dim=-1)
        out_padded = torch.matmul(probs, vp) * mask.padded.any(-1, keepdim=True)  # a query that sees nothing outputs 0
        return to_jagged(out_padded.transpose(1, 2), mask.q_offsets, mask.q_total)
    self_padded = to_padded(self_scores, mask.q_offsets, mask.max_q_len).transpose(1, 2).unsqueeze(-1)
    probs = torch.softmax(torch.cat([scores, self_padded], dim=-1), dim=-1)
    out_padded = torch.matmul(probs[..., :-1], vp)
    out = to_jagged(out_padded.transpose(1, 2), mask.q_offsets, mask.q_total)
    self_prob = to_jagged(probs[..., -1].transpose(1, 2), mask.q_offsets, mask.q_total)  # [total_q, H]
    return out + self_prob.unsqueeze(-1) * self_v


def _reference_attention(q, k, v, mask, form, scale_len, self_k, self_v):
    outputs = []
    q_off, kv_off = mask.q_offsets.tolist(), mask.kv_offsets.tolist()
    for b in range(len(q_off) - 1):
        qs, qe, ks, ke = q_off[b], q_off[b + 1], kv_off[b], kv_off[b + 1]
        qb, kb, vb = q[qs:qe], k[ks:ke], v[ks:ke]
        q_keys, kv_keys = mask.q_keys[qs:qe], mask.kv_keys[ks:ke]
        if mask.strict:
            visible = kv_keys.unsqueeze(0) < q_keys.unsqueeze(1)
        else:
            visible = kv_keys.unsqueeze(0) <= q_keys.unsqueeze(1)
        scores = torch.einsum("ihd,jhd->hij", qb, kb)  # [H, nq, nk]
        if self_k is not None:
            scores = torch.cat([scores, torch.einsum("ihd,ihd->hi", qb, self_k[qs:qe]).unsqueeze(-1)], dim=-1)
            values = torch.cat([vb.unsqueeze(0).expand(qe - qs, -1, -1, -1), self_v[qs:qe].unsqueeze(1)], dim=1)
            visible = torch.cat([visible, torch.ones(qe - qs, 1, dtype=torch.bool)], dim=1)
        else:
            values = vb.unsqueeze(0).expand(qe - qs, -1, -1, -1)  # [nq, nk, H, d]
        if form == AttentionForm.POINTWISE:
            weights = F.silu(scores) * visible / scale_len
        else:
            weights = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
            weights = torch.nan_to_num(weights) * visible  # a query that sees nothing outputs 0
        outputs.append(torch.einsum("hij,ijhd->ihd", weights, values))
    if not outputs:
        return v.new_zeros(0, v.shape[1], v.shape[2])
    return torch.cat(outputs, dim=0)
