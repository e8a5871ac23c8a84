"""The Triton backend against the per-sequence reference, under Triton's CPU interpreter.

This module sets ``TRITON_INTERPRET=1`` before anything loads the kernels (collection imports it
before any test runs), so the same kernels a GPU compiles run here through numpy, in fp32.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"

import functools  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from dfgr_torchrec.ops.attention import AttentionForm, AttentionKernel, AttentionSpec, jagged_attention  # noqa: E402
from dfgr_torchrec.ops.jagged import lengths_to_offsets  # noqa: E402
from dfgr_torchrec.ops.reference import reference_attention  # noqa: E402
from dfgr_torchrec.ops.triton import available  # noqa: E402
from dfgr_torchrec.ops.triton.blocks import block_table  # noqa: E402
from dfgr_torchrec.ops.triton.function import BlockSizes, interpreting, triton_attention  # noqa: E402
from tests.ops.compare import assert_same_outputs_and_grads  # noqa: E402
from tests.ops.test_tiled import _call, _inputs, _spec  # noqa: E402

# Ragged: an empty user, a length-1 user, lengths that are not multiples of the block (16), one
# user longer than two blocks, a user with keys but no queries and one with queries but no keys.
Q_LENGTHS = [7, 1, 0, 37, 4, 0]
KV_LENGTHS = [9, 1, 3, 37, 0, 0]
BLOCKS = BlockSizes(m=16, n=16)


def _compare(spec, form, with_self, sizes=BLOCKS, seed=0):
    fast_in = _inputs(spec.q_total, spec.kv_total, with_self, seed=seed)
    ref_in = {n: t.detach().clone().requires_grad_(True) for n, t in fast_in.items()}
    fast = _call(functools.partial(triton_attention, sizes=sizes), fast_in, spec, form)
    ref = _call(reference_attention, ref_in, spec, form)
    assert_same_outputs_and_grads(fast, ref, fast_in, ref_in, atol=1e-5)


def test_the_interpreter_runs_the_kernels():
    assert interpreting() and available(torch.device("cpu"))
    from triton.runtime.interpreter import InterpretedFunction

    from dfgr_torchrec.ops.triton import kernels

    assert isinstance(kernels.attention_fwd, InterpretedFunction)


@pytest.mark.parametrize("form", list(AttentionForm))
@pytest.mark.parametrize("strict", [False, True], ids=["le", "lt"])
@pytest.mark.parametrize("with_self", [False, True], ids=["no-self", "self"])
@pytest.mark.parametrize("by_time", [False, True], ids=["positions", "sessions"])
def test_triton_matches_reference(form, strict, with_self, by_time):
    """Causal real flow (``<=``, no self), fake->real (``<`` plus self), session ties, both forms."""
    q_lengths = Q_LENGTHS if with_self else KV_LENGTHS  # self-attention shapes: queries are the keys
    _compare(_spec(q_lengths, KV_LENGTHS, strict, by_time), form, with_self)


@pytest.mark.parametrize("form", list(AttentionForm))
def test_candidates_over_a_longer_history_with_uneven_blocks(form):
    """N + M scoring: M candidates per user see the whole history (by time) and themselves;
    query and key blocks of different sizes, head dims that are not powers of two."""
    g = torch.Generator().manual_seed(3)
    h_len, c_len = [21, 5, 0], [4, 0, 3]
    h_off, c_off = lengths_to_offsets(torch.tensor(h_len)), lengths_to_offsets(torch.tensor(c_len))
    h_keys = torch.cat([torch.arange(n) for n in h_len])
    c_keys = torch.cat([torch.full((m,), n + 1) for n, m in zip(h_len, c_len)])
    spec = AttentionSpec(c_off, h_off, c_keys, h_keys, strict=True)
    fast_in = {
        "q": torch.randn(7, 3, 5, generator=g),
        "k": torch.randn(26, 3, 5, generator=g),
        "v": torch.randn(26, 3, 6, generator=g),
        "self_k": torch.randn(7, 3, 5, generator=g),
        "self_v": torch.randn(7, 3, 6, generator=g),
    }
    fast_in = {n: t.requires_grad_(True) for n, t in fast_in.items()}
    ref_in = {n: t.detach().clone().requires_grad_(True) for n, t in fast_in.items()}
    fast = _call(functools.partial(triton_attention, sizes=BlockSizes(m=16, n=32)), fast_in, spec, form)
    ref = _call(reference_attention, ref_in, spec, form)
    assert_same_outputs_and_grads(fast, ref, fast_in, ref_in, atol=1e-5)


@pytest.mark.parametrize("form", list(AttentionForm))
def test_unsorted_keys_stay_correct(form):
    """Skipping uses each block's key range only, so any key order is still exact."""
    g = torch.Generator().manual_seed(5)
    base = _spec(Q_LENGTHS, KV_LENGTHS, True, False)
    spec = AttentionSpec(
        base.q_offsets,
        base.kv_offsets,
        torch.randint(0, 40, (base.q_total,), generator=g),
        torch.randint(0, 40, (base.kv_total,), generator=g),
        strict=True,
    )
    _compare(spec, form, True)


