"""One job per run directory: a second train, eval or export of a directory a live run holds is refused,
naming the holder; the lock dies with its holder (kill -9), so a killed run never blocks the next."""

import os
import signal
import subprocess
import sys
import time

import pytest

from dfgr_torchrec.errors import RunError
from dfgr_torchrec.training.run_lock import LOCK_FILE, lock_run, release_run
from tests.reliability.conftest import DEBUG, ROOT, SMALL, clean_error, dfgr, env, needs_data


def test_a_second_process_is_refused_and_the_lock_dies_with_its_holder(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from dfgr_torchrec.training.run_lock import lock_run; lock_run({str(tmp_path)!r}, "
            "'training run'); print('locked', flush=True); import time; time.sleep(600)",
        ],
        cwd=ROOT,
        env=env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunError, match=rf"is in use by training run pid {holder.pid} on "):
            lock_run(str(tmp_path), "evaluation")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock_run(str(tmp_path), "training run")  # the kernel released it with the process
    lock_run(str(tmp_path), "evaluation")  # this process may take it again
    assert f"pid {os.getpid()}" in (tmp_path / LOCK_FILE).read_text()
    release_run(str(tmp_path))


@needs_data
@pytest.mark.slow
def test_a_second_train_or_eval_into_a_running_run_is_refused(tmp_path):
    """The first run stalls at step 1 (a test hook); a second train and an eval are refused in one line."""
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dfgr_torchrec.cli",
            "train",
            "--config",
            DEBUG,
            f"output_dir={tmp_path}",
            *SMALL,
            "testing.stall_at_step=1",
        ],
        cwd=ROOT,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        lock = tmp_path / "debug" / LOCK_FILE
        deadline = time.time() + 120
        while not (lock.exists() and "pid" in lock.read_text()) and time.time() < deadline:
            time.sleep(0.5)
        second = dfgr("train", "--config", DEBUG, f"output_dir={tmp_path}", *SMALL, "train.overwrite=true")
        clean_error(second, "is in use by training run", f"pid {first.pid}", "one job per run directory")
        evaluated = dfgr("eval", "--config", DEBUG, f"output_dir={tmp_path}")
        clean_error(evaluated, "is in use by training run", f"pid {first.pid}")
        exported = dfgr("export", "--config", DEBUG, "--out", tmp_path / "artifact", f"output_dir={tmp_path}")
        clean_error(exported, "is in use by training run", f"pid {first.pid}")
        assert not (tmp_path / "artifact").exists()
        assert first.poll() is None, "the first run must still be training"
    finally:
        first.kill()
        first.wait()
    after = dfgr("train", "--config", DEBUG, f"output_dir={tmp_path}", *SMALL, "train.overwrite=true")
    assert after.returncode == 0, after.stderr[-2000:]
