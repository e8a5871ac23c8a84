"""Fixtures: a tiny prepared data set (hash OOV, a side feature, two tasks), one with an action feature, and a tiny trained run."""

import os
import pathlib
import subprocess

import pytest

from dfgr_torchrec.data.config import DataConfig, from_dict
from dfgr_torchrec.data.prepare import prepare
from tests.processes import recipe_torchrun

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"

# user, item, time, category, click, like, rating; c7 / z only appear late (validation / test)
ROWS = [
    ("a", "x", 1, "c1", 1, 0, 3),
    ("a", "y", 2, "c2", 1, 1, 5),
    ("a", "z", 3, "c7", 0, 0, 1),
    ("a", "q", 4, "c1", 1, 1, 4),
    ("b", "y", 1, "c2", 0, 0, 2),
    ("b", "x", 2, "c1", 1, 1, 4),
    ("b", "w", 3, "c1", 1, 0, 3),
    ("b", "v", 9, "c9", 0, 1, 5),
    ("c", "q", 5, "c1", 1, 1, 5),
    ("c", "x", 6, "c1", 0, 0, 1),
    ("c", "y", 7, "c2", 1, 0, 3),
    ("c", "u", 8, "c3", 1, 1, 4),
]


def prepared_order():
    """The raw rows in prepared order: users by raw id, each chronological."""
    return sorted(ROWS, key=lambda r: (r[0], r[2]))


def prepare_tiny(tmp_path: pathlib.Path, **extra) -> str:
    log = tmp_path / "log.tsv"
    lines = ["u\ti\tt\tcat\tclick\tlike\trating"] + ["\t".join(map(str, r)) for r in ROWS]
    log.write_text("\n".join(lines) + "\n")
    config = {
        "name": "serving-tiny",
        "output_dir": str(tmp_path / "prepared"),
        "source": {
            "path": str(log),
            "format": "tsv",
            "columns": {"user": "u", "item": "i", "timestamp": "t"},
            "side_features": {"category": "cat"},
        },
        "actions": {"click": {"column": "click"}, "like": {"column": "like"}},
        "split": {"valid_per_user": 1, "test_per_user": 1},
        **extra,
    }
    return prepare(from_dict(DataConfig, config), progress=False)


@pytest.fixture
def hashed(tmp_path):
    """Prepared with ``vocab: {oov: hash, hash_buckets: 4}``, action = bitmask of click, like."""
    return prepare_tiny(tmp_path, vocab={"oov": "hash", "hash_buckets": 4})


@pytest.fixture
def with_action_feature(tmp_path):
    """Prepared with ``action_feature: rating`` (OOV row 0)."""
    return prepare_tiny(tmp_path, action_feature="rating")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The debug config trained for 4 steps by the real recipe with 2 gloo processes (tables sharded)."""
    if not SHARED.exists():
        pytest.skip("../shared/data is absent")
    out = tmp_path_factory.mktemp("serving-run")
    cmd = recipe_torchrun(
        "--config",
        "configs/train/debug.yaml",
        f"output_dir={out}",
        "train.max_steps=4",
        "data.batch_size=8",
        "eval.every_steps=2",
        "train.log_every=2",
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "debug"
