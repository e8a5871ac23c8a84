"""Checkpoints: a manifest (sizes, blake2b) written before the rename and checked before a load, so
a damaged latest checkpoint falls back to the previous one, naming the bad file; a full disk is
said plainly; a resumed run logs each step once; a run prints no library warnings."""

import json
import os
import subprocess

import pytest

from .conftest import DEBUG, SMALL, clean_error, dfgr, needs_data


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


DAMAGE = {
    "rng-rank0.pt": _truncate,
    "extra.pt": _truncate,
    "progress.json": lambda path: open(path, "w").write('{"step": 4'),
    ".metadata": os.remove,
    "__0_0.distcp": lambda path: open(path, "r+b").write(b"\0" * 64),  # same size, other bytes
}


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_damaged_latest_falls_back_naming_the_file(run_copy, name):
    from dfgr_torchrec.training.manifest import newest_intact_checkpoint

    _, run = run_copy
    damaged = run / "checkpoints" / "step-4" / name
    DAMAGE[name](str(damaged))
    said = []
    assert newest_intact_checkpoint(str(run / "checkpoints"), said.append) == str(run / "checkpoints" / "step-2")
    assert len(said) == 1 and str(damaged) in said[0] and "trying the previous one" in said[0]


def test_no_intact_checkpoint_is_refused_naming_them(run_copy):
    from dfgr_torchrec.errors import RunError
    from dfgr_torchrec.training.manifest import newest_intact_checkpoint

    out, run = run_copy
    _truncate(str(run / "checkpoints" / "step-4" / "extra.pt"))
    os.remove(run / "checkpoints" / "step-2" / ".metadata")
    with pytest.raises(RunError, match="no intact checkpoint in"):
        newest_intact_checkpoint(str(run / "checkpoints"), lambda message: None)
    result = dfgr("train", "--config", DEBUG, "--resume", f"output_dir={out}", *SMALL)
    clean_error(
        result,
        f"no intact checkpoint in {run / 'checkpoints'}",
        str(run / "checkpoints" / "step-4" / "extra.pt"),
        str(run / "checkpoints" / "step-2" / ".metadata"),
    )


@needs_data
def test_resume_from_a_damaged_latest_continues_and_logs_each_step_once(run_copy):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, run = run_copy
    _truncate(str(run / "checkpoints" / "step-4" / "rng-rank0.pt"))
    result = dfgr("train", "--config", DEBUG, "--resume", f"output_dir={out}", *SMALL)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        f"checkpoint {run / 'checkpoints' / 'step-4'} is damaged: {run / 'checkpoints' / 'step-4' / 'rng-rank0.pt'}"
        in result.stdout
    )
    assert f"resumed from {run / 'checkpoints' / 'step-2'}" in result.stdout
    steps = [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # steps 3 and 4 were logged by the first run too: kept once
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]  # purged, not overlapping


@needs_data
def test_a_full_disk_is_said_plainly(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(full)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        result = dfgr("train", "--config", DEBUG, f"output_dir={full}", *SMALL)
    finally:
        subprocess.run(["umount", str(full)], check=True)
    clean_error(
        result, f"cannot write checkpoint {full / 'debug' / 'checkpoints' / '.tmp-step-2'}: no space left on device"
    )


WARNINGS = (
    "TopologyFactory",
    "HeuristicalStorageReservation",
    "dense tensor size",
    "broadcast_buffers",
    "is_fx_tracing",
    "ShardedTensor",
)


def test_a_run_prints_no_library_warnings(trained):
    _, result = trained
    for text in WARNINGS:
        assert text not in result.stderr, result.stderr[-3000:]


def test_the_planner_is_built_the_recommended_way():
    import torch

    from dfgr_torchrec.distributed.sharding import make_planner

    planner = make_planner(torch.nn.Linear(4, 4), 2, torch.device("cpu"), {})
    assert planner._topology._created_by_factory  # no "constructed directly" warning
    assert planner._storage_reservation._dense_tensor_estimate == 6 * (16 + 4) * 4
