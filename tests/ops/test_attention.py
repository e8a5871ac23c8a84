"""The padded (fbgemm jagged) attention kernel against the per-sequence reference."""

import pytest
import torch

from dfgr_torchrec.ops.attention import AttentionForm, AttentionKernel, AttentionSpec, jagged_attention
from dfgr_torchrec.ops.jagged import lengths_to_offsets, positions_in_sequence
from tests.ops.compare import assert_same_outputs_and_grads

Q_LENGTHS = [3, 1, 0, 5, 2]  # ragged, with a length-1 and an empty user
KV_LENGTHS = [4, 1, 2, 5, 0]


def _inputs(q_lengths, kv_lengths, with_self, seed=0, h=2, d=4, dv=3):
    g = torch.Generator().manual_seed(seed)
    tq, tk = sum(q_lengths), sum(kv_lengths)
    tensors = {
        "q": torch.randn(tq, h, d, generator=g),
        "k": torch.randn(tk, h, d, generator=g),
        "v": torch.randn(tk, h, dv, generator=g),
    }
    if with_self:
        tensors["self_k"] = torch.randn(tq, h, d, generator=g)
        tensors["self_v"] = torch.randn(tq, h, dv, generator=g)
    for t in tensors.values():
        t.requires_grad_(True)
    return tensors


def _run(kernel, tensors, mask, form):
    return jagged_attention(
        tensors["q"],
        tensors["k"],
        tensors["v"],
        mask,
        form=form,
        scale_len=7,
        self_k=tensors.get("self_k"),
        self_v=tensors.get("self_v"),
        kernel=kernel,
    )


@pytest.mark.parametrize("form", list(AttentionForm))
@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("with_self", [False, True])
@pytest.mark.parametrize("by_time", [False, True])
@pytest.mark.parametrize("users", [(Q_LENGTHS, KV_LENGTHS), ([4], [6])], ids=["ragged", "one-user"])
def test_padded_kernel_matches_reference(form, strict, with_self, by_time, users):
    q_lengths, kv_lengths = users if with_self else (users[1], users[1])
    q_off = lengths_to_offsets(torch.tensor(q_lengths))
    kv_off = lengths_to_offsets(torch.tensor(kv_lengths))
    if by_time:  # timestamps with ties (sessions)
        g = torch.Generator().manual_seed(1)
        q_keys = torch.randint(0, 4, (sum(q_lengths),), generator=g)
        kv_keys = torch.randint(0, 4, (sum(kv_lengths),), generator=g)
    else:
        q_keys = positions_in_sequence(q_off, sum(q_lengths))
        kv_keys = positions_in_sequence(kv_off, sum(kv_lengths))
    mask = AttentionSpec(q_off, kv_off, q_keys, kv_keys, strict=strict)

    fast_in = _inputs(q_lengths, kv_lengths, with_self)
    ref_in = {k: v.detach().clone().requires_grad_(True) for k, v in fast_in.items()}
    fast = _run(AttentionKernel.PADDED, fast_in, mask, form)
    ref = _run(AttentionKernel.REFERENCE, ref_in, mask, form)
    assert_same_outputs_and_grads(fast, ref, fast_in, ref_in)


def test_reference_pointwise_by_hand():
    """One user, two keys: the reference is the formula, written out."""
    q = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # [2, H=1, 2]
    k = torch.tensor([[[2.0, 0.0]], [[0.0, 3.0]]])
    v = torch.tensor([[[1.0]], [[10.0]]])
    off = torch.tensor([0, 2])
    keys = torch.tensor([0, 1])
    mask = AttentionSpec(off, off, keys, keys, strict=False)
    out = jagged_attention(q, k, v, mask, form=AttentionForm.POINTWISE, scale_len=2, kernel=AttentionKernel.REFERENCE)
    silu = torch.nn.functional.silu
    s = 2**-0.5  # 1/sqrt(d)
    expected0 = silu(torch.tensor(2.0 * s)) * 1.0 / 2
    expected1 = (silu(torch.tensor(0.0)) * 1.0 + silu(torch.tensor(3.0 * s)) * 10.0) / 2
    torch.testing.assert_close(out.flatten(), torch.stack([expected0, expected1]))


def test_mask_rejects_mismatched_users():
    with pytest.raises(ValueError, match="same users"):
        AttentionSpec(torch.tensor([0, 1]), torch.tensor([0, 1, 2]), torch.zeros(1), torch.zeros(2), strict=True)


