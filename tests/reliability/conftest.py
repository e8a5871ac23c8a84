"""Helpers for the reliability tests: a small log and its data YAML, the `dfgr` command and torchrun
as a user runs them, and one small trained run (4 steps, checkpoints at 2 and 4) that the tests copy
and damage."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml

from dfgr_torchrec.cli import main
from tests.processes import recipe_torchrun

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
    cmd = recipe_torchrun(*args, nproc=nproc)
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


HEADER = "u\ti\tt\tclick"
ROWS = ["a\tx\t1\t1", "a\ty\t2\t0", "a\tz\t3\t1", "a\tw\t4\t0", "b\tx\t1\t0", "b\ty\t2\t1", "b\tz\t3\t0", "b\tw\t4\t1"]


def write_log(tmp_path, rows=ROWS, name="log.tsv") -> pathlib.Path:
    path = tmp_path / name
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def write_yaml(tmp_path, log, name="data.yaml", **sections) -> pathlib.Path:
    """A data YAML for ``log`` (columns u, i, t, click); ``sections`` replace or extend top-level keys."""
    config = {
        "name": "rel",
        "output_dir": str(tmp_path / "prepared"),
        "source": {"path": str(log), "format": "tsv", "columns": {"user": "u", "item": "i", "timestamp": "t"}},
        "actions": {"click": {"column": "click"}},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def run(capsys, *argv):
    """``(exit code, stdout, stderr)`` of ``dfgr <argv>``; an exception escaping ``main`` fails the test."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def prepare(capsys, config, *extra):
    return run(capsys, "data", "prepare", "--config", config, "--json", *extra)


def report_of(out: str) -> dict:
    """The report ``dfgr data prepare`` prints after its first line."""
    return json.loads(out[out.index("\n{") + 1 :])
