"""A log whose every task has one class in the validation split: the run finishes (exit 0), says
the selection score is undefined instead of formatting a number, and writes `null` metrics with
their reason (a regression once: `TypeError ... NoneType.__format__` in the recipe's validation)."""

import json

from .conftest import DEBUG, dfgr, write_log, write_yaml


def test_a_run_whose_validation_has_one_class_finishes_with_null_metrics(tmp_path):
    rows = [f"u{u}\ti{(3 * u + k) % 17}\t{k + 1}\t1" for u in range(24) for k in range(8)]  # every click is 1
    data = write_yaml(tmp_path, write_log(tmp_path, rows))
    result = dfgr(
        "train",
        "--config",
        DEBUG,
        f"output_dir={tmp_path / 'runs'}",
        f"data.config={data}",
        "train.max_steps=2",
        "data.batch_size=8",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert (
        "validation auc undefined (every task of the validation split has one class) (best none yet)" in result.stdout
    )
    final = json.loads((tmp_path / "runs" / "debug" / "metrics_final.json").read_text())
    click = final["tasks"]["click"]
    assert click["auc"] is None and click["notes"]["auc"] == "only positives"
    assert final["selection"]["score"] is None and final["selected_step"] is None
    # 2 steps: too short to mean anything, said on screen and in the file
    short = "this run trained 2 optimizer steps, fewer than 200: its metrics are too early to mean much"
    assert f"warning: {short}" in result.stdout and short in final["warnings"][0]
