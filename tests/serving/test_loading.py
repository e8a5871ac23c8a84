"""Loading a sharded training run's DCP checkpoint into the unsharded model on CPU."""

import json
import os
import pathlib

import pytest
import torch

from dfgr_torchrec.data.config import load_data_config
from dfgr_torchrec.data.dataset import PreparedData, SequenceDataset
from dfgr_torchrec.data.prepare import find_prepared
from dfgr_torchrec.metrics import ranking_metrics
from dfgr_torchrec.recipes.config import load_train_config
from dfgr_torchrec.serving.loading import (
    CheckpointMismatch, checkpoint_path, load_model_for_inference, prepared_data_of, resolve_model_config,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
DEMO = pathlib.Path("/work/main/runs/demo-movielens")


def _metrics(model, data, split, max_seq_len, user_id, limit=None):
    dataset = SequenceDataset(data, split, 128, max_seq_len, user_id=user_id)
    logits, labels, users = [], [], []
    with torch.no_grad():
        for i, batch in enumerate(dataset):
            if limit is not None and i >= limit:
                break
            logits.append(model.score_candidates(batch).values())
            labels.append(batch.candidate_labels)
            users.append(batch.candidate_user_ids)
    return ranking_metrics(torch.cat(logits), torch.cat(labels), torch.cat(users), data.tasks)


@pytest.mark.slow
def test_unsharded_model_reproduces_the_recipes_test_metrics(tiny_run):
    config = load_train_config(str(tiny_run / "config.yaml"))
    data = PreparedData(find_prepared(load_data_config(str(ROOT / config.data.config))))
    model = load_model_for_inference(resolve_model_config(config, data), str(tiny_run / "best"))
    assert not model.training
    ours = _metrics(model, data, "test", config.data.max_seq_len, config.data.user_id)
    final = json.loads((tiny_run / "metrics_final.json").read_text())["tasks"]
    for task, metrics in final.items():
        for name in ("auc", "gauc", "logloss"):
            assert ours[task][name] == pytest.approx(metrics[name], abs=1e-6), (task, name)


@pytest.mark.slow
def test_mismatched_checkpoint_is_a_clear_error(tiny_run):
    config = load_train_config(str(tiny_run / "config.yaml"), ["model.head_hidden_dims=[16,8]"])
    data = PreparedData(find_prepared(load_data_config(str(ROOT / config.data.config))))
    with pytest.raises(CheckpointMismatch, match=r"missing from the checkpoint \['head.mlp.4.bias'"):
        load_model_for_inference(resolve_model_config(config, data), str(tiny_run / "best"))


@pytest.mark.slow
def test_checkpoint_path_finds_the_newest_step(tiny_run, tmp_path):
    best = checkpoint_path(str(tiny_run / "best"))
    assert os.path.basename(best).startswith("step-")
    with pytest.raises(FileNotFoundError, match="neither a DCP checkpoint"):
        checkpoint_path(str(tmp_path))


@pytest.mark.skipif(not (DEMO / "best").exists(), reason="no trained MovieLens-1M run at /work/main/runs/demo-movielens")
def test_demo_movielens_run_loads_unsharded():
    config = load_train_config(str(DEMO / "config.yaml"))
    try:
        data = prepared_data_of(config, str(DEMO.parents[1]))
    except FileNotFoundError as e:
        pytest.skip(f"the demo run's prepared MovieLens-1M data is absent: {e}")
    model = load_model_for_inference(resolve_model_config(config, data), str(DEMO / "best"))
    auc = _metrics(model, data, "test", config.data.max_seq_len, config.data.user_id, limit=4)["like"]["auc"]
    assert auc > 0.75  # the trained weights (an untrained model scores about 0.5)