@pytest.mark.parametrize("strict", [False, True])
def test_visible_counts_match_a_brute_force_count(strict):
    """Counting needs no dense mask: the merge by (user, key) equals counting pair by pair."""
    g = torch.Generator().manual_seed(3)
    q_off = lengths_to_offsets(torch.tensor(Q_LENGTHS))
    kv_off = lengths_to_offsets(torch.tensor(KV_LENGTHS))
    q_keys = torch.randint(0, 5, (sum(Q_LENGTHS),), generator=g)
    kv_keys = torch.randint(0, 5, (sum(KV_LENGTHS),), generator=g)  # unsorted: any order works
    spec = AttentionSpec(q_off, kv_off, q_keys, kv_keys, strict=strict)
    expected = []
    for b in range(len(Q_LENGTHS)):
        ks = kv_keys[kv_off[b] : kv_off[b + 1]]
        for qk in q_keys[q_off[b] : q_off[b + 1]]:
            expected.append(int((ks < qk).sum() if strict else (ks <= qk).sum()))
    assert spec.visible_counts().tolist() == expected
    assert "pytorch.mask" not in spec.backend_cache  # no backend state was built to count


def test_auto_kernel_is_tiled_from_the_measured_length(monkeypatch):
    """``auto`` resolves per call: the padded kernel below ``TILED_FROM_LEN`` keys, tiled from it on."""
    import dfgr_torchrec.ops.attention as attention
    from dfgr_torchrec.ops.jagged import lengths_to_offsets, positions_in_sequence

    monkeypatch.setattr(attention, "TILED_FROM_LEN", 8)

    def spec(lengths):
        offsets = lengths_to_offsets(torch.tensor(lengths))
        keys = positions_in_sequence(offsets, sum(lengths))
        return attention.AttentionSpec(offsets, offsets, keys, keys, strict=False)

    cpu, auto = torch.device("cpu"), attention.AttentionKernel.AUTO
    assert attention.resolve_kernel(auto, spec([7, 3]), cpu) == attention.AttentionKernel.PADDED
    assert attention.resolve_kernel(auto, spec([8, 3]), cpu) == attention.AttentionKernel.TILED
    assert attention.resolve_kernel(auto, spec([8, 3]), torch.device("meta")) == attention.AttentionKernel.PADDED
    monkeypatch.setattr(attention, "_triton_imports", lambda: False)  # a CUDA box without Triton
    cuda = torch.device("cuda")
    assert attention.resolve_kernel(auto, spec([7, 3]), cuda) == attention.AttentionKernel.PADDED
    assert attention.resolve_kernel(auto, spec([8, 3]), cuda) == attention.AttentionKernel.TILED
    assert (
        attention.resolve_kernel(attention.AttentionKernel.REFERENCE, spec([8]), cpu)
        == attention.AttentionKernel.REFERENCE
    )
    calls = []
    monkeypatch.setattr("dfgr_torchrec.ops.tiled.tiled_attention", lambda *a, **k: calls.append("tiled"))
    monkeypatch.setattr("dfgr_torchrec.ops.padded.padded_attention", lambda *a, **k: calls.append("padded"))
    for lengths in ([7, 3], [9, 2]):
        s = spec(lengths)
        q = torch.randn(s.q_total, 2, 4)
        attention.jagged_attention(q, q, q, s, form="pointwise", scale_len=16)
    assert calls == ["padded", "tiled"]


def test_auto_kernel_is_triton_on_cuda_when_it_imports(monkeypatch):
    """On CUDA ``auto`` never picks the padded square when Triton is there, at any length."""
    import dfgr_torchrec.ops.attention as attention
    from dfgr_torchrec.ops.jagged import lengths_to_offsets

    monkeypatch.setattr(attention, "_triton_imports", lambda: True)
    offsets = lengths_to_offsets(torch.tensor([3, 1]))
    keys = torch.tensor([0, 1, 2, 0])
    spec = attention.AttentionSpec(offsets, offsets, keys, keys, strict=False)
    auto = attention.AttentionKernel.AUTO
    assert attention.resolve_kernel(auto, spec, torch.device("cuda")) == attention.AttentionKernel.TRITON
    assert attention.resolve_kernel(auto, spec, torch.device("cpu")) == attention.AttentionKernel.PADDED


def test_the_padded_backend_keeps_its_old_name_as_an_alias():
    """Configs and results written before the rename say ``kernel: pytorch``."""
    assert AttentionKernel("pytorch") is AttentionKernel.PADDED is AttentionKernel("padded")
