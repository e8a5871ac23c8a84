"""Runs and run directories: eval and --resume need a checkpoint, a new run needs an unused
directory (or train.overwrite=true), an unwritable directory is named at start, a stuck rank ends
the job, and a resumed run logs each step once."""

import json
import os
import subprocess
import time

import pytest

from .conftest import DEBUG, SMALL, clean_error, dfgr, needs_data, torchrun


def test_eval_without_a_checkpoint_is_refused(tmp_path):
    result = dfgr("eval", "--config", DEBUG, f"output_dir={tmp_path}", "name=never_trained")
    clean_error(result, f"no checkpoint in {tmp_path / 'never_trained' / 'best'}", "--checkpoint PATH")
    assert not (tmp_path / "never_trained").exists()


def test_eval_of_a_missing_checkpoint_path_is_refused(tmp_path):
    result = dfgr("eval", "--config", DEBUG, f"output_dir={tmp_path}", "--checkpoint", tmp_path / "nowhere")
    clean_error(result, f"--checkpoint {tmp_path / 'nowhere'}: no such checkpoint folder")


def test_resume_of_a_misspelled_run_is_refused(tmp_path):
    result = dfgr("train", "--config", DEBUG, "--resume", f"output_dir={tmp_path}", "name=debgu")
    clean_error(result, "--resume: no checkpoint in", str(tmp_path / "debgu"))
    assert not (tmp_path / "debgu").exists()


def test_new_run_into_a_used_directory_is_refused(run_copy):
    out, run = run_copy
    log = (run / "train_log.jsonl").read_text()
    result = dfgr("train", "--config", DEBUG, f"output_dir={out}", *SMALL)
    clean_error(result, f"{run} already holds a run", "--resume", "train.overwrite=true")
    assert (run / "train_log.jsonl").read_text() == log and sorted(os.listdir(run / "checkpoints")) == [
        "step-2",
        "step-4",
    ]


@needs_data
def test_overwrite_starts_the_run_clean(run_copy):
    out, run = run_copy
    (run / "checkpoints" / "step-2").rename(run / "checkpoints" / "step-225")  # an older, longer run
    result = dfgr("train", "--config", DEBUG, f"output_dir={out}", *SMALL, "train.max_steps=2", "train.overwrite=true")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(run / "checkpoints")) == ["step-2"]  # the old run's are gone, the new one kept
    steps = [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def _read_only(path):
    """``path`` made read-only (a read-only tmpfs when running as root, where permissions do not
    stop writes); returns the undo function, or skips if neither works here."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        return lambda: path.chmod(0o755)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("cannot make a read-only folder here")
    return lambda: subprocess.run(["umount", str(path)], check=True)


def test_unwritable_run_directory_is_named_at_start(tmp_path):
    undo = _read_only(tmp_path / "ro")
    try:
        start = time.perf_counter()
        result = dfgr("train", "--config", DEBUG, f"output_dir={tmp_path / 'ro'}", *SMALL)
        clean_error(result, f"the run directory {tmp_path / 'ro' / 'debug'} is not writable")
        assert time.perf_counter() - start < 2.5  # before torch, data or model
    finally:
        undo()


@needs_data
def test_a_stalled_rank_ends_the_job_naming_rank_and_step_then_one_process_evaluates(tmp_path):
    start = time.perf_counter()
    result = torchrun(
        "--config",
        DEBUG,
        f"output_dir={tmp_path}",
        *SMALL,
        "train.max_steps=6",
        "train.collective_timeout_s=5",
        "testing.stall_at_step=2",
    )
    assert result.returncode != 0
    assert "rank 0, after step 2: a collective got no answer within train.collective_timeout_s=5 s" in result.stderr
    assert (
        'File "' + str(tmp_path) not in result.stderr and "dfgr_torchrec/" not in result.stderr
    )  # no traceback of ours
    assert time.perf_counter() - start < 120  # not gloo's 30 minutes
    # its step-2 checkpoint was written by 2 processes: evaluation needs the weights only, so 1 process may load it
    evaluated = dfgr("eval", "--config", DEBUG, f"output_dir={tmp_path}", "--split", "valid")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads((tmp_path / "debug" / "metrics_eval.json").read_text())
    assert metrics["split"] == "valid" and 0.0 < metrics["tasks"]["click"]["auc"] < 1.0


@needs_data
def test_eval_against_other_vocabularies_is_refused(run_copy):
    """Weights trained on one preparation are never scored with another's id -> row mapping."""
    out, run = run_copy
    record = json.loads((run / "prepared.json").read_text())
    record["path"] = str(out / "gone")
    record["vocab"] = {name: "0" * 32 for name in record["vocab"]}
    (run / "prepared.json").write_text(json.dumps(record))
    result = dfgr("eval", "--config", DEBUG, f"output_dir={out}")
    clean_error(result, "prepared.json: this run was trained on", "other vocabularies", "vocab_item.npy")
