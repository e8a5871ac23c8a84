import torch

from dfgr_torchrec.data.synthetic_batches import SyntheticSequences


def test_batches_are_deterministic_and_well_formed():
    world = SyntheticSequences(num_items=100, num_tasks=3, seed=3)
    a = world.batch(5, 2, 9, 4, torch.Generator().manual_seed(7))
    b = world.batch(5, 2, 9, 4, torch.Generator().manual_seed(7))
    assert torch.equal(a.features.values(), b.features.values())
    lengths = a.history_lengths
    assert ((lengths >= 2) & (lengths <= 9)).all()
    assert a.labels.shape == (int(lengths.sum()), 3)
    assert a.candidate_labels.shape == (20, 3)
    # the action id is the bitmask of the task labels
    bits = (a.labels * torch.tensor([1.0, 2.0, 4.0])).sum(-1).long()
    assert torch.equal(a.features["action"].values(), bits)
    # candidates come after the history in time
    offsets = torch.cumsum(lengths, 0) - 1
    last = a.timestamps[offsets].repeat_interleave(4)
    assert (a.candidate_timestamps > last).all()


def test_fixed_lengths():
    world = SyntheticSequences(num_items=50)
    batch = world.batch(3, 0, 0, 1, torch.Generator(), lengths=torch.tensor([4, 0, 2]))
    assert batch.history_lengths.tolist() == [4, 0, 2]
