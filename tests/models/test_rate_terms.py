"""``model.rate_terms``: logreg's rate features through a learned per-task linear term in DFGR's logits."""

import json
import pathlib

import numpy as np
import pytest
import torch

from dfgr_torchrec.config import (
    HistoryMaskConfig,
    InteractionConfig,
    LogRegModelConfig,
    RankingModelConfig,
    SequenceEmbeddingConfig,
    from_dict,
    model_config,
)
from dfgr_torchrec.data.config import DataConfig
from dfgr_torchrec.data.dataset import PreparedData, SequenceDataset
from dfgr_torchrec.data.prepare import prepare
from dfgr_torchrec.models import build_model
from dfgr_torchrec.serving.export import export_run
from dfgr_torchrec.serving.ranker import Ranker
from dfgr_torchrec.serving.replay import evaluate, replay
from tests.data.conftest import write_config
from tests.models.test_logreg import _planted_log
from tests.processes import train_then_eval_only

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("planted_rates")
    config = write_config(tmp, _planted_log(tmp / "log.tsv"), split={"valid_per_user": 3, "test_per_user": 5})
    return PreparedData(prepare(from_dict(DataConfig, config), progress=False))


def _model(data, kind="dfgr", rate_terms=True):
    if kind == "logreg":
        return build_model(
            LogRegModelConfig(interaction=HistoryMaskConfig(mask_mode="session")),
            data.schema(),
            data=data,
        )
    interaction = InteractionConfig(mask_mode="session", d_model=16, num_layers=1, num_heads=1, attention_dim=8)
    embeddings = SequenceEmbeddingConfig(embedding_dim=16)
    config = RankingModelConfig(
        type=kind, embeddings=embeddings, interaction=interaction, rate_terms=rate_terms, bias_terms=True
    )
    return build_model(config, data.schema(), data=data)


def _batch(data, split):
    dataset = SequenceDataset(data, split, batch_size=64, max_seq_len=200, shuffle=False)
    return dataset.make_batch(dataset.batch_users()[0])


def test_the_terms_score_candidates_on_logregs_features_and_add_to_dfgrs_logits(planted):
    torch.manual_seed(0)
    model = _model(planted).eval()
    logreg = _model(planted, kind="logreg").eval()
    batch = _batch(planted, "valid")
    with torch.no_grad():
        assert torch.equal(model.rate_terms.features(batch, candidates=True), logreg.features(batch, candidates=True))
        got = model.score_candidates(batch).values()
        terms = model.rate_terms(batch, candidates=True)
        model.rate_terms = None  # the same model without the terms: the logits differ by exactly them
        assert torch.allclose(got - terms, model.score_candidates(batch).values(), atol=1e-5)


def test_the_terms_read_no_item_rate(planted):
    """A training row's item rate would give its label away next to the item's table row."""
    torch.manual_seed(0)
    model = _model(planted)
    batch = _batch(planted, "train")
    x = model.rate_terms.features(batch)
    t = model.rate_terms.num_tasks
    with torch.no_grad():
        before = model.rate_terms(batch, candidates=False)
        model.rate_terms.features.rates.positives.mul_(0.5)  # every item rate changes, nothing else
        assert not torch.equal(model.rate_terms.features(batch)[:, :t], x[:, :t])
        assert torch.equal(model.rate_terms(batch, candidates=False), before)


@pytest.mark.parametrize("kind", ["dfgr", "metagr"])
def test_training_reads_the_terms_of_every_history_row_and_trains_them(planted, kind):
    torch.manual_seed(0)
    model = _model(planted, kind=kind)
    batch = _batch(planted, "train")
    out = model(batch)
    assert out.logits.shape == batch.labels.shape
    out.loss.backward()
    assert model.rate_terms.weight.grad is not None and model.rate_terms.weight.grad.abs().sum() > 0


def test_without_the_option_nothing_changes(planted):
    model = _model(planted, rate_terms=False)
    assert model.rate_terms is None and not any("rate_terms" in name for name, _ in model.named_parameters())


def test_only_the_sequence_models_take_it():
    with pytest.raises(ValueError, match="rate_terms"):
        model_config("dcn", rate_terms=True)
    with pytest.raises(ValueError, match="rate_terms"):
        RankingModelConfig(rate_terms="yes")


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent")
@pytest.mark.parametrize("flag", ["rate_terms", "rate_offset"])  # the offset: tests/models/test_rate_offset.py
def test_it_trains_evaluates_and_serves_through_the_recipe_on_two_processes(tmp_path, flag, monkeypatch):
    """Trained by the recipe; exported, its test split replayed as raw-id requests and scored by the
    Ranker, it reproduces the recipe's test metrics (the counts, the fit, the history's labels)."""
    overrides = [f"output_dir={tmp_path}", f"model.{flag}=true", "model.interaction.mask_mode=session"]
    overrides += ["data.num_workers=0", "train.epochs=1"]
    final = train_then_eval_only(["--config", "configs/train/debug.yaml", *overrides], tmp_path / "debug", ROOT)
    mean_auc = np.mean([t["auc"] for t in final["tasks"].values()])
    assert mean_auc > 0.75, mean_auc  # the fitted start already scores as logreg does

    monkeypatch.chdir(ROOT)  # the config names its data set relative to the repository
    out = export_run("configs/train/debug.yaml", str(tmp_path / "artifact"), overrides, compile=False)
    data = PreparedData(json.loads((pathlib.Path(out) / "artifact.json").read_text())["source"]["data"])
    pairs = list(replay(data, "test", max_seq_len=64))
    results, errors = Ranker.load(out, compiled=False).score_lines([request for request, _ in pairs])
    assert errors == [] and len(results) == len(pairs)
    scores, labels = tmp_path / "scores.jsonl", tmp_path / "labels.jsonl"
    scores.write_text("".join(json.dumps(r) + "\n" for r in results))
    labels.write_text("".join(json.dumps(lab) + "\n" for _, lab in pairs))
    served = evaluate(str(scores), str(labels), list(final["tasks"]))
    for task, metrics in final["tasks"].items():
        assert served[task]["auc"] == pytest.approx(metrics["auc"], abs=1e-5), task
