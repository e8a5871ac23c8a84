import torch

from dfgr_torchrec.ops.jagged import interleave, lengths_to_offsets, positions_in_sequence, to_jagged, to_padded


def test_positions_restart_per_sequence():
    offsets = lengths_to_offsets(torch.tensor([2, 0, 3]))
    assert positions_in_sequence(offsets, 5).tolist() == [0, 1, 0, 1, 2]


def test_padded_round_trip_pads_only_to_the_longest():
    values = torch.arange(10.0).view(5, 2)
    offsets = lengths_to_offsets(torch.tensor([2, 0, 3]))
    padded = to_padded(values, offsets, 3)
    assert padded.shape == (3, 3, 2)
    assert padded[1].abs().sum() == 0 and padded[0, 2].abs().sum() == 0
    assert torch.equal(to_jagged(padded, offsets, 5), values)


def test_interleave_keeps_sequences_together():
    a = torch.tensor([1, 2, 3])
    b = torch.tensor([10, 20, 30])
    assert interleave(a, b).tolist() == [1, 10, 2, 20, 3, 30]


def test_the_pure_torch_helpers_equal_fbgemm_forward_and_backward():
    """The fallbacks used where fbgemm is absent give fbgemm's values and gradients (cut rows included)."""
    from dfgr_torchrec.ops import jagged

    assert jagged.HAS_FBGEMM
    lengths = torch.tensor([3, 0, 5, 1])
    assert torch.equal(jagged.torch_lengths_to_offsets(lengths), lengths_to_offsets(lengths))
    offsets = lengths_to_offsets(lengths)
    for max_len in (5, 7, 2):  # 2 cuts the longer sequences, as fbgemm does
        values = torch.randn(9, 2, 3, requires_grad=True)
        ours = values.detach().clone().requires_grad_(True)
        padded, torch_padded = (
            to_padded(values, offsets, max_len, -1.0),
            jagged.torch_to_padded(ours, offsets, max_len, -1.0),
        )
        assert torch.equal(torch_padded, padded)
        grad = torch.randn_like(padded)
        padded.backward(grad)
        torch_padded.backward(grad)
        assert torch.equal(ours.grad, values.grad)
        dense = torch.randn(4, max_len, 2, 3, requires_grad=True)
        dense_ours = dense.detach().clone().requires_grad_(True)
        back, torch_back = to_jagged(dense, offsets, 9), jagged.torch_to_jagged(dense_ours, offsets, 9)
        assert torch.equal(torch_back, back)
        grad = torch.randn_like(back)
        back.backward(grad)
        torch_back.backward(grad)
        assert torch.equal(dense_ours.grad, dense.grad)


def test_the_attention_op_imports_and_runs_without_fbgemm_or_torchrec():
    """A GPU box with only torch (no fbgemm, no torchrec) imports the op layer; every backend runs."""
    import subprocess
    import sys

    script = """
import sys
sys.modules["fbgemm_gpu"] = None
sys.modules["torchrec"] = None
import torch
from dfgr_torchrec.ops import jagged
from dfgr_torchrec.ops.attention import AttentionSpec, jagged_attention
assert not jagged.HAS_FBGEMM
offsets = jagged.lengths_to_offsets(torch.tensor([3, 0, 5]))
keys = jagged.positions_in_sequence(offsets, 8)
spec = AttentionSpec(offsets, offsets, keys, keys, strict=False)
q, k, v = (torch.randn(8, 2, 4) for _ in range(3))
ref = jagged_attention(q, k, v, spec, form="softmax", scale_len=8, kernel="reference")
for kernel in ("padded", "tiled", "auto"):
    out = jagged_attention(q, k, v, spec, form="softmax", scale_len=8, kernel=kernel)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
