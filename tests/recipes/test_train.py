"""The training recipe for real: torchrun with 2 gloo processes, checkpoints, a crash and a resume."""

import json
import os
import pathlib
import subprocess

import pytest

from tests.processes import recipe_torchrun

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent")

COMMON = ["checkpoint.every_steps=5", "checkpoint.keep=2", "train.epochs=2", "data.num_workers=0"]


def _torchrun(out, *extra, nproc=2, env_extra=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    cmd = recipe_torchrun("--config", "configs/train/debug.yaml", f"output_dir={out}", *COMMON, *extra, nproc=nproc)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _metrics(out):
    return json.loads((pathlib.Path(out) / "debug" / "metrics_final.json").read_text())["tasks"]


# A resumed run matches an uninterrupted one to float precision, on one rank and on two (the two
# drifted apart by 1e-2 while the data-parallel replicas did not average their gradients).
TOLERANCE = 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_killed_run_resumes_to_the_same_metrics(tmp_path, nproc):
    straight = _torchrun(tmp_path / "straight", nproc=nproc)
    assert straight.returncode == 0, straight.stderr[-3000:]

    crashed = _torchrun(tmp_path / "crashed", "testing.crash_at_step=13", nproc=nproc)
    assert crashed.returncode != 0 and "simulated crash at step 13" in crashed.stderr + crashed.stdout
    checkpoints = sorted(os.listdir(tmp_path / "crashed" / "debug" / "checkpoints"))
    assert checkpoints == ["step-10", "step-5"]  # keep=2, and no half-written one

    resumed = _torchrun(tmp_path / "crashed", "--resume", nproc=nproc)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "step 10" in resumed.stdout

    a, b = _metrics(tmp_path / "straight"), _metrics(tmp_path / "crashed")
    for task in a:
        for metric in ("auc", "gauc", "logloss"):
            assert a[task][metric] == pytest.approx(b[task][metric], abs=TOLERANCE), (task, metric)

    # a different world size cannot continue the run exactly: a clear error, not a wrong resume
    other = _torchrun(tmp_path / "crashed", "--resume", nproc=3 - nproc)
    assert other.returncode != 0
    assert f"written by {nproc} processes and this run has {3 - nproc}" in other.stderr + other.stdout
