"""``model.rate_offset``: logreg's closed-form logits as a frozen offset, DFGR learning the residual."""

import pytest
import torch
import torch.distributed as dist

from dfgr_torchrec.config import InteractionConfig, RankingModelConfig, SequenceEmbeddingConfig, model_config
from dfgr_torchrec.distributed.sharding import shard_model
from dfgr_torchrec.models import build_model
from dfgr_torchrec.models.rates import RateOffset
from dfgr_torchrec.modules.heads import MultiTaskHead, ZeroLinear
from tests.models.test_rate_terms import _batch, _model, planted  # noqa: F401 (planted: the fixture)


def _offset_model(data, kind="dfgr", device=None):
    interaction = InteractionConfig(mask_mode="session", d_model=16, num_layers=1, num_heads=1, attention_dim=8)
    config = RankingModelConfig(
        type=kind, embeddings=SequenceEmbeddingConfig(embedding_dim=16), interaction=interaction, rate_offset=True
    )
    return build_model(config, data.schema(), data=data, device=device)


@pytest.mark.parametrize("kind", ["dfgr", "metagr"])
def test_an_untrained_model_scores_exactly_as_the_fitted_floor(planted, kind):  # noqa: F811
    """The head's output layer starts at zero, so the logits are logreg's closed-form fit, on the
    candidates and on the (leave-one-out) training rows alike."""
    torch.manual_seed(0)
    model = _offset_model(planted, kind).eval()
    logreg = _model(planted, kind="logreg").eval()
    with torch.no_grad():
        for split, score in (("valid", "score_candidates"), ("train", None)):
            batch = _batch(planted, split)
            if score:
                got, floor = model.score_candidates(batch).values(), logreg.score_candidates(batch).values()
            else:
                got, floor = model(batch).logits, logreg(batch).logits
            torch.testing.assert_close(got, floor, rtol=0, atol=1e-5)


def test_the_offset_is_frozen_and_the_residual_trains(planted):  # noqa: F811
    torch.manual_seed(0)
    model = _offset_model(planted)
    assert not any("rate_offset" in name for name, _ in model.named_parameters())
    assert not any("rate_offset" in key for key in model.state_dict())  # recomputed from the data, never loaded
    fitted = [t.clone() for t in model.rate_offset.fitted]
    model(_batch(planted, "train")).loss.backward()
    output = model.head.mlp[-1]
    assert isinstance(output, ZeroLinear) and output.weight.grad.abs().sum() > 0
    assert all(torch.equal(a, b) for a, b in zip(fitted, model.rate_offset.fitted))


def test_the_output_layer_is_zero_after_distributed_model_parallel_allocates_it(planted, tmp_path):  # noqa: F811
    """DMP allocates a meta model's parameters and calls each layer's ``reset_parameters``."""
    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        model = _offset_model(planted, device=torch.device("meta"))
        dmp = shard_model(model, {"item": "row_wise", "action": "table_wise"}, torch.device("cpu"))
        output = dmp.module.head.mlp[-1]
        assert torch.count_nonzero(output.weight) == 0 and torch.count_nonzero(output.bias) == 0
        assert torch.count_nonzero(dmp.module.head.mlp[0].weight) > 0  # the hidden layers keep their init
        logreg = _model(planted, kind="logreg").eval()
        batch = _batch(planted, "valid")
        with torch.no_grad():
            got = dmp.module.eval().score_candidates(batch).values()
            torch.testing.assert_close(got, logreg.score_candidates(batch).values(), rtol=0, atol=1e-5)
    finally:
        dist.destroy_process_group()


def test_without_the_option_the_head_starts_as_it_always_has():
    torch.manual_seed(0)
    plain = MultiTaskHead(8, 2, [4])
    torch.manual_seed(0)
    zero = MultiTaskHead(8, 2, [4], zero_output=True)
    assert type(plain.mlp[-1]) is torch.nn.Linear and torch.count_nonzero(plain.mlp[-1].weight) > 0
    assert torch.equal(plain.mlp[0].weight, zero.mlp[0].weight)  # the same draws before the output layer
    towers = MultiTaskHead(8, 3, [4], per_task=True, zero_output=True)
    assert all(torch.count_nonzero(tower[-1].weight) == 0 for tower in towers.towers)


def test_an_unfitted_offset_says_how_to_build_it(planted):  # noqa: F811
    with pytest.raises(RuntimeError, match="build_model"):
        RateOffset(num_tasks=1, prior=10.0, session=True)(_batch(planted, "valid"), candidates=True)


def test_the_config_takes_it_on_the_sequence_models_only_and_not_beside_the_terms():
    with pytest.raises(ValueError, match="^model.rate_offset: not read by model type 'dcn'"):
        model_config("dcn", rate_offset=True)
    with pytest.raises(ValueError, match="^rate_offset: expected false when rate_terms is true"):
        RankingModelConfig(rate_terms=True, rate_offset=True)
    with pytest.raises(ValueError, match="^rate_offset: expected true or false"):
        RankingModelConfig(rate_offset="yes")
