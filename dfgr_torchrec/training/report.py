"""Metrics as a table a person reads (no torch import: printing a metrics JSON stays instant)."""

from __future__ import annotations

import json
import os
from typing import Any, Dict

from tabulate import tabulate

METRIC_COLUMNS = (("auc", "AUC"), ("gauc", "GAUC"), ("logloss", "log loss"), ("ne", "NE"), ("calibration", "calibration"))


def format_metrics(metrics: Dict[str, Any]) -> str:
    """One row per task of ``{"tasks": {task: {"auc": ..., ...}}}``, as written by the recipe."""
    rows = [[task, *(m[key] for key, _ in METRIC_COLUMNS), m["count"]] for task, m in metrics["tasks"].items()]
    headers = ["task", *(title for _, title in METRIC_COLUMNS), "candidates"]
    return tabulate(rows, headers=headers, floatfmt=".4f")


def write_metrics(run_dir: str, name: str, metrics: Dict[str, Any]) -> str:
    """``<run_dir>/metrics_<name>.json``, and the table on stdout; returns the path."""
    path = os.path.join(run_dir, f"metrics_{name}.json")
    with open(path, "w") as f:
        json.dump(metrics, f, indent=2)
    selected = f", selected at step {metrics['selected_step']}" if metrics.get("selected_step") is not None else ""
    print(f"\n{metrics['split']} metrics ({metrics['candidates']} candidates{selected}), written to {path}:")
    print(format_metrics(metrics), flush=True)
    return path