def test_the_dispatcher_runs_it_and_non_contiguous_views_work():
    """``kernel=triton`` through :func:`jagged_attention`, with strided operands and keys as MetaGR passes them."""
    base = _spec([5, 3], [5, 3], True, False)
    strided = torch.stack([base.q_keys, -base.q_keys], 1).reshape(-1)[0::2]  # keys as a strided view
    spec = AttentionSpec(base.q_offsets, base.kv_offsets, strided, strided, strict=True)
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(16, 2, 4, generator=g)
    q, k, v = qkv[0::2], qkv[1::2], torch.randn(8, 2, 4, generator=g)
    out = jagged_attention(
        q, k, v, spec, form="softmax", scale_len=8, self_k=k, self_v=v, kernel=AttentionKernel.TRITON
    )
    ref = jagged_attention(
        q, k, v, spec, form="softmax", scale_len=8, self_k=k, self_v=v, kernel=AttentionKernel.REFERENCE
    )
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_bf16_inputs_run_in_fp32_under_the_interpreter():
    """The interpreter's bf16 ``tl.dot`` is wrong upstream: operands are upcast there, output cast back."""
    spec = _spec([6, 2], [6, 2], False, False)
    t = _inputs(spec.q_total, spec.kv_total, False)
    q, k, v = (t[n].detach().bfloat16() for n in ("q", "k", "v"))
    out = triton_attention(q, k, v, spec, AttentionForm.POINTWISE, 4, None, None, sizes=BLOCKS)
    ref = reference_attention(q.float(), k.float(), v.float(), spec, AttentionForm.POINTWISE, 4, None, None)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)


def test_an_empty_batch_and_users_without_keys():
    spec = _spec([0, 0], [0, 0], False, False)
    t = _inputs(0, 0, False)
    out = triton_attention(t["q"], t["k"], t["v"], spec, AttentionForm.SOFTMAX, 4, None, None, sizes=BLOCKS)
    assert out.shape == (0, 2, 3)
    out.sum().backward()
    assert t["q"].grad.shape == (0, 2, 4)


def test_block_tables_hold_each_users_blocks_and_key_ranges():
    offsets = lengths_to_offsets(torch.tensor([5, 0, 2]))
    keys = torch.tensor([3, 1, 4, 1, 5, 9, 2])
    table = block_table(offsets, keys, 2)
    assert table.user_blocks.tolist() == [0, 3, 3, 4]
    assert table.start.tolist() == [0, 2, 4, 5] and table.end.tolist() == [2, 4, 5, 7]
    assert table.user.tolist() == [0, 0, 0, 2]
    assert table.key_min.tolist() == [1, 1, 5, 2] and table.key_max.tolist() == [3, 4, 5, 9]


def test_triton_off_the_gpu_without_the_interpreter_says_what_to_use(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    spec = _spec([2], [2], False, False)
    t = _inputs(2, 2, False)
    with pytest.raises(ValueError, match="kernel: triton needs a CUDA GPU"):
        triton_attention(t["q"], t["k"], t["v"], spec, AttentionForm.SOFTMAX, 4, None, None)
    assert not available(torch.device("cpu"))
