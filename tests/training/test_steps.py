"""TrainPipelineSparseDist, paused for validation inside an epoch, trains exactly like the plain loop."""

import json
import os
import pathlib
import subprocess

import pytest

from tests.processes import recipe_torchrun

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not (ROOT.parent / "shared" / "data").exists(), reason="../shared/data is absent")


def _train(out, pipeline):
    cmd = recipe_torchrun(
        "--config",
        "configs/train/debug.yaml",
        f"output_dir={out}",
        "eval.every_steps=5",
        "data.num_workers=0",
        f"train.pipeline={pipeline}",
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_mid_epoch_validation_keeps_the_sparse_dist_pipeline_in_step(tmp_path):
    # With an in-flight batch, re-attaching with a new input dist desynchronised the ranks' all-to-alls
    # (gloo: "in->size == out->size"); attaching to the batches already distributed keeps them in step.
    runs = {}
    for pipeline in ("sparse_dist", "base"):
        out = _train(tmp_path / pipeline, pipeline)
        assert out.returncode == 0, out.stderr[-3000:]
        log = (tmp_path / pipeline / "debug" / "train_log.jsonl").read_text().splitlines()
        final = json.loads((tmp_path / pipeline / "debug" / "metrics_final.json").read_text())
        runs[pipeline] = ([json.loads(line)["loss"] for line in log], final)
    (losses, final), (base_losses, base_final) = runs["sparse_dist"], runs["base"]
    assert len(final["selection"]["history"]) >= 4  # validations inside the epochs did run
    assert losses == pytest.approx(base_losses, abs=1e-4)
    assert final["tasks"]["like"]["auc"] == pytest.approx(base_final["tasks"]["like"]["auc"], abs=1e-3)
