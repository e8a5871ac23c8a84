"""Evaluation is collective-safe: ranks holding different numbers of users finish together."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not (ROOT.parent / "shared" / "data").exists(), reason="../shared/data is absent")


def _train(out, *overrides, nproc):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "dfgr_torchrec.recipes.train", "--config", "configs/train/debug.yaml",
           "data.config=configs/data/taobao-sample.yaml", "train.epochs=1", f"output_dir={out}", *overrides]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_uneven_evaluation_split_finishes_on_two_ranks(tmp_path):
    # The Taobao sample has 43 users with test candidates: 22 and 21 per rank, so with 21 users per
    # batch rank 0 holds 2 batches and rank 1 one. Before padding this hung in the sharded lookup.
    two = _train(tmp_path / "two", "data.eval_batch_size=21", nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    one = _train(tmp_path / "one", "data.eval_batch_size=21", nproc=1)
    assert one.returncode == 0, one.stderr[-3000:]
    metrics = [json.loads((tmp_path / n / "debug" / "metrics_final.json").read_text()) for n in ("two", "one")]
    assert metrics[0]["candidates"] == metrics[1]["candidates"] > 0  # every candidate scored once, none twice
