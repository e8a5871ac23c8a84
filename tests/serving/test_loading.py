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
    CheckpointMismatch,
    checkpoint_path,
    load_model_for_inference,
    prepared_data_of,
    resolve_model_config,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]


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


@pytest.mark.slow
def test_a_run_loads_from_another_directory_with_its_data_found_from_the_launch_root(tiny_run, tmp_path, monkeypatch):
    """What `dfgr eval` / `dfgr export` do from anywhere: the run's data paths read relative to where it
    was launched; a root without its data config is one error naming the file (nothing is prepared)."""
    config = load_train_config(str(tiny_run / "config.yaml"))
    monkeypatch.chdir(tmp_path)
    data = prepared_data_of(config, str(ROOT))
    model = load_model_for_inference(resolve_model_config(config, data), str(tiny_run / "best"))
    metrics = _metrics(model, data, "test", config.data.max_seq_len, config.data.user_id, limit=2)
    assert set(metrics) == set(data.tasks)
    with pytest.raises(FileNotFoundError, match="configs/data/kuairand-sample.yaml: no such config file"):
        prepared_data_of(config, str(tmp_path))


def test_a_checkpoint_saved_before_the_token_merge_moved_still_loads(tmp_path):
    """DFGR's placeholder action and concat projection were ``embedding.*`` weights before they moved
    to its token merge (``tokens.*``): such a checkpoint loads into the model of today."""
    import torch.distributed.checkpoint as dcp

    from dfgr_torchrec.config import InteractionConfig, RankingModelConfig, SequenceEmbeddingConfig, TaskConfig
    from dfgr_torchrec.models import build_model
    from dfgr_torchrec.serving.loading import load_weights

    config = RankingModelConfig(
        embeddings=SequenceEmbeddingConfig(item_vocab_size=20, embedding_dim=8),
        interaction=InteractionConfig(d_model=8, num_layers=1, num_heads=1, attention_dim=4, linear_dim=4),
        tasks=[TaskConfig("a")],
    )
    torch.manual_seed(0)
    saved = build_model(config)
    old = {
        name.replace("tokens.", "embedding.", 1) if name.startswith("tokens.") else name: tensor
        for name, tensor in saved.state_dict().items()
    }
    assert "embedding.placeholder.weight" in old and "embedding.merge_projection.weight" in old
    dcp.save({"model": old}, checkpoint_id=str(tmp_path / "step-1"), no_dist=True)
    loaded = load_weights(build_model(config), str(tmp_path / "step-1"))
    for name, tensor in saved.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, atol=0, rtol=0)
