"""More than one node, on one machine: two torchrun agents joined by a c10d rendezvous on loopback.

* ``-j 2x1`` through ``torchx run -s local_cwd`` (two agents, one process each) trains the debug
  config, the item table row-wise across both nodes, to the test metrics of ``-j 1x2``;
* a lost node: the component's own torchrun command runs as two agents; one node (its agent and
  its worker) is killed with SIGKILL mid-run; the survivor's collective fails and the job ends in
  seconds; the scheduler's retry (the component's ``max_retries``, done here by the test) starts
  both nodes again and they resume from the last intact checkpoint to the uninterrupted metrics.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest
import torchx.specs as specs

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "launch"))
import dfgr as components  # noqa: E402

from dfgr_torchrec.training.safe_dcp import metadata  # noqa: E402
from tests.processes import process_tree, wait_for  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (ROOT.parent / "shared" / "data").exists(), reason="../shared/data is absent"),
]
DEBUG = "configs/train/debug.yaml"
RUN = ["train.max_steps=8", "data.batch_size=8", "checkpoint.every_steps=2", "eval.every_steps=4"]
TOLERANCE = 1e-5


def _env():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PATH"] = f"{pathlib.Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchx(out, j, *overrides):
    torchx = pathlib.Path(sys.executable).parent / "torchx"
    cmd = [
        str(torchx),
        "run",
        "-s",
        "local_cwd",
        "-cfg",
        f"log_dir={out}/torchx",
        "--wait",
        "--log",
        "./launch/dfgr.py:train",
        "--config",
        DEBUG,
        "-j",
        j,
        "--rdzv_port",
        str(_free_port()),
        f"output_dir={out}",
        *RUN,
        *overrides,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "SUCCEEDED" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
    return out / "debug"


def _test_metrics(run):
    final = json.loads((run / "metrics_final.json").read_text())
    return {task: {m: final["tasks"][task][m] for m in ("auc", "gauc", "logloss")} for task in final["tasks"]}


def _assert_same(a, b):
    for task in a:
        for metric, value in a[task].items():
            assert value == pytest.approx(b[task][metric], abs=TOLERANCE), (task, metric)


@pytest.fixture(scope="module")
def one_node(tmp_path_factory):
    """``-j 1x2`` through TorchX: its test metrics (and the log's memory of both ranks)."""
    run = _torchx(tmp_path_factory.mktemp("one_node"), "1x2")
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert len(log[-1]["peak_memory_mb_per_rank"]) == 2 and log[-1]["peak_memory_mb"] == max(
        log[-1]["peak_memory_mb_per_rank"]
    )
    return _test_metrics(run)


def test_two_nodes_train_to_the_metrics_of_one(one_node, tmp_path):
    run = _torchx(tmp_path, "2x1")
    item = metadata(str(run / "checkpoints" / "step-8")).state_dict_metadata
    chunks = item["model.embedding.collection.embeddings.item.weight"].chunks
    assert len(chunks) == 2  # the item table row-wise across the two nodes' ranks
    _assert_same(one_node, _test_metrics(run))


def _node_command(out, port, node, attempt):
    """The component's torchrun command for ``node`` of a 2x1 job, its TorchX macros filled in."""
    app = components.train(
        *RUN,
        f"output_dir={out}",
        "testing.stall_at_step=5",
        "train.collective_timeout_s=300",
        config=DEBUG,
        j="2x1",
        rdzv_port=port,
    )
    role = specs.macros.Values(
        img_root=str(ROOT), app_id=f"lost-node-{attempt}", replica_id=str(node), rank0_env="TORCHX_RANK0_HOST"
    ).apply(app.roles[0])
    return [role.entrypoint, *role.args], {**_env(), **role.env, "TORCHX_RANK0_HOST": "127.0.0.1"}


def _start_job(out, port, log, attempt):
    """Both nodes of one attempt; node 0 first, so it hosts the rendezvous as a job's first node does."""
    nodes = []
    for node in (0, 1):
        cmd, env = _node_command(out, port, node, attempt)
        nodes.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        time.sleep(3 if node == 0 else 0)
    return nodes


def _kill_node(node):
    for pid in process_tree(node.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_lost_node_fails_the_job_and_the_retry_resumes_to_the_same_metrics(one_node, tmp_path):
    port, run = _free_port(), tmp_path / "debug"
    log = open(tmp_path / "nodes.log", "w")
    nodes = _start_job(tmp_path, port, log, attempt=0)
    try:
        wait_for(lambda: (run / "checkpoints" / "step-4").exists(), 300, "the step-4 checkpoint")
        time.sleep(2)  # step 5: the last rank sleeps (testing.stall_at_step), the other waits on it
        _kill_node(nodes[1])  # node 1 is lost: its agent and its worker
        assert nodes[0].wait(120) != 0  # the survivor's collective fails: the job fails, in seconds
        nodes = _start_job(tmp_path, port, log, attempt=1)  # the scheduler's retry (max_retries)
        for node in nodes:
            assert node.wait(600) == 0, (tmp_path / "nodes.log").read_text()[-4000:]
    finally:
        for node in nodes:
            _kill_node(node)
        log.close()
    output = (tmp_path / "nodes.log").read_text()
    assert f"resumed from {run / 'checkpoints' / 'step-4'}" in output, output[-4000:]
    _assert_same(one_node, _test_metrics(run))
