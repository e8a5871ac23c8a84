"""Metrics as a table a person reads (no torch import: printing a metrics JSON stays instant)."""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict

from tabulate import tabulate

METRIC_COLUMNS = (
    ("auc", "AUC"),
    ("gauc", "GAUC"),
    ("logloss", "log loss"),
    ("ne", "NE"),
    ("calibration", "calibration"),
)


def _cell(value: Any, note: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return f"n/a ({note})" if note else "n/a"
    return f"{value:.4f}"


def format_metrics(metrics: Dict[str, Any]) -> str:
    """One row per task of ``{"tasks": {task: {"auc": ..., ...}}}``, as written by the recipe; an
    undefined metric reads ``n/a (<reason>)``, e.g. ``n/a (only positives)``."""
    rows = [
        [
            task,
            *(_cell(m.get(key), m.get("notes", {}).get(key, "")) for key, _ in METRIC_COLUMNS),
            m["count"],
            m.get("positives", ""),
        ]
        for task, m in metrics["tasks"].items()
    ]
    headers = ["task", *(title for _, title in METRIC_COLUMNS), "candidates", "positives"]
    return tabulate(rows, headers=headers, disable_numparse=True, colalign=("left", *["right"] * (len(headers) - 1)))


def format_slices(metrics: Dict[str, Any]) -> str:
    """Test AUC by the candidate item's training count (``by_item_train_count``), one row per
    slice: its candidates, the mean AUC over the tasks it defines, the AUC of each task; "" if absent."""
    slices = metrics.get("by_item_train_count")
    if not slices:
        return ""
    tasks = list(metrics["tasks"])
    rows = []
    for name, per_task in slices.items():
        aucs = [per_task[t].get("auc") for t in tasks]
        defined = [a for a in aucs if a is not None and math.isfinite(a)]
        mean = sum(defined) / len(defined) if defined else None
        rows.append([name, per_task[tasks[0]]["count"], _cell(mean), *(_cell(a) for a in aucs)])
    headers = ["item's training count", "candidates", "mean AUC", *(f"AUC {t}" for t in tasks)]
    return tabulate(rows, headers=headers, disable_numparse=True, colalign=("left", *["right"] * (len(headers) - 1)))


def metrics_tables(metrics: Dict[str, Any]) -> str:
    """:func:`format_metrics`, then the :func:`format_slices` table under its heading when present."""
    slices = format_slices(metrics)
    by_count = f"\n\nby the candidate item's count in the training split:\n{slices}" if slices else ""
    return format_metrics(metrics) + by_count


def json_ready(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON ``null``): strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def write_metrics(run_dir: str, name: str, metrics: Dict[str, Any]) -> str:
    """``<run_dir>/metrics_<name>.json`` (strict JSON: an undefined metric is ``null``, its reason
    under the task's ``notes``), and the table on stdout; returns the path."""
    path = os.path.join(run_dir, f"metrics_{name}.json")
    with open(path, "w") as f:
        json.dump(json_ready(metrics), f, indent=2, allow_nan=False)
    selected = f", selected at step {metrics['selected_step']}" if metrics.get("selected_step") is not None else ""
    print(f"\n{metrics['split']} metrics ({metrics['candidates']} candidates{selected}), written to {path}:")
    print(metrics_tables(metrics), flush=True)
    for line in metrics.get("warnings", []):
        print(f"warning: {line}", flush=True)
    return path


MIN_TRAIN_STEPS = 200  # fewer optimizer steps than this rarely mean anything (the first-hour issue's traps)


def short_run_warnings(steps: int, minimum: int = MIN_TRAIN_STEPS) -> Dict[str, Any]:
    """``{"warnings": [...]}`` for a run that took fewer than ``minimum`` optimizer steps (else ``{}``),
    for ``metrics_final.json`` and the screen: its metrics are too early to compare models on."""
    if steps >= minimum:
        return {}
    return {
        "warnings": [
            f"this run trained {steps} optimizer steps, fewer than {minimum}: its metrics are too early "
            "to mean much; train longer (train.steps, train.min_steps, train.epochs, a smaller data.batch_size)"
        ]
    }
