"""SequenceDataset: batch contents, truncation, rank/worker sharding, and a model eating the batches."""

import numpy as np
import pytest
import torch

from dfgr_torchrec.config import InteractionConfig, RankingModelConfig, SequenceEmbeddingConfig, from_dict
from dfgr_torchrec.data.config import DataConfig, load_data_config
from dfgr_torchrec.data.dataset import PreparedData, SequenceDataset, make_dataloader
from dfgr_torchrec.data.prepare import prepare
from dfgr_torchrec.models import build_model
from tests.data.conftest import write_config


@pytest.fixture
def tiny(tmp_path, tiny_log):
    return PreparedData(prepare(from_dict(DataConfig, write_config(tmp_path, tiny_log)), progress=False))


def test_train_valid_test_batches(tiny):
    train = SequenceDataset(tiny, "train", batch_size=8, max_seq_len=10, shuffle=False).make_batch(np.array([0, 1]))
    assert train.history_lengths.tolist() == [2, 1] and train.candidate_lengths.tolist() == [0, 0]
    assert train.timestamps.tolist() == [1, 2, 5]
    assert train.labels.tolist() == [[1, 1], [0, 0], [0, 0]]

    valid = SequenceDataset(tiny, "valid", batch_size=8, max_seq_len=10).make_batch(np.array([0, 1]))
    assert valid.history_lengths.tolist() == [2, 1] and valid.candidate_timestamps.tolist() == [3, 6]

    test = SequenceDataset(tiny, "test", batch_size=8, max_seq_len=10).make_batch(np.array([0, 1]))
    assert test.history_lengths.tolist() == [3, 2] and test.candidate_timestamps.tolist() == [4, 7]
    assert test.candidate_labels.tolist() == [[1, 1], [1, 1]]
    assert test.features["action"].values().tolist() == [3, 0, 1, 0, 1]


def test_truncation_keeps_the_most_recent(tiny):
    batch = SequenceDataset(tiny, "test", batch_size=8, max_seq_len=2).make_batch(np.array([0]))
    assert batch.timestamps.tolist() == [2, 3] and batch.candidate_timestamps.tolist() == [4]


def _kuairand(shared_data):
    return PreparedData(prepare(load_data_config("configs/data/kuairand-sample.yaml"), progress=False))


def test_eval_sharding_covers_every_user_once(shared_data):
    data = _kuairand(shared_data)
    seen = []
    for rank in range(3):
        ds = SequenceDataset(data, "test", batch_size=50, max_seq_len=64, rank=rank, world_size=3)
        for batch in make_dataloader(ds, num_workers=2):
            seen.append(int(batch.candidate_lengths.numel()))
    assert sum(seen) == data.num_users


def test_train_ranks_get_equal_disjoint_shares(shared_data):
    data = _kuairand(shared_data)
    shares = [SequenceDataset(data, "train", 32, 64, rank=r, world_size=3, seed=1).rank_users() for r in range(3)]
    assert len({len(s) for s in shares}) == 1
    assert len(np.intersect1d(shares[0], shares[1])) == 0
    assert (
        sum(len(s) for s in shares) + SequenceDataset(data, "train", 32, 64, world_size=3).dropped_users
        == data.num_users
    )
    a = SequenceDataset(data, "train", 32, 64, seed=1)
    b = SequenceDataset(data, "train", 32, 64, seed=1)
    b.set_epoch(1)
    assert not np.array_equal(a.rank_users(), b.rank_users())


def test_model_trains_and_scores_on_real_batches(shared_data):
    data = _kuairand(shared_data)
    config = RankingModelConfig(
        embeddings=SequenceEmbeddingConfig(embedding_dim=16),
        interaction=InteractionConfig(d_model=16, num_layers=1, max_seq_len=64, mask_mode="session"),
    )
    torch.manual_seed(0)
    model = build_model(config, data.schema())
    batch = next(iter(make_dataloader(SequenceDataset(data, "train", 16, 64))))
    out = model(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.logits.shape == (int(batch.history_lengths.sum()), len(data.tasks))
    test_batch = next(iter(SequenceDataset(data, "test", 16, 64)))
    scores = model.score_candidates(test_batch)
    assert scores.values().shape == (int(test_batch.candidate_lengths.sum()), len(data.tasks))


def test_random_windows_cover_long_histories(tiny):
    ds = SequenceDataset(tiny, "train", batch_size=8, max_seq_len=1, shuffle=False, random_window=True)
    seen = set()
    for epoch in range(20):
        ds.set_epoch(epoch)
        batch = ds.make_batch(np.array([0]))
        assert batch.history_lengths.tolist() == [1]
        seen.add(int(batch.timestamps[0]))
    assert seen == {1, 2}  # user a's training history is t=1, 2: both windows show up
    again = SequenceDataset(tiny, "train", batch_size=8, max_seq_len=1, shuffle=False, random_window=True)
    again.set_epoch(19)
    assert again.make_batch(np.array([0])).timestamps.tolist() == batch.timestamps.tolist()  # deterministic


def test_random_window_is_for_training_only(tiny):
    with pytest.raises(ValueError, match="random_window"):
        SequenceDataset(tiny, "test", batch_size=8, max_seq_len=4, random_window=True)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_evaluation_splits_give_every_rank_the_same_number_of_batches(tiny, world_size):
    """Sharded lookups are collectives: a rank with fewer users pads with empty batches."""
    everyone = [u for batch in SequenceDataset(tiny, "test", 100, 4) for u in batch.candidate_user_ids.tolist()]
    counts, users, padding = [], [], 0
    for rank in range(world_size):
        ds = SequenceDataset(tiny, "test", batch_size=1, max_seq_len=4, rank=rank, world_size=world_size)
        batches = list(ds)
        counts.append(len(batches))
        assert len(ds) == len(batches)
        for batch in batches:
            users += batch.candidate_user_ids.tolist()
            if batch.user_ids.tolist() == [-1]:  # padding: nothing to look up or score
                padding += 1
                assert int(batch.history_lengths.sum()) == 0 and int(batch.candidate_lengths.sum()) == 0
    assert len(set(counts)) == 1 and sorted(users) == sorted(everyone)
    assert padding == world_size * counts[0] - len(set(everyone))  # 2 users with candidates


def test_user_id_feature_is_one_id_per_user(tiny):
    ds = SequenceDataset(tiny, "test", batch_size=8, max_seq_len=4, user_id=True)
    batch = ds.make_batch(np.array([1, 0]))
    assert batch.features["user_id"].lengths().tolist() == [1, 1]
    assert batch.features["user_id"].values().tolist() == [2, 1]  # row = user index + 1
    assert tiny.schema(user_id=True).user_rows == {"user_id": tiny.num_users + 1}
    assert "user_id" not in SequenceDataset(tiny, "test", batch_size=8, max_seq_len=4).feature_names
    padding = ds.make_batch(np.zeros(0, dtype=np.int64))
    assert padding.features["user_id"].values().tolist() == [0]
