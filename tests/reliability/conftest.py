"""Helpers for the reliability tests: the `dfgr` command and torchrun as a user runs them, and one
small trained run (4 steps, checkpoints at 2 and 4) that the tests copy and damage."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
DEBUG = "configs/train/debug.yaml"
SMALL = ["train.max_steps=4", "data.batch_size=8", "checkpoint.every_steps=2", "train.log_every=1", "eval.test=false"]
needs_data = pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent")


def env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def dfgr(*args, timeout=300):
    cmd = [sys.executable, "-m", "dfgr_torchrec.cli", *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)


def torchrun(*args, nproc=2, timeout=300):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "dfgr_torchrec.recipes.train", *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)


def clean_error(result, *words):
    """A refusal: non-zero exit, one message naming ``words``, no traceback."""
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for word in words:
        assert str(word) in result.stderr, (word, result.stderr[-2000:])


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One trained run (``<out>/debug``, checkpoints step-2 and step-4) and its `dfgr train` result."""
    if not SHARED.exists():
        pytest.skip("../shared/data is absent")
    out = tmp_path_factory.mktemp("trained")
    result = dfgr("train", "--config", DEBUG, f"output_dir={out}", *SMALL)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


@pytest.fixture
def run_copy(trained, tmp_path):
    """A copy of the trained run to damage: ``(output_dir, run_dir)``."""
    out = tmp_path / "out"
    shutil.copytree(trained[0], out)
    return out, out / "debug"
