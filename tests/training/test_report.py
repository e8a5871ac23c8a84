"""Printing a metrics file is instant: it imports neither torch nor TorchRec."""

import json
import subprocess
import sys


def test_report_prints_a_table_without_importing_torch(tmp_path):
    metrics = {
        "split": "test",
        "candidates": 3,
        "tasks": {
            "like": {
                "auc": 0.75,
                "gauc": 0.7,
                "logloss": 0.5,
                "ne": 0.8,
                "calibration": 1.01,
                "count": 3,
                "positives": 2,
            }
        },
    }
    path = tmp_path / "metrics_final.json"
    path.write_text(json.dumps(metrics))
    code = (
        "import sys; from dfgr_torchrec.recipes.report import main; main([sys.argv[1]]); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "like" in out.stdout and "0.7500" in out.stdout and "test split, 3 candidates" in out.stdout
    header, _, row = out.stdout.splitlines()[-3:]
    assert header.split()[-2:] == ["candidates", "positives"] and row.split()[-2:] == ["3", "2"]


def test_slices_by_item_count_print_a_row_each_with_the_mean_over_defined_tasks():
    from dfgr_torchrec.training.report import format_slices

    task = lambda auc, count: {"auc": auc, "count": count}  # noqa: E731
    metrics = {
        "tasks": {"a": {}, "b": {}},
        "by_item_train_count": {
            "0": {"a": task(0.6, 4), "b": task(None, 4)},
            "5-49": {"a": task(0.7, 9), "b": task(0.9, 9)},
        },
    }
    lines = format_slices(metrics).splitlines()
    assert lines[0].split()[:3] == ["item's", "training", "count"]
    assert lines[2].split() == ["0", "4", "0.6000", "0.6000", "n/a"]  # the mean skips the undefined task
    assert lines[3].split() == ["5-49", "9", "0.8000", "0.7000", "0.9000"]
    assert format_slices({"tasks": {"a": {}}}) == ""
