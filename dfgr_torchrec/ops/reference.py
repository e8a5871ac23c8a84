"""The reference backend: one sequence at a time, no padding. Slow; the oracle of the tests."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from dfgr_torchrec.ops.attention import AttentionForm, AttentionSpec


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    form: AttentionForm,
    scale_len: int,
    self_k: Optional[torch.Tensor],
    self_v: Optional[torch.Tensor],
) -> torch.Tensor:
    """:func:`~dfgr_torchrec.ops.attention.jagged_attention`, written plainly (``q`` already scaled)."""
    outputs = []
    q_off, kv_off = spec.q_offsets.tolist(), spec.kv_offsets.tolist()
    for b in range(len(q_off) - 1):
        qs, qe, ks, ke = q_off[b], q_off[b + 1], kv_off[b], kv_off[b + 1]
        qb, kb, vb = q[qs:qe], k[ks:ke], v[ks:ke]
        q_keys, kv_keys = spec.q_keys[qs:qe], spec.kv_keys[ks:ke]
        if spec.strict:
            visible = kv_keys.unsqueeze(0) < q_keys.unsqueeze(1)
        else:
            visible = kv_keys.unsqueeze(0) <= q_keys.unsqueeze(1)
        scores = torch.einsum("ihd,jhd->hij", qb, kb)  # [H, nq, nk]
        if self_k is not None:
            scores = torch.cat([scores, torch.einsum("ihd,ihd->hi", qb, self_k[qs:qe]).unsqueeze(-1)], dim=-1)
            values = torch.cat([vb.unsqueeze(0).expand(qe - qs, -1, -1, -1), self_v[qs:qe].unsqueeze(1)], dim=1)
            visible = torch.cat([visible, torch.ones(qe - qs, 1, dtype=torch.bool, device=visible.device)], dim=1)
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
