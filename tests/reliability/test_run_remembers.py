"""A run directory remembers its config: `dfgr eval --run DIR` and `dfgr export --run DIR` need no
training overrides typed again, work from where the directory is now (moved or copied), and say
plainly when DIR is not a run."""

import json
import shutil

from .conftest import DEBUG, clean_error, dfgr


def test_eval_and_export_of_a_moved_run_need_only_its_directory(trained, tmp_path):
    run = tmp_path / "elsewhere" / "my-run"
    shutil.copytree(trained[0] / "debug", run)  # trained with SMALL's overrides; none is typed here
    evaluated = dfgr("eval", "--run", run, "--split", "valid")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads((run / "metrics_eval.json").read_text())["split"] == "valid"
    exported = dfgr("export", "--run", run, "--out", tmp_path / "artifact", "--no-compile")
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (tmp_path / "artifact" / "artifact.json").exists()


def test_run_must_be_a_run_directory_and_excludes_config(tmp_path):
    result = dfgr("eval", "--run", tmp_path)
    clean_error(result, f"--run {tmp_path}: not a run directory (no config.yaml)")
    both = dfgr("export", "--run", tmp_path, "--config", DEBUG, "--out", tmp_path / "a")
    clean_error(both, "argument --config: not allowed with argument --run")
