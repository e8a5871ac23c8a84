"""Broken and hostile config inputs: YAML that does not parse, a scalar where a section belongs, a
`!!python` tag in a file or an override, and `dfgr plan` sizes that are not numbers of rows. Each is
one line naming the file or flag, exit 2, no traceback, and no tag is ever constructed."""

import pytest

from .conftest import DEBUG, clean_error, dfgr


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=[1", "override 'train.epochs=[1': line 1: not valid YAML"),
        ("train=5", "train: expected a section (a mapping of keys), got 5"),
        ("optim=[1, 2]", "optim: expected a section (a mapping of keys), got [1, 2]"),
    ],
)
def test_a_broken_override_is_one_line(tmp_path, override, message):
    result = dfgr("train", "--config", DEBUG, f"output_dir={tmp_path}", override)
    clean_error(result, message)
    assert result.returncode == 2


def _tag(marker):
    return f"!!python/object/apply:os.system ['touch {marker}']"


def test_a_python_tag_in_an_override_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    result = dfgr("train", "--config", DEBUG, f"output_dir={tmp_path}", f"train.epochs={_tag(marker)}")
    clean_error(result, "override", "line 1: refused", "configs hold plain data only")
    assert result.returncode == 2
    assert not marker.exists()


def test_a_python_tag_in_a_config_file_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "hostile.yaml"
    path.write_text(f"defaults: [{DEBUG}]\ntrain:\n  epochs: {_tag(marker)}\n")
    result = dfgr("train", "--config", path, f"output_dir={tmp_path}")
    clean_error(result, f"{path}: line 3: refused", "configs hold plain data only")
    assert result.returncode == 2
    assert not marker.exists()


def test_a_file_that_is_not_yaml_names_its_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train:\n  epochs: 2\n  log_every: [1\n")
    result = dfgr("train", "--config", path, f"output_dir={tmp_path}")
    clean_error(result, f"{path}: line", "not valid YAML")
    assert result.returncode == 2


PLAN = ["plan", "--config", DEBUG, "--world-size", "2", "--hbm-gb", "80", "--item-rows", "1000"]


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--item-rows", "1e20", "expected a whole number of rows in [1, 2^53], got '1e20'"),
        ("--item-rows", "inf", "expected a whole number of rows in [1, 2^53], got 'inf'"),
        ("--item-rows", "nan", "expected a whole number of rows in [1, 2^53], got 'nan'"),
        ("--hbm-gb", "nan", "expected a finite positive number, got 'nan'"),
        ("--hbm-gb", "inf", "expected a finite positive number, got 'inf'"),
        ("--ddr-gb", "-1", "expected a finite positive number, got '-1'"),
        ("--mean-seq-len", "0", "expected a finite positive number, got '0'"),
    ],
)
def test_plan_sizes_must_be_finite_and_in_range(flag, value, message):
    args = list(PLAN)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    result = dfgr(*args)
    clean_error(result, flag, message)
    assert result.returncode == 2


def test_bench_prepare_refuses_a_missing_config_before_starting_its_child(tmp_path):
    result = dfgr("bench", "prepare", "--config", tmp_path / "nope.yaml")
    clean_error(result, f"{tmp_path / 'nope.yaml'}: no such config file")
    assert result.returncode == 2


def test_bench_prepare_reports_the_logs_error_in_one_line(tmp_path):
    config = tmp_path / "data.yaml"
    config.write_text(
        f"name: x\nsource: {{path: {tmp_path / 'nope.tsv'}, format: tsv, "
        "columns: {user: u, item: i, timestamp: t}}\nactions: {c: {column: c}}\n"
    )
    result = dfgr("bench", "prepare", "--config", config)
    clean_error(result, f"{tmp_path / 'nope.tsv'}: no such file (source.path)", "the duckdb run failed")


def test_a_reader_that_leaves_early_ends_the_command_quietly(tmp_path):
    """`dfgr ... | head -1`: stdout closes under the command; no BrokenPipeError traceback."""
    import subprocess
    import sys

    from .conftest import ROOT, env

    code = (
        "import sys; from dfgr_torchrec import cli\n"
        "def run(args):\n    [print('x' * 100) for _ in range(100000)]\n"
        "parser = cli.build_parser(['demo']); cli.build_parser = lambda argv: parser\n"
        "parser._subparsers._group_actions[0].choices['demo'].set_defaults(run=run)\n"
        "sys.exit(cli.main(['demo']))"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    child.stdout.readline()
    child.stdout.close()
    child.wait(60)
    stderr = child.stderr.read().decode()
    assert child.returncode == 141 and "Traceback" not in stderr, stderr
