"""Cluster dry runs of the train component: what Slurm and Kubernetes would be asked for (offline).

The Kubernetes test needs the `kubernetes` client package (TorchX's kubernetes extra, pinned in
requirements/dev.lock.txt; skipped outside this venv without it). Neither needs a Docker daemon: no workspace is built (``--workspace ""``).
"""

import pathlib
import sys

import pytest
import torchx.specs as specs
from torchx.runner import get_runner

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "launch"))
import dfgr as components  # noqa: E402

CONFIG = "configs/train/dfgr_movielens.yaml"


@pytest.fixture(scope="module")
def runner():
    with get_runner() as r:
        yield r


def test_resources_are_sized_from_the_gpus():
    assert components.node_resources("2x8", gpu=8) == (64, 512 * 1024)
    assert components.node_resources("1x2", gpu=0) == (4, 8192)
    assert components.node_resources("4x16", gpu=16) == (components.MAX_CPUS, components.MAX_MEM_MB)
    assert components.node_resources("2x8", gpu=8, cpu=32, memMB=1000) == (32, 1000)


def test_named_resource_wins():
    role = components.train(config=CONFIG, j="2x8", gpu=8, cpu=4, h="aws_p4d.24xlarge").roles[0]
    assert role.resource == specs.resource(h="aws_p4d.24xlarge")
    assert (role.resource.cpu, role.resource.gpu) == (96, 8)


def test_slurm_dryrun(runner):
    app = components.train(config=CONFIG, j="2x8", gpu=8, max_retries=3)
    script = runner.dryrun(app, "slurm", cfg={}).request.materialize()
    jobs = [line for line in script.splitlines() if line.startswith("#SBATCH --job-name")]
    assert len(jobs) == 2  # one het-job group per node
    assert all("--cpus-per-task=64 --mem=524288 --gpus-per-task=8" in line for line in jobs)
    assert "--nnodes 2 --nproc_per_node 8" in script
    assert "--rdzv_endpoint ${SLURM_JOB_NODELIST_HET_GROUP_0:=localhost}:29500" in script
    assert "--resume checkpoint.resume=auto" in script and "TORCHX_MAX_RETRIES=3" in script


def test_kubernetes_dryrun(runner):
    pytest.importorskip("kubernetes")
    app = components.train(config=CONFIG, j="2x8", gpu=8, image="registry.example/dfgr:0.1")
    job = runner.dryrun(app, "kubernetes", cfg={"queue": "default"}, workspace=None).request.resource
    tasks = job["spec"]["tasks"]
    assert len(tasks) == 2 and job["spec"]["queue"] == "default"
    for i, task in enumerate(tasks):
        container = task["template"].spec.containers[0]
        assert container.image == "registry.example/dfgr:0.1"
        limits = container.resources.limits
        assert (limits["cpu"], limits["memory"], limits["nvidia.com/gpu"]) == ("64000m", "524288M", "8")
        command = " ".join(container.command)
        assert "--nnodes 2 --nproc_per_node 8" in command and "--resume checkpoint.resume=auto" in command
        host = "TORCHX_RANK0_HOST" if i == 0 else "VC_TRAIN_0_HOSTS"
        assert f"--rdzv_endpoint ${{{host}:=localhost}}:29500" in command


SHARED = "type=bind,src=/shared/dfgr,dst=/shared/dfgr".split(",")  # what `--mounts type=bind,...` parses to


def test_cluster_defaults_retry_and_resume():
    role = components.train(config=CONFIG, j="2x8", gpu=8).roles[0]
    assert role.max_retries == 1  # a lost node restarts the job, which resumes
    assert (
        "--max_restarts 0" in role.args[-1]
        and "--resume" in role.args[-1]
        and "checkpoint.resume=auto" in role.args[-1]
    )


def test_slurm_dryrun_takes_partition_time_and_shared_storage(runner):
    app = components.train(config=CONFIG, j="2x8", gpu=8, mounts=SHARED)
    script = runner.dryrun(app, "slurm", cfg={"partition": "gpu", "time": "1-00:00:00"}).request.materialize()
    assert "--partition=gpu" in script and "--time=1-00:00:00" in script
    assert "--requeue" in script and "scontrol requeue" in script  # max_retries: Slurm requeues the job


def test_kubernetes_dryrun_takes_namespace_service_account_and_mounts(runner):
    pytest.importorskip("kubernetes")
    app = components.train(config=CONFIG, j="2x8", gpu=8, image="registry.example/dfgr:0.1", mounts=SHARED)
    cfg = {"queue": "default", "namespace": "recsys", "service_account": "dfgr-trainer"}
    job = runner.dryrun(app, "kubernetes", cfg=cfg, workspace=None).request.resource  # namespace: of the API call
    for task in job["spec"]["tasks"]:
        spec = task["template"].spec
        assert spec.service_account_name == "dfgr-trainer"
        mounts = {m.mount_path for m in spec.containers[0].volume_mounts}
        assert "/shared/dfgr" in mounts
        assert any(v.host_path is not None and v.host_path.path == "/shared/dfgr" for v in spec.volumes)


def test_the_component_finds_torchrun_beside_its_interpreter(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # the venv not activated: no torchrun on PATH
    command = components.train(config=CONFIG, j="1x2").roles[0].args[-1]
    assert command.startswith(
        f'PATH={pathlib.Path(sys.executable).parent}:"$PATH" python -m dfgr_torchrec.training.torchrun '
    )
    monkeypatch.setattr(components.sys, "executable", str(tmp_path / "python"))
    with pytest.raises(ValueError, match="torchrun is neither on PATH nor beside .*activate the project's environment"):
        components.train(config=CONFIG, j="1x2")
