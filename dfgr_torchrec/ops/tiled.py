"""The tiled backend: attention in query x key tiles, never the whole ``[B, H, Lq, Lk]`` score square.

Operands are padded to the batch's longest sequence (``O(B H L d)``), then each query tile meets
each key tile, batched over users and heads, so the largest intermediate is ``[B, H, tile, tile]``.
A tile pair that no user can see (from the order keys' min/max per tile) is skipped; one that
every user sees whole needs no mask. Users are ordered longest first, so the users that see any
of a tile pair are a prefix of the batch: each pair's products run on that prefix only (a view),
and a ragged batch does not pay for its padding. Order keys need not be sorted for correctness: sorted keys
(positions, timestamps) only make more tiles skippable, about half of a causal square.

``POINTWISE`` sums ``SiLU(S) @ V`` over the tiles; ``SOFTMAX`` is an online softmax (running max
and denominator, as in flash attention) that also returns each row's log-sum-exp, so the
always-visible self key joins as one more logit afterwards, by plain autograd ops. The
:class:`torch.autograd.Function` s save only ``q, k, v`` (and, for softmax, the output and the
row log-sum-exp) and recompute each tile's scores in backward, so training memory stays
``O(B H L tile)`` too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from dfgr_torchrec.ops.attention import AttentionForm, AttentionSpec
from dfgr_torchrec.ops.jagged import offsets_to_lengths, to_jagged, to_padded

# The tile size when the caller gives none (tests pin smaller ones). A ``[B*H, 256, 256]`` fp32 score
# tile stays in a core's L2 cache, and with each pair run on only the users that see it, small tiles
# also skip the most padding. Measured (DFGR training step, N = 4096, 4 users ragged in [N/2, N],
# 2 cores): 256-tiles 0.67 s, 512-tiles 0.87 s, 1024-tiles 1.79 s; with a 2-thread matmul loop
# beside it, 256-tiles 3.5 s and 1024-tiles 5.6 s. Longer sequences only add tile pairs.
DEFAULT_TILE = 256
# Debug hook: when not None, the largest score tile (elements) any tiled call built is kept here.
DEBUG_STATS: Optional[Dict[str, int]] = None


def _note_tile(numel: int) -> None:
    if DEBUG_STATS is not None:
        DEBUG_STATS["largest_tile"] = max(DEBUG_STATS.get("largest_tile", 0), numel)


def _bounds(length: int, tile: int) -> List[Tuple[int, int]]:
    return [(s, min(s + tile, length)) for s in range(0, length, tile)]


def _tile_ranges(keys: torch.Tensor, valid: torch.Tensor, tile: int):
    """Per user and tile: min and max of the valid keys, any valid, all valid (each ``[B, n]``)."""
    b, length = keys.shape
    n = -(-length // tile)
    big = torch.iinfo(torch.int64).max
    lo = keys.new_full((b, n * tile), big)
    hi = keys.new_full((b, n * tile), -big)
    ok = valid.new_zeros((b, n * tile))
    lo[:, :length] = torch.where(valid, keys, big)
    hi[:, :length] = torch.where(valid, keys, -big)
    ok[:, :length] = valid
    ok = ok.view(b, n, tile)
    return lo.view(b, n, tile).amin(-1), hi.view(b, n, tile).amax(-1), ok.any(-1), ok.all(-1)


@dataclass(eq=False)
class _Plan:
    """The spec on the padded tile grid: padded keys, and per query tile the key tiles to visit."""

    q_keys: torch.Tensor  # [B, Lq]
    kv_keys: torch.Tensor  # [B, Lk]
    kv_valid: torch.Tensor  # [B, Lk]
    strict: bool
    q_tiles: List[Tuple[int, int]]
    kv_tiles: List[Tuple[int, int]]
    work: List[List[Tuple[int, bool, int]]]  # per query tile: (key tile, needs a mask, users that see it)
    order: Optional[torch.Tensor]  # [B] the users longest first (None: already so)
    restore: Optional[torch.Tensor] = None  # [B] its inverse permutation
    # masks of the tile pairs that need one, built once for every layer, flow and backward pass
    masks: Dict[Tuple[int, int, torch.dtype], torch.Tensor] = field(default_factory=dict)

    def visible(self, i: int, j: int, dtype: torch.dtype = torch.bool) -> torch.Tensor:
        """``[B, 1, Tq, Tk]`` mask of tile pair ``(i, j)`` (bool, or 1./0. in ``dtype``)."""
        key = (i, j, dtype)
        if key not in self.masks:
            (qs, qe), (ks, ke) = self.q_tiles[i], self.kv_tiles[j]
            qk, kk = self.q_keys[:, qs:qe, None], self.kv_keys[:, None, ks:ke]
            seen = kk < qk if self.strict else kk <= qk
            self.masks[key] = (seen & self.kv_valid[:, None, ks:ke]).unsqueeze(1).to(dtype)
        return self.masks[key]

    def mask_(self, scores: torch.Tensor, i: int, j: int, users: int, fill: Optional[float] = None) -> None:
        """Masks a ``[users*H, Tq, Tk]`` tile (the first ``users`` users) in place: multiplies by the
        mask, or fills hidden pairs with ``fill``."""
        tiles = scores.view(users, -1, *scores.shape[1:])
        if fill is None:
            tiles.mul_(self.visible(i, j, scores.dtype)[:users])
        else:
            tiles.masked_fill_(~self.visible(i, j)[:users], fill)

    def sorted(self, t: torch.Tensor) -> torch.Tensor:
        """A padded ``[B, ...]`` operand in the plan's user order."""
        return t if self.order is None else t.index_select(0, self.order)

    def unsorted(self, t: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`sorted`."""
        return t if self.restore is None else t.index_select(0, self.restore)


def _build_plan(spec: AttentionSpec, max_q: int, max_kv: int, tile_q: int, tile_k: int) -> _Plan:
    q_len, kv_len = offsets_to_lengths(spec.q_offsets), offsets_to_lengths(spec.kv_offsets)
    qk = to_padded(spec.q_keys.unsqueeze(-1), spec.q_offsets, max_q).squeeze(-1)
    kk = to_padded(spec.kv_keys.unsqueeze(-1), spec.kv_offsets, max_kv).squeeze(-1)
    order = torch.argsort(kv_len * (max_q + 1) + q_len, descending=True, stable=True)
    if bool((order == torch.arange(len(order), device=order.device)).all()):
        order = None
    else:
        qk, kk, q_len, kv_len = qk[order], kk[order], q_len[order], kv_len[order]
    q_valid = torch.arange(max_q, device=qk.device) < q_len.unsqueeze(1)
    kv_valid = torch.arange(max_kv, device=kk.device) < kv_len.unsqueeze(1)
    q_lo, q_hi, q_any, _ = _tile_ranges(qk, q_valid, tile_q)
    k_lo, k_hi, k_any, k_all = _tile_ranges(kk, kv_valid, tile_k)
    q_lo, q_hi, q_any = q_lo[:, :, None], q_hi[:, :, None], q_any[:, :, None]  # [B, nq, 1] vs [B, 1, nk]
    k_lo, k_hi, k_any, k_all = k_lo[:, None], k_hi[:, None], k_any[:, None], k_all[:, None]
    if spec.strict:
        some, whole = k_lo < q_hi, k_hi < q_lo
    else:
        some, whole = k_lo <= q_hi, k_hi <= q_lo
    some = some & q_any & k_any  # [B, nq, nk]: this user may see some pair
    whole = (k_all & (whole | ~q_any)).int().cumprod(0)  # users 0..b all see every pair (or have no query)
    index = torch.arange(1, some.shape[0] + 1, device=some.device)[:, None, None]
    users = torch.where(some, index, 0).amax(0)  # [nq, nk]: the prefix of users that see some pair
    whole = whole.gather(0, (users - 1).clamp(min=0).unsqueeze(0)).squeeze(0)
    users_l, whole_l = users.tolist(), whole.tolist()
    work = [[(j, not whole_l[i][j], n) for j, n in enumerate(row) if n] for i, row in enumerate(users_l)]
    restore = None if order is None else torch.argsort(order)
    return _Plan(qk, kk, kv_valid, spec.strict, _bounds(max_q, tile_q), _bounds(max_kv, tile_k), work, order, restore)


def tile_plan(spec: AttentionSpec, tile_q: int, tile_k: int) -> _Plan:
    """The spec's tile plan, built once and cached in the spec for every layer that reuses it."""
    key = f"tiled.plan.{tile_q}.{tile_k}"
    if key not in spec.backend_cache:
        max_q, max_kv = max(spec.max_q_len, 1), max(spec.max_kv_len, 1)
        spec.backend_cache[key] = _build_plan(spec, max_q, max_kv, tile_q, tile_k)
    return spec.backend_cache[key]


def _scores(qi: torch.Tensor, kj: torch.Tensor) -> torch.Tensor:
    """``qi @ kj^T`` on ``[B*H, T, d]`` tiles (a transposed view: no copy)."""
    s = torch.bmm(qi, kj.transpose(1, 2))
    _note_tile(s.numel())
    return s


def _flat(t: torch.Tensor) -> torch.Tensor:
    """``[B, H, L, d]`` -> ``[B*H, L, d]`` (contiguous, so a view)."""
    return t.contiguous().view(-1, t.shape[-2], t.shape[-1])


class _PointwiseTiles(torch.autograd.Function):
    """``sum_j SiLU(q.k_j) v_j / scale`` over the visible ``j``, on padded ``[B, H, L, d]`` operands."""

    @staticmethod
    def forward(ctx, q, k, v, plan: _Plan, scale: float):  # type: ignore[override]
        q3, k3, v3, h = _flat(q), _flat(k), _flat(v), q.shape[1]
        out = q3.new_zeros(*q3.shape[:-1], v3.shape[-1])
        for i, (qs, qe) in enumerate(plan.q_tiles):
            for j, masked, n in plan.work[i]:
                (ks, ke), r = plan.kv_tiles[j], n * h  # the first n users' rows
                a = F.silu(_scores(q3[:r, qs:qe], k3[:r, ks:ke]), inplace=True)
                if masked:
                    plan.mask_(a, i, j, n)
                out[:r, qs:qe].add_(torch.bmm(a, v3[:r, ks:ke]))
        ctx.save_for_backward(q, k, v)
        ctx.plan, ctx.scale = plan, scale
        return out.mul_(scale).view(*q.shape[:-1], v.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        q, k, v = ctx.saved_tensors
        plan, scale = ctx.plan, ctx.scale
        q3, k3, v3, g3, h = _flat(q), _flat(k), _flat(v), _flat(grad_out), q.shape[1]
        dq, dk, dv = torch.zeros_like(q3), torch.zeros_like(k3), torch.zeros_like(v3)
        for i, (qs, qe) in enumerate(plan.q_tiles):
            do = g3[:, qs:qe] * scale
            for j, masked, n in plan.work[i]:
                (ks, ke), r = plan.kv_tiles[j], n * h
                qi, doi, kj, vj = q3[:r, qs:qe], do[:r], k3[:r, ks:ke], v3[:r, ks:ke]
                s = _scores(qi, kj)
                ds = torch.ops.aten.silu_backward(torch.bmm(doi, vj.transpose(1, 2)), s)  # dL/da * SiLU'(s)
                a = F.silu(s, inplace=True)
                if masked:
                    plan.mask_(a, i, j, n)
                    plan.mask_(ds, i, j, n)
                dv[:r, ks:ke].add_(torch.bmm(a.transpose(1, 2), doi))
                dq[:r, qs:qe].add_(torch.bmm(ds, kj))
                dk[:r, ks:ke].add_(torch.bmm(ds.transpose(1, 2), qi))
        return dq.view_as(q), dk.view_as(k), dv.view_as(v), None, None


def _online_softmax_tile(qi, k3, v3, plan: _Plan, i: int, h: int):
    """One query tile's softmax over its visible keys, for the users that see any of them:
    ``(out [rows, Tq, dv], lse [rows, Tq, 1], rows)`` (``rows = 0``: nobody sees anything)."""
    rows = max((n for _, _, n in plan.work[i]), default=0) * h
    if rows == 0:
        return None, None, 0
    m = qi.new_full((rows, qi.shape[1], 1), float("-inf"))
    l, acc = qi.new_zeros((rows, qi.shape[1], 1)), qi.new_zeros((rows, qi.shape[1], v3.shape[-1]))
    for j, masked, n in plan.work[i]:
        (ks, ke), r = plan.kv_tiles[j], n * h
        s = _scores(qi[:r], k3[:r, ks:ke])
        if masked:
            plan.mask_(s, i, j, n, float("-inf"))
        m_new = torch.maximum(m[:r], s.amax(-1, keepdim=True))
        m_safe = torch.where(torch.isinf(m_new), 0.0, m_new)  # a row that has seen nothing yet
        p = s.sub_(m_safe).exp_()
        alpha = torch.exp(m[:r] - m_safe)  # 0 before the first key a row sees
        l[:r].mul_(alpha).add_(p.sum(-1, keepdim=True))
        acc[:r].mul_(alpha).baddbmm_(p, v3[:r, ks:ke])
        m[:r] = m_new
    out = acc.div_(torch.where(l > 0, l, 1.0))  # a row that sees nothing: acc = 0, so 0
    return out, m + torch.log(l), rows  # -inf where nothing is seen


class _SoftmaxTiles(torch.autograd.Function):
    """Softmax attention over the visible keys, and each row's log-sum-exp (``-inf``: sees nothing)."""

    @staticmethod
    def forward(ctx, q, k, v, plan: _Plan):  # type: ignore[override]
        q3, k3, v3 = _flat(q), _flat(k), _flat(v)
        out = q3.new_zeros(*q3.shape[:-1], v3.shape[-1])
        lse = q3.new_full((*q3.shape[:-1], 1), float("-inf"))
        for i, (qs, qe) in enumerate(plan.q_tiles):
            out_i, lse_i, r = _online_softmax_tile(q3[:, qs:qe], k3, v3, plan, i, q.shape[1])
            if r:
                out[:r, qs:qe], lse[:r, qs:qe] = out_i, lse_i
        out, lse = out.view(*q.shape[:-1], v.shape[-1]), lse.view(*q.shape[:-1], 1)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.plan = plan
        return out, lse

    @staticmethod
    def backward(ctx, grad_out, grad_lse):  # type: ignore[override]
        q, k, v, out, lse = ctx.saved_tensors
        plan = ctx.plan
        if grad_out is None:
            grad_out = torch.zeros_like(out)
        # dS = P (dP - D) + P g_lse, with D the row sum of dO * O.
        delta = (grad_out * out).sum(-1, keepdim=True)
        if grad_lse is not None:
            delta = delta - grad_lse
        lse_safe = torch.where(torch.isinf(lse), 0.0, lse)
        q3, k3, v3, g3, h = _flat(q), _flat(k), _flat(v), _flat(grad_out), q.shape[1]
        delta3, lse3 = _flat(delta), _flat(lse_safe)
        dq, dk, dv = torch.zeros_like(q3), torch.zeros_like(k3), torch.zeros_like(v3)
        for i, (qs, qe) in enumerate(plan.q_tiles):
            for j, masked, n in plan.work[i]:
                (ks, ke), r = plan.kv_tiles[j], n * h
                qi, doi, di, lse_i = q3[:r, qs:qe], g3[:r, qs:qe], delta3[:r, qs:qe], lse3[:r, qs:qe]
                kj, vj = k3[:r, ks:ke], v3[:r, ks:ke]
                s = _scores(qi, kj)
                if masked:
                    plan.mask_(s, i, j, n, float("-inf"))
                p = s.sub_(lse_i).exp_()
                dv[:r, ks:ke].add_(torch.bmm(p.transpose(1, 2), doi))
                ds = torch.bmm(doi, vj.transpose(1, 2)).sub_(di).mul_(p)
                dq[:r, qs:qe].add_(torch.bmm(ds, kj))
                dk[:r, ks:ke].add_(torch.bmm(ds.transpose(1, 2), qi))
        return dq.view_as(q), dk.view_as(k), dv.view_as(v), None


def tiled_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    form: AttentionForm,
    scale_len: int,
    self_k: Optional[torch.Tensor],
    self_v: Optional[torch.Tensor],
    tile_q: Optional[int] = None,
    tile_k: Optional[int] = None,
) -> torch.Tensor:
    """:func:`~dfgr_torchrec.ops.attention.jagged_attention` in tiles (``q`` already scaled).

    ``tile_q``/``tile_k``: query and key tile sizes (default :data:`DEFAULT_TILE`).
    """
    h, dv = v.shape[1], v.shape[2]
    if spec.q_total == 0:
        return v.new_zeros(0, h, dv)
    tile_q, tile_k = tile_q or DEFAULT_TILE, tile_k or DEFAULT_TILE
    plan = tile_plan(spec, tile_q, tile_k)
    max_q, max_kv = plan.q_keys.shape[1], plan.kv_keys.shape[1]
    # padded [B, H, L, d] in the plan's user order, and back to jagged [total, H, d]
    pad_q = lambda t: plan.sorted(to_padded(t, spec.q_offsets, max_q).transpose(1, 2)).contiguous()  # noqa: E731
    pad_kv = lambda t: plan.sorted(to_padded(t, spec.kv_offsets, max_kv).transpose(1, 2)).contiguous()  # noqa: E731
    unpad = lambda t: to_jagged(plan.unsorted(t).transpose(1, 2), spec.q_offsets, spec.q_total)  # noqa: E731
    qp, kp, vp = pad_q(q), pad_kv(k), pad_kv(v)
    self_s = (q * self_k).sum(-1, keepdim=True) if self_k is not None else None  # [total_q, H, 1]
    if form == AttentionForm.POINTWISE:
        out = unpad(_PointwiseTiles.apply(qp, kp, vp, plan, 1.0 / scale_len))
        if self_s is not None:
            out = out + F.silu(self_s) * (1.0 / scale_len) * self_v
        return out
    out, lse = _SoftmaxTiles.apply(qp, kp, vp, plan)
    out = unpad(out)
    if self_s is None:
        return out
    lse = unpad(lse)
    total = torch.logaddexp(lse, self_s)
    return torch.exp(lse - total) * out + torch.exp(self_s - total) * self_v
