"""Masked attention on dense ``[B, H, L, d]`` tensors: the core of the padded backend, and the
single-user graph that serving exports (no jagged op, so ``torch.export`` traces it as is)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from dfgr_torchrec.ops.kinds import AttentionForm


def dense_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    visible: torch.Tensor,
    form: AttentionForm,
    scale_len: int,
    self_k: Optional[torch.Tensor] = None,
    self_v: Optional[torch.Tensor] = None,
    visible_weights: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Attention of ``q`` over the visible ``k``/``v``, plus each query's own key/value.

    Args:
        q: ``[B, H, Lq, d]``, already scaled by ``d ** -0.5``; ``k``: ``[B, H, Lk, d]``; ``v``: ``[B, H, Lk, dv]``.
        visible: ``[B, 1, Lq, Lk]`` bool (broadcast over heads).
        form, scale_len: as :func:`~dfgr_torchrec.ops.attention.jagged_attention`.
        self_k, self_v: ``[B, H, Lq, d]`` / ``[B, H, Lq, dv]``: the always-visible own key/value.
        visible_weights: ``visible`` as floats times ``1 / scale_len`` (pointwise), when the
            caller has it cached.

    Returns:
        ``[B, H, Lq, dv]``; a query that sees nothing outputs 0 (softmax without a self term).
    """
    scores = torch.matmul(q, k.transpose(-1, -2))  # [B, H, Lq, Lk]
    self_scores = (q * self_k).sum(-1, keepdim=True) if self_k is not None else None  # [B, H, Lq, 1]
    if form == AttentionForm.POINTWISE:
        if visible_weights is None:
            visible_weights = visible.to(scores.dtype) * (1.0 / scale_len)
        if scores.requires_grad:
            weights = F.silu(scores) * visible_weights
        else:  # inference: no graph to keep, reuse the scores buffer
            weights = F.silu(scores, inplace=True).mul_(visible_weights)
        out = torch.matmul(weights, v)
        if self_scores is not None:
            out = out + F.silu(self_scores) * (1.0 / scale_len) * self_v
        return out
    scores = scores.masked_fill(~visible, torch.finfo(scores.dtype).min)
    if self_scores is None:
        return torch.matmul(torch.softmax(scores, dim=-1), v) * visible.any(-1, keepdim=True)
    probs = torch.softmax(torch.cat([scores, self_scores], dim=-1), dim=-1)
    return torch.matmul(probs[..., :-1], v) + probs[..., -1:] * self_v
