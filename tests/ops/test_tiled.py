"""The tiled attention backend against the per-sequence reference: forward, every gradient, memory."""

import functools

import pytest
import torch

from dfgr_torchrec.ops import tiled
from dfgr_torchrec.ops.attention import AttentionForm, AttentionKernel, AttentionSpec, jagged_attention
from dfgr_torchrec.ops.jagged import lengths_to_offsets, positions_in_sequence
from dfgr_torchrec.ops.reference import reference_attention
from dfgr_torchrec.ops.tiled import tiled_attention
from tests.ops.compare import assert_same_outputs_and_grads

# Ragged, with empty and length-1 users, lengths not multiples of the tiles, longer than the tiles.
Q_LENGTHS = [7, 1, 0, 11, 4, 0]
KV_LENGTHS = [9, 1, 3, 11, 0, 0]
USERS = {"ragged": (Q_LENGTHS, KV_LENGTHS), "one-user": ([13], [10])}


def _spec(q_lengths, kv_lengths, strict, by_time, seed=1):
    q_off = lengths_to_offsets(torch.tensor(q_lengths))
    kv_off = lengths_to_offsets(torch.tensor(kv_lengths))
    if by_time:  # sorted timestamps with ties (sessions)
        g = torch.Generator().manual_seed(seed)
        keys = []
        for lengths in (q_lengths, kv_lengths):
            keys.append(torch.cat([torch.randint(0, 5, (n,), generator=g).sort().values for n in lengths]))
        q_keys, kv_keys = keys
    else:
        q_keys = positions_in_sequence(q_off, sum(q_lengths))
        kv_keys = positions_in_sequence(kv_off, sum(kv_lengths))
    return AttentionSpec(q_off, kv_off, q_keys, kv_keys, strict=strict)


def _inputs(q_total, kv_total, with_self, dtype=torch.float32, seed=0, h=2, d=4, dv=3):
    g = torch.Generator().manual_seed(seed)
    shapes = {"q": (q_total, h, d), "k": (kv_total, h, d), "v": (kv_total, h, dv)}
    if with_self:
        shapes.update(self_k=(q_total, h, d), self_v=(q_total, h, dv))
    return {n: torch.randn(*s, generator=g, dtype=dtype).requires_grad_(True) for n, s in shapes.items()}


def _call(backend, t, spec, form, scale_len=7):
    return backend(t["q"], t["k"], t["v"], spec, form, scale_len, t.get("self_k"), t.get("self_v"))


def _compare(spec, form, with_self, tile_q, tile_k, seed=0):
    fast_in = _inputs(spec.q_total, spec.kv_total, with_self, seed=seed)
    ref_in = {n: t.detach().clone().requires_grad_(True) for n, t in fast_in.items()}
    fast = _call(functools.partial(tiled_attention, tile_q=tile_q, tile_k=tile_k), fast_in, spec, form)
    ref = _call(reference_attention, ref_in, spec, form)
    assert_same_outputs_and_grads(fast, ref, fast_in, ref_in)


@pytest.mark.parametrize("form", list(AttentionForm))
@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("with_self", [False, True])
@pytest.mark.parametrize("by_time", [False, True])
@pytest.mark.parametrize("users", list(USERS), ids=list(USERS))
@pytest.mark.parametrize("tiles", [(4, 4), (3, 5), (256, 256)], ids=["4x4", "3x5", "256"])
def test_tiled_matches_reference(form, strict, with_self, by_time, users, tiles):
    q_lengths, kv_lengths = USERS[users]
    if not with_self:  # self-attention shapes: queries are the keys
        q_lengths = kv_lengths
    _compare(_spec(q_lengths, kv_lengths, strict, by_time), form, with_self, *tiles)


@pytest.mark.parametrize("form", list(AttentionForm))
@pytest.mark.parametrize("strict", [False, True])
def test_unsorted_keys_stay_correct(form, strict):
    """Skipping relies on per-tile min/max only, so any key order is still exact."""
    g = torch.Generator().manual_seed(5)
    spec = _spec(Q_LENGTHS, KV_LENGTHS, strict, False)
    spec = AttentionSpec(
        spec.q_offsets,
        spec.kv_offsets,
        torch.randint(0, 9, (spec.q_total,), generator=g),
        torch.randint(0, 9, (spec.kv_total,), generator=g),
        strict=strict,
    )
    _compare(spec, form, True, 3, 4)


