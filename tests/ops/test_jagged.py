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
