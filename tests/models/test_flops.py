"""The analytic FLOP counts: projections and heads as torch's FLOP counter measures them on the
real models, attention pairs as a brute-force enumeration of the masks."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dfgr_torchrec.config import InteractionConfig, RankingModelConfig, SequenceEmbeddingConfig, TaskConfig, retype
from dfgr_torchrec.data.synthetic_batches import SyntheticSequences
from dfgr_torchrec.models import build_model
from dfgr_torchrec.models.flops import BACKWARD_FACTOR, FORWARD_FLOPS, training_flops

LENGTHS = [5, 1, 8]


def _config(model_type, layers):
    config = RankingModelConfig(
        embeddings=SequenceEmbeddingConfig(item_vocab_size=50, action_vocab_sizes={"action": 4}, embedding_dim=16),
        interaction=InteractionConfig(d_model=16, num_layers=layers, num_heads=2, attention_dim=4, linear_dim=6),
        tasks=[TaskConfig("a"), TaskConfig("b")],
        head_hidden_dims=[8],
    )
    return retype(config, model_type)


def _linear_flops(model, batch):
    """FLOPs of every linear layer of the model (token merge, blocks, head), as torch counts them;
    attention runs as batched matmuls (bmm) over padded squares and is left out."""
    with FlopCounterMode(display=False) as counter:
        model(batch)
    total = counter.get_flop_counts()["Global"]
    return total.get(torch.ops.aten.addmm, 0) + total.get(torch.ops.aten.mm, 0)


def _visible_pairs(model_type, n, layers):
    """Brute force: (query, key) pairs the masks allow, summed over layers."""
    causal = sum(1 for i in range(n) for j in range(n) if j <= i)  # real flow: j <= i
    fake = sum(1 for i in range(n) for j in range(n) if j < i) + n  # fake flow: j < i, plus itself
    if model_type == "dfgr":
        return (layers - 1) * (causal + fake) + fake
    tokens = 2 * n
    interleaved = sum(1 for i in range(tokens) for j in range(tokens) if j < i) + tokens  # strict + self
    items_last = sum(1 for i in range(0, tokens, 2) for j in range(tokens) if j < i) + n
    return (layers - 1) * interleaved + items_last


@pytest.mark.parametrize("model_type", ["dfgr", "metagr"])
@pytest.mark.parametrize("layers", [1, 3])
def test_counts_match_measured_linears_and_enumerated_pairs(model_type, layers):
    torch.manual_seed(0)
    config = _config(model_type, layers)
    model = build_model(config).eval()
    world = SyntheticSequences(num_items=50, num_tasks=2, seed=0)
    batch = world.batch(len(LENGTHS), 1, 8, 1, torch.Generator().manual_seed(0), lengths=torch.tensor(LENGTHS))
    i = config.interaction
    pair = 2 * i.num_heads * (i.attention_dim + i.linear_dim)
    attention = pair * sum(_visible_pairs(model_type, n, layers) for n in LENGTHS)
    linear = _linear_flops(model, batch)
    assert linear > 0
    counted = float(FORWARD_FLOPS[model_type](config, torch.tensor(LENGTHS)).sum())
    assert counted == pytest.approx(linear + attention, rel=1e-12)
    assert training_flops(config, torch.tensor(LENGTHS)) == pytest.approx(BACKWARD_FACTOR * counted)


def test_dfgr_needs_about_half_of_metagr_attention_and_other_types_have_no_counter():
    long = torch.tensor([4096])
    ratio = training_flops(_config("metagr", 4), long) / training_flops(_config("dfgr", 4), long)
    assert 1.8 < ratio < 2.0  # 2N x 2N against two N x N: attention dominates at this length
    assert training_flops(_config("bias", 1), long) is None


def test_epoch_tokens_count_two_flows_for_dfgr_and_the_targets_only_for_hstu():
    from dfgr_torchrec.models.flops import epoch_tokens

    lengths = torch.tensor([1, 5, 20])
    assert epoch_tokens(_config("dfgr", 2), lengths) == {"tokens": 52, "labels": 26}
    assert epoch_tokens(_config("metagr", 2), lengths) == {"tokens": 52, "labels": 26}
    hstu = _config("hstu", 2)
    assert epoch_tokens(hstu, lengths) == {"tokens": 26, "labels": 1 + 4 + 8}
    assert epoch_tokens(_config("dcn", 2), lengths) is None
