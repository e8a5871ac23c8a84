"""`dfgr study` owns its output folder and its jobs: a second study into the same folder is refused
naming the first, and a study killed with SIGKILL takes its torchrun job with it (the kernel's
parent-death signal), so a rerun never collides with an orphan still training."""

import os
import signal
import subprocess
import sys

import yaml

from tests.processes import processes_naming, wait_for

from .conftest import DEBUG, ROOT, clean_error, dfgr, env, needs_data


@needs_data
def test_a_study_owns_its_folder_and_its_jobs_die_with_it(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(
        yaml.safe_dump(
            {
                "name": "orphans",
                "nproc": 1,
                "seeds": [0],
                "common": ["testing.stall_at_step=1", "data.batch_size=8"],  # the job sleeps at step 1
                "datasets": {"kuairand": {"dfgr": DEBUG}},
            }
        )
    )
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "dfgr_torchrec.cli", "study", "--config", str(study), "--out", str(out)]
    parent = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        jobs = lambda: [p for p in processes_naming(str(out / "runs")) if p != parent.pid]  # noqa: E731
        wait_for(lambda: len(jobs()) >= 2, 120, "the torchrun agent and its worker")
        second = dfgr("study", "--config", study, "--out", out)
        clean_error(second, f"{out} is in use by study pid {parent.pid}", "choose another --out")
        parent.send_signal(signal.SIGKILL)
        parent.wait(30)
        wait_for(lambda: not jobs(), 60, "the orphaned job (agent and worker) to end")
    finally:
        parent.kill()
        for pid in processes_naming(str(out / "runs")):
            os.kill(pid, signal.SIGKILL)
