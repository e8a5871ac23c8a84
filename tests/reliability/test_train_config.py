"""Train configs and the command line: every mistake is one line naming the key, in well under a
second (no torch import, no data, no run directory), and overrides may follow any flag."""

import subprocess
import sys
import time

import pytest
import yaml

from .conftest import DEBUG, ROOT, clean_error, dfgr, env


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=abc", "train.epochs: expected an integer, got 'abc'"),
        ("train.log_every=0", "train.log_every: expected a positive integer, got 0"),
        ("train.epochs=0", "train.epochs: expected a positive integer, got 0"),
        ("model.interaction.max_seq_len=8", "model.interaction.max_seq_len: expected at least data.max_seq_len (64)"),
        ("optim.lr=abc", "optim.lr: expected a number, got 'abc'"),
        ("checkpoint.keep=two", "checkpoint.keep: expected an integer >= 0, got 'two'"),  # the section's own words
        ("model.head_hidden_dims=[a]", "model.head_hidden_dims[0]: expected a positive integer, got 'a'"),
        ("train.collective_timeout_s=0", "train.collective_timeout_s: expected a positive number of seconds"),
    ],
)
def test_config_errors_are_fast_and_name_the_key(tmp_path, override, message):
    start = time.perf_counter()
    result = dfgr("train", "--config", DEBUG, f"output_dir={tmp_path}", override)
    elapsed = time.perf_counter() - start
    clean_error(result, f"{DEBUG}: {message}")
    assert result.returncode == 2
    assert elapsed < 2.5, f"a config error took {elapsed:.1f} s"  # today: ~4 s of torch import, or a run
    assert not (tmp_path / "debug").exists()  # no run directory for a config that never ran


def test_overrides_may_follow_a_flag(tmp_path):
    result = dfgr("train", "--config", DEBUG, "--resume", f"output_dir={tmp_path}", "train.epochs=abc")
    clean_error(result, "train.epochs: expected an integer")  # parsed as an override, not "unrecognized"


def test_help_is_fast():
    start = time.perf_counter()
    result = dfgr("--help")
    assert result.returncode == 0 and "train" in result.stdout
    assert time.perf_counter() - start < 2.5


def test_building_the_parser_imports_no_torch():
    code = (
        "import sys; from dfgr_torchrec.cli import build_parser; build_parser(); "
        "build_parser(['train', '--config', 'x']); build_parser(['eval', '--config', 'x']); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def _fake_run(out, *overrides):
    """A run directory as training leaves it (config.yaml, a checkpoint with its manifest): the
    resume checks run before anything is loaded, so the checkpoint's contents do not matter."""
    from dfgr_torchrec.recipes.config import dump_config, load_train_config
    from dfgr_torchrec.training.manifest import write_manifest

    run = out / "debug"
    step = run / "checkpoints" / "step-2"
    step.mkdir(parents=True)
    (step / "progress.json").write_text('{"step": 2, "epoch": 0, "batch_in_epoch": 2, "world_size": 1}')
    write_manifest(str(step))
    config = load_train_config(DEBUG, [f"output_dir={out}", *overrides])
    (run / "config.yaml").write_text(dump_config(config))
    return run


@pytest.mark.parametrize(
    "changed, key",
    [
        (["model.embeddings.embedding_dim=32", "model.interaction.d_model=32"], "model.embeddings.embedding_dim"),
        (["data.batch_size=16"], "data.batch_size"),
    ],
)
def test_resume_with_a_changed_config_names_the_key(tmp_path, changed, key):
    run = _fake_run(tmp_path)
    result = dfgr("train", "--config", DEBUG, "--resume", f"output_dir={tmp_path}", *changed)
    clean_error(result, f"cannot resume {run}: {key} is", str(run / "config.yaml"))
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["batch_size"] == 32  # untouched
