"""The TorchX components validate (as `torchx run ... --help` would) and really run on local_cwd."""

import os
import pathlib
import subprocess
import sys

import pytest
from torchx.components.component_test_base import ComponentTestCase

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "launch"))
import dfgr as components  # noqa: E402


class ComponentsValidate(ComponentTestCase):
    def test_demo(self):
        self.validate(components, "demo")

    def test_bench_attention(self):
        self.validate(components, "bench_attention")

    def test_train(self):
        self.validate(components, "train")

    def test_evaluate(self):
        self.validate(components, "evaluate")

    def test_study(self):
        self.validate(components, "study")


def test_train_app_is_a_ddp_job_of_the_recipe():
    app = components.train("optim.lr=0.01", config="configs/train/debug.yaml", j="2x4", max_retries=3)
    role = app.roles[0]
    assert role.num_replicas == 2 and role.max_retries == 3
    args = " ".join(role.args)
    assert "--nproc_per_node 4" in args and "-m dfgr_torchrec.recipes.train" in args
    assert "--config configs/train/debug.yaml --resume optim.lr=0.01" in args


def test_demo_app_runs_the_cli():
    app = components.demo(steps=3, models="dfgr")
    role = app.roles[0]
    assert role.args[:3] == ["-m", "dfgr_torchrec.cli", "demo"]
    assert role.args[-2:] == ["--steps", "3"] and "dfgr" in role.args


@pytest.mark.slow
def test_torchx_local_cwd_runs_the_demo(tmp_path):
    env = dict(os.environ)
    env["PATH"] = f"{pathlib.Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    torchx = pathlib.Path(sys.executable).parent / "torchx"
    proc = subprocess.run(
        [
            str(torchx),
            "run",
            "-s",
            "local_cwd",
            "--wait",
            "--log",
            "./launch/dfgr.py:demo",
            "--steps",
            "2",
            "--models",
            "dfgr",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "AUC like" in output, output[-3000:]


# training with 2 processes (and 2 nodes) through torchx local_cwd: tests/launch/test_nodes.py
