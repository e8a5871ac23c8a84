"""Study configs: grid or listed points, errors that name the key."""

import dataclasses
import glob
import json
import os
import pathlib

import pytest
import torch

from dfgr_torchrec.config import TaskConfig
from dfgr_torchrec.study.config import StudyConfig, load_study_config

ROOT = pathlib.Path(__file__).resolve().parents[2]

DATASETS = {"kuairand": {"dfgr": "configs/train/debug.yaml"}}


def test_a_grid_is_crossed_and_points_are_taken_as_listed():
    grid = StudyConfig(name="g", datasets=DATASETS, grid={"optim.lr": [1, 2], "train.epochs": [3, 4]})
    assert len(grid.grid_points()) == 4 and {"optim.lr": 2, "train.epochs": 3} in grid.grid_points()
    points = [{"optim.lr": 0.001}, {"optim.lr": 0.003, "model.embeddings.dropout": 0.2}]
    assert StudyConfig(name="p", datasets=DATASETS, points=points).grid_points() == points
    assert StudyConfig(name="none", datasets=DATASETS).grid_points() == [{}]


def test_variants_keep_their_order_and_default_to_one_empty_variant():
    variants = {"user_id": {"data.user_id": True}, "no_user_id": {"data.user_id": False}}
    config = StudyConfig(name="v", datasets=DATASETS, variants=variants)
    assert config.variant_list() == [("user_id", {"data.user_id": True}), ("no_user_id", {"data.user_id": False})]
    assert StudyConfig(name="none", datasets=DATASETS).variant_list() == [("", {})]


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"grid": {"optim.lr": [1]}, "points": [{"optim.lr": 1}]}, "points"),
        ({"points": ["optim.lr=1"]}, r"points\[0\]"),
        ({"grid": {"optim.lr": []}}, r"grid\.optim\.lr"),
        ({"variants": {"no user": {"data.user_id": False}}}, r"variants\.no user"),
        ({"variants": {"no_user_id": {}}}, r"variants\.no_user_id"),
        ({"variants": ["data.user_id=false"]}, "variants"),
    ],
)
def test_bad_study_configs_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        StudyConfig(name="bad", datasets=DATASETS, **kwargs)


@pytest.mark.parametrize("path", sorted(glob.glob(str(ROOT / "configs/study/*.yaml"))), ids=os.path.basename)
def test_every_run_of_the_shipped_studies_builds_a_valid_training_config(path, monkeypatch):
    """Each (data set, model) entry with every point and variant loads and passes the model checks
    (e.g. no bias terms on a model without them), so a study never fails hours in."""
    from dfgr_torchrec.models import build_model
    from dfgr_torchrec.recipes.config import load_train_config

    monkeypatch.chdir(ROOT)  # the studies name configs relative to the repository
    config = load_study_config(path)
    for run in config.model_runs():
        for point in config.grid_points():
            for _, variant in config.variant_list():
                params = [f"{k}={json.dumps(v)}" for k, v in {**point, **variant}.items()]
                train = load_train_config(run.config, [*run.overrides, *params])
                model = dataclasses.replace(
                    train.model,
                    embeddings=dataclasses.replace(
                        train.model.embeddings,
                        item_vocab_size=10,
                        user_vocab_sizes={"user_id": 3} if train.data.user_id else {},
                    ),
                )
                model.tasks = model.tasks or [TaskConfig("click")]
                build_model(model, device=torch.device("meta"))
