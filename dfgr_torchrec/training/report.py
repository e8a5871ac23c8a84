"""Metrics as a table a person reads (no torch import: printing a metrics JSON stays instant)."""

from __future__ import annotations

from typing import Any, Dict

from tabulate import tabulate

METRIC_COLUMNS = (("auc", "AUC"), ("gauc", "GAUC"), ("logloss", "log loss"), ("ne", "NE"), ("calibration", "calibration"))


def format_metrics(metrics: Dict[str, Any]) -> str:
    """One row per task of ``{"tasks": {task: {"auc": ..., ...}}}``, as written by the recipe."""
    rows = [[task, *(m[key] for key, _ in METRIC_COLUMNS), m["count"]] for task, m in metrics["tasks"].items()]
    headers = ["task", *(title for _, title in METRIC_COLUMNS), "candidates"]
    return tabulate(rows, headers=headers, floatfmt=".4f")
