"""`dfgr <command> --help` lists that command's flags and its own examples, no other command's."""

import subprocess
import sys
from pathlib import Path

import pytest

from dfgr_torchrec.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _help(capsys, *command):
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


# command -> (flags its help lists, flags of other commands it must not list)
FLAGS = {
    "train": (["--config", "--resume", "overrides"], ["--split", "--checkpoint", "--run", "--out", "--eval-only"]),
    "eval": (["--config", "--run", "--split", "--checkpoint", "overrides"], ["--resume", "--out", "--tables"]),
    "export": (["--config", "--run", "--checkpoint", "--out", "--tables", "--no-compile"], ["--resume", "--split"]),
    "score": (
        ["--model", "--run", "--input", "--output", "--cache-mb", "--compiled", "--allow-native-code"],
        ["--config", "--resume", "--split", "--checkpoint"],
    ),
}


@pytest.mark.parametrize("command", sorted(FLAGS))
def test_help_lists_only_the_commands_flags_with_its_own_example(capsys, command):
    text = _help(capsys, command)
    listed, others = FLAGS[command]
    flags_part, _, examples = text.partition("\nexamples:\n")
    for flag in listed:
        assert flag in flags_part, f"dfgr {command} --help lacks {flag}"
    for flag in others:
        assert f"{flag} " not in flags_part and f"{flag}\n" not in flags_part, f"dfgr {command} --help lists {flag}"
    example_lines = [line.strip() for line in examples.splitlines() if line.strip().startswith("dfgr ")]
    assert example_lines and all(line.startswith(f"dfgr {command} ") for line in example_lines), examples


def test_eval_examples_show_no_training_overrides(capsys):
    text = _help(capsys, "eval")
    for training_key in ("optim.", "train.epochs", "--resume"):
        assert training_key not in text


def test_train_refuses_an_eval_only_flag(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["train", "--config", "configs/train/debug.yaml", "--split", "valid"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --split" in capsys.readouterr().err


def test_export_needs_out_with_a_config_but_not_with_a_run(capsys):
    assert main(["export", "--config", "configs/train/debug.yaml"]) == 2
    err = capsys.readouterr().err
    assert "--out: required with --config (with --run DIR the artifact goes to DIR/artifact)" in err
    assert "Traceback" not in err


def test_the_torchrun_entry_point_keeps_both_train_and_eval_flags():
    cmd = [sys.executable, "-m", "dfgr_torchrec.recipes.train", "--help"]
    text = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120).stdout
    for flag in ("--config", "--resume", "--eval-only", "--split", "--checkpoint"):
        assert flag in text


def test_score_help_imports_no_torch():
    code = (
        "import sys; from dfgr_torchrec.cli import build_parser; build_parser(['score', '--help']); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
