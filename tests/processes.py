"""Processes as fault tests see them on Linux: wait for a condition, and find the processes of a
job (by their command line, or the whole tree below one pid) from /proc."""

import os
import pathlib
import sys
import time


def recipe_torchrun(*args, nproc=2) -> list:
    """The command line of the training recipe under ``torchrun --standalone`` with ``nproc`` processes."""
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return [*run, "-m", "dfgr_torchrec.recipes.train", *map(str, args)]


def train_then_eval_only(args, run_dir, cwd) -> dict:
    """Trains with the recipe on 2 gloo processes, then ``--eval-only`` on the same run; asserts both
    exit 0 and the second reproduces every task's AUC; returns ``metrics_final.json``."""
    import json
    import subprocess

    import pytest

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for extra in ([], ["--eval-only"]):
        done = subprocess.run(
            recipe_torchrun(*args, *extra), cwd=cwd, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
    final = json.loads((run_dir / "metrics_final.json").read_text())
    again = json.loads((run_dir / "metrics_eval.json").read_text())
    for task, metrics in final["tasks"].items():
        assert again["tasks"][task]["auc"] == pytest.approx(metrics["auc"], abs=1e-6), task
    return final


def wait_for(predicate, timeout, what):
    """Polls ``predicate`` every 0.5 s; fails the test naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _processes():
    """``{pid: (parent pid, command line)}`` of every readable process."""
    found = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(pathlib.Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = pathlib.Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        found[int(entry)] = (ppid, cmdline)
    return found


def processes_naming(text):
    """PIDs whose command line contains ``text``."""
    return [pid for pid, (_, cmdline) in _processes().items() if text in cmdline]


def process_tree(pid):
    """``pid`` and every process below it (torchrun starts its workers in sessions of their own,
    so a process group is not a node: a lost node is the whole tree)."""
    children = {}
    for child, (ppid, _) in _processes().items():
        children.setdefault(ppid, []).append(child)
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found
