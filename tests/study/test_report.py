"""Summary cells: mean ± std over seeds, a bare number for one seed, n/a when nothing is defined."""

import math

from dfgr_torchrec.study.report import _mean_std


def test_mean_std_cells():
    assert _mean_std([0.7, 0.8]) == "0.7500 ± 0.0707"
    assert _mean_std([0.7, math.nan]) == "0.7000"  # one defined seed: no spread to claim
    assert _mean_std([math.nan]) == "n/a"


def _row(model, seed, task, auc, positives):
    return {
        "data": "d",
        "model": model,
        "seed": seed,
        "params": {},
        "point": 0,
        "variant": None,
        "chosen": True,
        "split": "test",
        "task": task,
        "auc": auc,
        "gauc": auc,
        "logloss": 0.5,
        "ne": 0.9,
        "calibration": 1.0,
        "candidates": 10,
        "positives": positives,
        "selected_step": 5,
        "train_seconds": 1.0,
    }


def test_summary_shows_each_tasks_test_positives_and_leaves_them_out_for_runs_without_the_count():
    from dfgr_torchrec.study.report import summary_markdown

    records = [{"data": "d", "model": m} for m in ("a", "b")]
    rows = [_row(m, s, t, 0.7 + 0.01 * s, p) for m in ("a", "b") for s in (0, 1) for t, p in (("click", 4), ("buy", 1))]
    lines = summary_markdown(rows, records).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| model | AUC click"))
    assert lines[header + 2] == "| test positives / candidates | 4 / 10 | 1 / 10 |"
    assert lines[header + 3].startswith("| a | 0.7050 ± 0.0071 |")
    older = [{**r, "positives": None} if r["model"] == "b" else r for r in rows]
    assert not any("test positives" in line for line in summary_markdown(older, records).splitlines())
