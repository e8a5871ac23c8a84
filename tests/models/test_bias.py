"""The bias baseline: a global + item (+ side) + user bias per task, nothing else."""

import torch

from dfgr_torchrec.config import BiasModelConfig, SequenceEmbeddingConfig, TaskConfig
from dfgr_torchrec.data.synthetic_batches import SyntheticSequences
from dfgr_torchrec.metrics import auc
from dfgr_torchrec.models import build_model


def _config(**embeddings):
    return BiasModelConfig(
        embeddings=SequenceEmbeddingConfig(
            item_vocab_size=200, action_vocab_sizes={"action": 4}, embedding_dim=16, **embeddings
        ),
        tasks=[TaskConfig("a"), TaskConfig("b")],
    )


def test_logits_are_the_sum_of_the_biases():
    torch.manual_seed(0)
    model = build_model(_config(user_vocab_sizes={"user_id": 5}))
    with torch.no_grad():
        model.global_bias.copy_(torch.tensor([0.5, -1.0]))
    world = SyntheticSequences(num_items=200, num_tasks=2, seed=0)
    batch = world.batch(3, 2, 5, 2, torch.Generator().manual_seed(0))
    from torchrec import KeyedJaggedTensor  # add one user id per user

    f = batch.features
    batch.features = KeyedJaggedTensor.from_lengths_sync(
        keys=[*f.keys(), "user_id"],
        values=torch.cat([f.values(), torch.tensor([1, 2, 3])]),
        lengths=torch.cat([f.lengths(), torch.ones(3, dtype=torch.int64)]),
    )
    tables = {name: t.weight for name, t in model.embedding.collection.embeddings.items()}
    assert tables["item"].shape[1] == 4  # a column per task, padded to the multiple of 4 FBGEMM shards

    scores = model.score_candidates(batch).values()
    items = batch.features["cand_item_id"].values()
    users = torch.repeat_interleave(torch.tensor([1, 2, 3]), batch.candidate_lengths)
    expected = model.global_bias + tables["item"][items, :2] + tables["user_id"][users, :2]
    torch.testing.assert_close(scores, expected)


def test_it_learns_item_popularity():
    torch.manual_seed(0)
    world = SyntheticSequences(num_items=200, num_tasks=2, seed=0)
    model = build_model(_config())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(1)
    for _ in range(150):
        loss = model(world.batch(32, 5, 30, 0, g)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    batch = world.batch(64, 5, 30, 8, torch.Generator().manual_seed(2))
    with torch.no_grad():
        scores = model.score_candidates(batch).values()
    oracle = world.item_bias[batch.features["cand_item_id"].values()][:, 0]  # the planted item bias
    learned, best = auc(scores[:, 0], batch.candidate_labels[:, 0]), auc(oracle, batch.candidate_labels[:, 0])
    assert learned > 0.55 and learned > 0.5 + 0.6 * (best - 0.5), (learned, best)


def test_three_tasks_give_tables_fbgemm_can_shard():
    """3 tasks (Taobao's fav, cart, buy): a width of 3 fails in sharded FBGEMM tables ("multiple of 4")."""
    config = BiasModelConfig(
        embeddings=SequenceEmbeddingConfig(item_vocab_size=200, action_vocab_sizes={"action": 8}, embedding_dim=16),
        tasks=[TaskConfig("fav"), TaskConfig("cart"), TaskConfig("buy")],
    )
    model = build_model(config)
    assert {t.embedding_dim for t in model.embedding.collection.embedding_configs()} == {4}
    world = SyntheticSequences(num_items=200, num_tasks=3, seed=0)
    assert model.score_candidates(world.batch(2, 2, 5, 3, torch.Generator().manual_seed(0))).values().shape == (6, 3)