def test_dispatcher_runs_the_tiled_kernel():
    spec = _spec(KV_LENGTHS, KV_LENGTHS, False, False)
    t = _inputs(spec.q_total, spec.kv_total, False)
    args = (t["q"], t["k"], t["v"], spec)
    fast = jagged_attention(*args, form="softmax", scale_len=5, kernel=AttentionKernel.TILED)
    ref = jagged_attention(*args, form="softmax", scale_len=5, kernel=AttentionKernel.REFERENCE)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    assert AttentionKernel("tiled") is AttentionKernel.TILED


@pytest.mark.parametrize("form", list(AttentionForm))
@pytest.mark.parametrize("strict", [False, True])
def test_gradcheck_float64(form, strict):
    """The autograd Functions' recomputing backward, checked numerically on padded float64 operands
    (fbgemm's padding has no float64 kernel; the self term around them is plain autograd)."""
    spec = _spec([3, 0, 5], [4, 1, 5], strict, True)
    plan = tiled.tile_plan(spec, 2, 3)
    b, lq, lk = 3, plan.q_keys.shape[1], plan.kv_keys.shape[1]
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(b, 1, n, 2, generator=g, dtype=torch.float64, requires_grad=True) for n in (lq, lk, lk))

    def f(q, k, v):
        if form == AttentionForm.POINTWISE:
            return tiled._PointwiseTiles.apply(q, k, v, plan, 1.0 / 3)
        out, lse = tiled._SoftmaxTiles.apply(q, k, v, plan)
        return out, torch.where(torch.isinf(lse), 0.0, lse)  # -inf: a row that sees nothing

    assert torch.autograd.gradcheck(f, (q, k, v))


def test_causal_tiles_above_the_diagonal_are_skipped():
    n, tile = 40, 8
    spec = _spec([n], [n], False, False)
    plan = tiled.tile_plan(spec, tile, tile)
    visited = sum(len(row) for row in plan.work)
    masked = sum(m for row in plan.work for _, m, _ in row)
    blocks = n // tile
    assert visited == blocks * (blocks + 1) // 2  # the lower triangle, diagonal included
    assert masked == blocks  # only the diagonal tiles build a mask


def test_largest_intermediate_is_one_tile(monkeypatch):
    """Training at N = 512 never builds more than one ``[B, H, tile, tile]`` score tile."""
    n, tile, h = 512, 64, 2
    spec = _spec([n, n // 2], [n, n // 2], False, False)
    t = _inputs(spec.q_total, spec.kv_total, True, h=h)
    monkeypatch.setattr(tiled, "DEBUG_STATS", {})
    for form in AttentionForm:
        out = _call(functools.partial(tiled_attention, tile_q=tile, tile_k=tile), t, spec, form)
        out.sum().backward()
    assert tiled.DEBUG_STATS["largest_tile"] == 2 * h * tile * tile  # vs 2 * h * n * n padded


def test_training_peak_memory_is_below_the_padded_kernel():
    """The process's RSS high-water mark during forward + backward at N = 2048: the padded kernel
    holds several ``[B, H, N, N]`` squares (64 MiB each here), the tiled one a few ``N x d`` operands."""
    from dfgr_torchrec.bench.memory import measure_peak

    n = 2048
    spec = _spec([n, n], [n, n], False, False)
    t = _inputs(spec.q_total, spec.kv_total, False, d=16, dv=16)

    def step(kernel):
        for x in t.values():
            x.grad = None
        out = jagged_attention(t["q"], t["k"], t["v"], spec, form="pointwise", scale_len=n, kernel=kernel)
        out.sum().backward()

    peaks = {}
    for kernel in (AttentionKernel.PADDED, AttentionKernel.TILED):
        step(kernel)  # warm: the spec caches the padded mask / the tile plan
        peaks[kernel] = measure_peak(lambda: step(kernel), torch.device("cpu"))[1]  # noqa: B023 (run now)
    if peaks[AttentionKernel.PADDED] is None:
        pytest.skip("no RSS high-water mark on this platform")
    assert peaks[AttentionKernel.TILED] < peaks[AttentionKernel.PADDED] / 4, peaks
