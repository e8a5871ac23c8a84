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


def test_a_study_config_composes_from_defaults_and_takes_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    (tmp_path / "mine.yaml").write_text(
        f"defaults: [{ROOT / 'configs/study/quick.yaml'}]\nname: mine\ngrid: {{optim.lr: [0.001, 0.003]}}\n"
    )
    config = load_study_config(str(tmp_path / "mine.yaml"), ["seeds=[0, 1]", "nproc=1"])
    assert (config.name, config.seeds, config.nproc) == ("mine", [0, 1], 1)
    assert config.grid == {"optim.lr": [0.001, 0.003]} and "dfgr" in config.datasets["kuairand"]  # the default's


@pytest.mark.parametrize(
    "override, message",
    [
        ("seeds=[a]", "seeds[0]: expected an integer, got 'a'"),
        ("nproc=0", "nproc: expected a positive integer, got 0"),
        ("common=[1]", "common[0]: expected a string, got 1"),
        ("datasets.kuairand.dfgr=configs/train/nowhere.yaml", "datasets.kuairand.dfgr: expected an existing training"),
        ("colour=red", "colour: unknown key"),
    ],
)
def test_a_study_type_error_names_the_file_and_the_key(override, message, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(ValueError) as error:
        load_study_config("configs/study/quick.yaml", [override])
    assert str(error.value).startswith(f"configs/study/quick.yaml: {message}"), str(error.value)


def test_dfgr_study_takes_overrides_and_reports_one_line(tmp_path, capsys, monkeypatch):
    from dfgr_torchrec.cli import main

    monkeypatch.chdir(ROOT)
    out = str(tmp_path / "out")
    for tail in (["nproc=0"], ["--only", "kuairand/*", "nproc=0"]):  # after --only too: an override, not a pattern
        assert main(["study", "--config", "configs/study/quick.yaml", "--out", out, *tail]) == 2
        err = capsys.readouterr().err
        assert err.strip() == "dfgr study: error: configs/study/quick.yaml: nproc: expected a positive integer, got 0"
    assert not (tmp_path / "out").exists()
