"""DualFlowTokens and a DualFlowInteraction behind a user's own EmbeddingCollection, under DMP."""

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torchrec import EmbeddingCollection, EmbeddingConfig, KeyedJaggedTensor
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec import DualFlowInteraction, DualFlowTokens, InteractionConfig, MergeOp
from dfgr_torchrec.distributed.sharding import combined_optimizer, dense_optimizer, shard_model


def _jagged(values, lengths):
    return JaggedTensor(values=values, lengths=torch.tensor(lengths))


def test_real_tokens_merge_the_true_action_and_fake_ones_the_placeholder():
    torch.manual_seed(0)
    tokens = DualFlowTokens(dim=4)
    items, actions = _jagged(torch.randn(5, 4), [2, 3]), _jagged(torch.randn(5, 4), [2, 3])
    real, fake = tokens(items, actions)
    torch.testing.assert_close(real.values(), items.values() + actions.values())
    torch.testing.assert_close(fake.values(), items.values() + tokens.placeholder.weight)
    assert real.lengths().tolist() == fake.lengths().tolist() == [2, 3]


def test_concat_projects_both_to_d_model_and_mismatches_are_named():
    tokens = DualFlowTokens(dim=4, merge=MergeOp.CONCAT, d_model=6)
    real, fake = tokens(_jagged(torch.randn(3, 4), [3]), _jagged(torch.randn(3, 4), [3]))
    assert real.values().shape == fake.values().shape == (3, 6)
    with pytest.raises(ValueError, match="d_model: merge 'sum' keeps the embedding width 4, got 6"):
        DualFlowTokens(dim=4, d_model=6)
    with pytest.raises(ValueError, match="same lengths"):
        tokens(_jagged(torch.randn(3, 4), [3]), _jagged(torch.randn(2, 4), [2]))


class _MyRanker(torch.nn.Module):
    """A user's model: their own tables, the dual flow behind them, their own head; no timestamps."""

    def __init__(self):
        super().__init__()
        tables = [
            EmbeddingConfig(name=n, embedding_dim=16, num_embeddings=rows, feature_names=[n])
            for n, rows in (("item", 100), ("action", 4))
        ]
        self.tables = EmbeddingCollection(tables=tables, device=torch.device("meta"))  # DMP allocates them
        self.tokens = DualFlowTokens(dim=16)
        self.interaction = DualFlowInteraction(
            InteractionConfig(d_model=16, num_layers=1, num_heads=2, attention_dim=8, linear_dim=8)
        )
        self.head = torch.nn.Linear(16, 1)

    def forward(self, features: KeyedJaggedTensor, labels: torch.Tensor) -> torch.Tensor:
        looked_up = self.tables(features)
        states = self.interaction(*self.tokens(looked_up["item"], looked_up["action"]))
        return F.binary_cross_entropy_with_logits(self.head(states.values()).squeeze(-1), labels)


def test_the_interaction_trains_without_timestamps_under_dmp(tmp_path):
    """DDP inside DMP requires a gradient for every dense parameter from every step: the time-gap
    table, unused without timestamps, gets a zero one (step 2 failed before)."""
    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        dmp = shard_model(_MyRanker(), {"item": "row_wise", "action": "table_wise"}, torch.device("cpu"))
        optimizer = combined_optimizer(dmp, dense_optimizer(dmp, lr=1e-2))
        g = torch.Generator().manual_seed(0)
        for _ in range(3):
            lengths = torch.randint(1, 6, (4,), generator=g)
            total = int(lengths.sum())
            features = KeyedJaggedTensor.from_lengths_sync(
                keys=["item", "action"],
                values=torch.cat(
                    [torch.randint(0, 100, (total,), generator=g), torch.randint(0, 4, (total,), generator=g)]
                ),
                lengths=torch.cat([lengths, lengths]),
            )
            loss = dmp(features, torch.randint(0, 2, (total,), generator=g).float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        time_gap = dmp.module.interaction.encoding.time_gap
        assert time_gap is not None and torch.count_nonzero(time_gap.grad) == 0
    finally:
        dist.destroy_process_group()


def test_the_tensor_merges_are_the_jagged_ones():
    tokens = DualFlowTokens(dim=4, merge=MergeOp.CONCAT, d_model=6)
    items = JaggedTensor(values=torch.randn(5, 4), lengths=torch.tensor([2, 3]))
    actions = JaggedTensor(values=torch.randn(5, 4), lengths=torch.tensor([2, 3]))
    real, fake = tokens(items, actions)
    torch.testing.assert_close(real.values(), tokens.merge(items.values(), actions.values()))
    torch.testing.assert_close(fake.values(), tokens.merge_placeholder(items.values()))
