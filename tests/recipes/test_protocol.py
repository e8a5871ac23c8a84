"""The evaluation protocol: select on validation, stop early, read the test split once, at the end."""

import json
import pathlib

import pytest

from dfgr_torchrec.data.dataset import SequenceDataset
from dfgr_torchrec.recipes.config import load_train_config
from dfgr_torchrec.recipes.train import TrainRecipe

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not (ROOT.parent / "shared" / "data").exists(), reason="../shared/data is absent")


def _run(tmp_path, monkeypatch, *overrides):
    reads = []  # (split, step) of every batch the recipe builds, in order
    original = SequenceDataset.make_batch

    def recording(self, users):
        reads.append((self.split, recipe.state.step))
        return original(self, users)

    monkeypatch.setattr(SequenceDataset, "make_batch", recording)
    config = load_train_config(str(ROOT / "configs/train/debug.yaml"), [f"output_dir={tmp_path}", *overrides])
    recipe = TrainRecipe(config)
    try:
        recipe.setup()
        recipe.train()
    finally:
        recipe.cleanup()
    return reads, json.loads((tmp_path / "debug" / "metrics_final.json").read_text())


def test_test_split_is_read_once_after_training_and_validation(tmp_path, monkeypatch):
    reads, final = _run(tmp_path, monkeypatch, "eval.every_steps=10", "train.epochs=2")
    splits = [split for split, _ in reads]
    first_test = splits.index("test")
    assert set(splits[first_test:]) == {"test"}  # nothing after it but the test batches themselves
    assert {"train", "valid"} <= set(splits[:first_test])
    assert len({step for split, step in reads if split == "test"}) == 1  # one evaluation
    history = final["selection"]["history"]
    assert [h["step"] for h in history] == [10, 20, 30, 40, 42]  # every 10 steps, and the final weights
    best = max(history, key=lambda h: h["score"])
    assert final["selected_step"] == best["step"] and final["valid"]["split"] == "valid"
    assert final["selection"]["score"] == pytest.approx(
        sum(m["auc"] for m in final["valid"]["tasks"].values()) / len(final["valid"]["tasks"])
    )


def test_patience_stops_training_early(tmp_path, monkeypatch):
    # min_delta 1.0 makes every validation after the first a miss: patience 2 stops at the third
    reads, final = _run(tmp_path, monkeypatch, "eval.every_steps=5", "eval.patience=2", "eval.min_delta=1.0")
    assert [h["step"] for h in final["selection"]["history"]] == [5, 10, 15]
    assert max(step for split, step in reads if split == "train") <= 15 and final["selected_step"] == 5
