"""Preemption with 2 processes and real signals: SIGTERM to the torchrun agent (what a scheduler sends;
the agent forwards it to its workers) and SIGUSR1 to one worker rank (Slurm's ``--signal`` warning).
Every rank finishes its step, the ranks save one checkpoint together and the job exits 143 with one
line and no traceback; ``--resume`` then ends with the metrics of an uninterrupted run."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from dfgr_torchrec.errors import PREEMPTED_EXIT
from dfgr_torchrec.training.manifest import checkpoint_problem

from .conftest import DEBUG, ROOT, env, needs_data, torchrun

# checkpoint.every_steps=0 (an epoch, longer than the run): the preemption's is the only step checkpoint
RUN = [
    "--config",
    DEBUG,
    "train.max_steps=6",
    "data.batch_size=8",
    "train.log_every=1",
    "testing.wait_for_signal_at_step=3",
]
LAUNCH = [
    sys.executable,
    "-m",
    "dfgr_torchrec.training.torchrun",
    "--standalone",
    "--nproc_per_node=2",
    "-m",
    "dfgr_torchrec.recipes.train",
]
WAITING = "testing.wait_for_signal_at_step=3: waiting for a signal"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The test metrics of the same run, not interrupted (the hook waits only if a signal comes: none does)."""
    if not (ROOT.parent / "shared" / "data").exists():
        pytest.skip("../shared/data is absent")
    out = tmp_path_factory.mktemp("uninterrupted")
    result = torchrun(*RUN, f"output_dir={out}", "testing.wait_for_signal_at_step=0")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "debug" / "metrics_final.json").read_text())


def _preempt(out, target, sig):
    """Starts the run, waits until both ranks wait after step 3, sends ``sig`` to ``target(agent, pids)``;
    returns ``(exit status, stdout, stderr, seconds from the signal to the exit)``."""
    log = out.parent / f"{out.name}.stderr"
    with open(log, "w") as err:
        job = subprocess.Popen(
            [*LAUNCH, *RUN, f"output_dir={out}"], cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=err, text=True
        )
        deadline = time.monotonic() + 60
        pids = {}
        while len(pids) < 2:  # "rank R pid P: ...", wherever it lands among the other processes' output
            assert job.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
            pids = {
                int(r): int(p) for r, p in re.findall(r"rank (\d+) pid (\d+): " + re.escape(WAITING), log.read_text())
            }
        os.kill(target(job.pid, pids), sig)
        sent = time.monotonic()
        stdout, _ = job.communicate(timeout=60)
    return job.returncode, stdout, log.read_text(), time.monotonic() - sent


def _assert_preempted(out, status, stdout, stderr, seconds):
    run = out / "debug"
    assert status == PREEMPTED_EXIT, stderr[-3000:]
    assert f"preempted at step 3: checkpoint saved to {run / 'checkpoints' / 'step-3'}, resume with --resume" in stderr
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "step 3 epoch 0" in stdout and "step 4 epoch" not in stdout  # it finished step 3, then stopped
    assert seconds < 30  # train.preempt_grace_s (default)
    assert (
        os.listdir(run / "checkpoints") == ["step-3"]
        and checkpoint_problem(str(run / "checkpoints" / "step-3")) is None
    )
    assert not (run / "metrics_final.json").exists()  # nothing final: the run is not over


def _leaves(tree, path=""):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, f"{path}.{key}")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from _leaves(value, f"{path}[{i}]")
    else:
        yield path, tree


@pytest.mark.slow
@needs_data
def test_sigterm_to_the_agent_saves_one_checkpoint_exits_143_and_resume_ends_as_uninterrupted(tmp_path, uninterrupted):
    out = tmp_path / "out"
    status, stdout, stderr, seconds = _preempt(out, lambda agent, pids: agent, signal.SIGTERM)
    _assert_preempted(out, status, stdout, stderr, seconds)
    assert "torchrun: SIGTERM: the workers were told to save a checkpoint and stop; exiting with status 143" in stderr
    resumed = subprocess.run(
        [*LAUNCH, *RUN, f"output_dir={out}", "--resume"],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "epoch 0, step 3" in resumed.stdout
    final = json.loads((out / "debug" / "metrics_final.json").read_text())
    expected, got = dict(_leaves(uninterrupted)), dict(_leaves(final))
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, abs=1e-6), key
        else:
            assert got[key] == value, key


@pytest.mark.slow
@needs_data
def test_sigusr1_to_one_worker_stops_every_rank_after_the_same_step(tmp_path):
    out = tmp_path / "out"
    status, stdout, stderr, seconds = _preempt(out, lambda agent, pids: pids[1], signal.SIGUSR1)
    _assert_preempted(out, status, stdout, stderr, seconds)
    assert "(SIGUSR1;" not in stderr  # rank 0 was not signalled itself: the ranks agreed
    assert "torchrun: the workers were preempted and saved a checkpoint; exiting with status 143" in stderr


def test_a_rank_that_outlives_the_grace_exits_143_at_once():
    """The armed timer: a rank stuck after the signal (here: sleeping) ends within the grace, never hangs."""
    code = (
        "import os, signal, time, torch\n"
        "from dfgr_torchrec.training.preemption import Preemption\n"
        "with Preemption(0.5, 0, torch.device('cpu')):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)\n"
    )
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == PREEMPTED_EXIT, result.stderr[-2000:]
    assert "rank 0: train.preempt_grace_s=0.5 s after SIGTERM ran out: exiting now (status 143" in result.stderr
    assert time.monotonic() - start < 20  # torch's import, then half a second


@pytest.mark.parametrize("value", ["0", "-1", ".nan", ".inf", "soon"])
def test_a_bad_grace_is_refused_naming_the_key(value):
    from dfgr_torchrec.recipes.config import load_train_config

    with pytest.raises(ValueError, match=r"train\.preempt_grace_s: expected a (positive number of seconds|number)"):
        load_train_config(str(ROOT / DEBUG), [f"train.preempt_grace_s={value}"])
    assert load_train_config(str(ROOT / DEBUG)).train.preempt_grace_s == 30.0


def test_a_save_that_may_not_fit_the_grace_is_said_and_done_anyway():
    """One process: the last save took longer than the grace, so rank 0 warns, then saves and raises."""
    code = (
        "import os, signal, time, torch, torch.distributed as dist\n"
        "from dfgr_torchrec.errors import Preempted\n"
        "from dfgr_torchrec.training.preemption import Preemption\n"
        "dist.init_process_group('gloo', store=dist.HashStore(), rank=0, world_size=1)\n"
        "with Preemption(5.0, 0, torch.device('cpu')) as p:\n"
        "    p.after_step(1, lambda: 'unused')\n"
        "    p.save_s = 6.0  # as if the last save had taken 6 s\n"
        "    os.kill(os.getpid(), signal.SIGUSR1)\n"
        "    try:\n"
        "        p.after_step(2, lambda: 'ckpt/step-2')\n"
        "    except Preempted as e:\n"
        "        print('raised', e.step, e.path)\n"
        "        signal.setitimer(signal.ITIMER_REAL, 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "raised 2 ckpt/step-2" in result.stdout
    assert "the last save (6.0 s) may not fit train.preempt_grace_s=5 s: saving anyway" in result.stderr
    assert "preempted at step 2: checkpoint saved to ckpt/step-2, resume with --resume (SIGUSR1;" in result.stderr
