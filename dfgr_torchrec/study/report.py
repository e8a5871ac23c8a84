"""A study's outputs: ``results.jsonl`` (a row per run x split x task), ``summary.md``, PNG plots.

Test numbers are reported for the chosen grid point only (the others were never tested), as the
mean and standard deviation over seeds.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections import defaultdict
from typing import Any, Dict, Iterator, List, Optional, Tuple

from dfgr_torchrec.study.manifest import COST_KEYS, complete_record, write_manifest
from dfgr_torchrec.study.scaling import fit_r2, log_linear_fit, plot_scaling, save_chart, scaling_points

METRICS = ("auc", "gauc", "logloss", "ne", "calibration")


def split_metrics(record: Dict[str, Any]) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """``(split, metrics)`` of a run: validation at selection; test where it was scored (at the end
    of training, or afterwards: the record's ``test``)."""
    final = record["final"]
    if final.get("valid"):
        yield "valid", final["valid"]
    if final.get("split") == "test":
        yield "test", final
    elif record.get("test") is not None:
        yield "test", record["test"]


def result_rows(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """A row per run x split x task, from complete records (:func:`~dfgr_torchrec.study.manifest.complete_record`)."""
    rows = []
    for r in records:
        cost = r.get("cost") or {}
        for split, metrics in split_metrics(r):
            for task, m in metrics["tasks"].items():
                rows.append(
                    {
                        "data": r["data"],
                        "model": r["model"],
                        "seed": r["seed"],
                        "params": r["params"],
                        "point": r["point"],
                        "variant": r["variant"] or None,
                        "chosen": r["chosen"],
                        "split": split,
                        "task": task,
                        **{k: _number(m[k]) for k in METRICS},
                        "candidates": m.get("count"),
                        "positives": m.get("positives"),
                        "selected_step": r["final"].get("selected_step"),
                        "train_seconds": r["train_seconds"],
                        **{k: cost.get(k) for k in COST_KEYS},
                    }
                )
    return rows


def write_results(
    records: List[Dict[str, Any]], out: str, world_size: int, study: Optional[str] = None
) -> List[Dict[str, Any]]:
    """``manifest.json``, ``results.jsonl``, ``summary.md`` and the plots of a study (``study``: its
    config's path) whose runs used ``world_size`` processes. Records read back from the manifest
    need no run folder; the others are completed from theirs."""
    runs_dir = os.path.join(out, "runs")
    records = [complete_record(r, runs_dir, world_size) for r in records]
    write_manifest(out, records, study)
    rows = result_rows(records)
    with open(os.path.join(out, "results.jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(summary_markdown(rows, records))
    plot(rows, records, out)
    return rows


def _number(value: Any) -> float:
    """A metric read from JSON: ``null`` (undefined, e.g. one class only) is NaN."""
    return math.nan if value is None else value


def _mean_std(values: List[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    if len(values) == 1:  # one seed: no spread to report
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def _per_seed_task_mean(rows: List[Dict[str, Any]], metric: str) -> List[float]:
    by_seed: Dict[int, List[float]] = defaultdict(list)
    for row in rows:
        by_seed[row["seed"]].append(row[metric])
    return [statistics.mean([v for v in vs if not math.isnan(v)] or [math.nan]) for vs in by_seed.values()]


def summary_markdown(rows: List[Dict[str, Any]], records: List[Dict[str, Any]]) -> str:
    """Per data set: each model's test mean AUC / GAUC over tasks (mean ± std over seeds), the
    chosen grid point, and each task's test AUC."""
    test = [r for r in rows if r["split"] == "test" and r["chosen"]]
    valid = [r for r in rows if r["split"] == "valid" and r["chosen"]]
    lines = ["# Study summary", "", "Checkpoint and grid point chosen on validation; mean ± std over seeds.", ""]
    for data in dict.fromkeys(r["data"] for r in records):
        models = list(dict.fromkeys(r["model"] for r in records if r["data"] == data))
        lines += [f"## {data}", "", "Test split:", ""] + _model_table(test, data, models)
        lines += ["", "Validation split (at the selected checkpoint):", ""] + _model_table(valid, data, models)
        tasks = list(dict.fromkeys(r["task"] for r in test if r["data"] == data))
        if not tasks:
            lines.append("")
            continue
        lines += _scaling_lines(rows, data)
        lines += ["", "| model | " + " | ".join(f"AUC {t}" for t in tasks) + " |", "|---|" + "---|" * len(tasks)]
        lines += _positives_line(test, data, tasks)
        for model in dict.fromkeys(r["model"] for r in test if r["data"] == data):
            cells = [
                _mean_std([r["auc"] for r in test if r["data"] == data and r["model"] == model and r["task"] == t])
                for t in tasks
            ]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _positives_line(test: List[Dict[str, Any]], data: str, tasks: List[str]) -> List[str]:
    """A row with each task's test positives / candidates (the same for every run of a data set), so
    a reader sees which AUCs rest on a few dozen positives; none when a run predates the count."""
    cells = []
    for task in tasks:
        counts = {(r.get("positives"), r.get("candidates")) for r in test if r["data"] == data and r["task"] == task}
        if len(counts) != 1:
            return []
        ((positives, candidates),) = counts
        if positives is None or candidates is None:
            return []
        cells.append(f"{positives:,} / {candidates:,}")
    return ["| test positives / candidates | " + " | ".join(cells) + " |"]


def _scaling_lines(rows: List[Dict[str, Any]], data: str) -> List[str]:
    """Per model family of a scaling study: each size's FLOPs and test GAUC, and the log-linear fit."""
    lines = []
    for family, points in scaling_points(rows, data).items():
        lines += [
            "",
            f"Scaling, {family}: " + ", ".join(f"{size} {flops:.3g} FLOPs GAUC {g:.4f}" for flops, g, size in points),
        ]
        if len({f for f, _, _ in points}) > 1:
            a, b = log_linear_fit(points)
            lines.append(f"fit: GAUC = {a:.4f} + {b:.4f} log10(FLOPs), R^2 {fit_r2(points, a, b):.2f}")
    return lines


def _model_table(rows: List[Dict[str, Any]], data: str, models: List[str]) -> List[str]:
    """A row per model: seeds, mean AUC and GAUC over tasks (mean ± std over seeds), chosen point."""
    lines = [
        "| model | seeds | mean AUC | mean GAUC | train s | epochs | s / epoch | tokens / epoch | labels / epoch | chosen point |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in models:
        mine = [r for r in rows if r["data"] == data and r["model"] == model]
        if not mine:
            continue
        seeds = len({r["seed"] for r in mine})
        point = json.dumps(mine[0]["params"]) if mine[0]["params"] else "-"
        per_seed = {r["seed"]: r for r in mine}.values()
        seconds = [r["train_seconds"] for r in per_seed if r["train_seconds"] is not None]
        epochs = [r["epochs"] for r in per_seed if r.get("epochs")]
        per_epoch = [
            r["train_seconds"] / r["epochs"] for r in per_seed if r.get("epochs") and r["train_seconds"] is not None
        ]
        tokens, labels = (mine[0].get(k) for k in ("epoch_tokens", "epoch_labels"))
        lines.append(
            f"| {model} | {seeds} | {_mean_std(_per_seed_task_mean(mine, 'auc'))} | "
            f"{_mean_std(_per_seed_task_mean(mine, 'gauc'))} | "
            f"{statistics.mean(seconds) if seconds else math.nan:.0f} | "
            f"{_mean(epochs, '.1f')} | {_mean(per_epoch, '.1f')} | {_count(tokens)} | {_count(labels)} | {point} |"
        )
    return lines


def _mean(values: List[float], fmt: str) -> str:
    return format(statistics.mean(values), fmt) if values else "-"


def _count(value: Optional[int]) -> str:
    return "-" if value is None else f"{value:,}"


def plot(rows: List[Dict[str, Any]], records: List[Dict[str, Any]], out: str) -> List[str]:
    """``<data>_test_auc.png`` (per-task bars with std error bars) and ``<data>_validation.png``
    (the validation score over steps of each model's chosen first-seed run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for data in dict.fromkeys(r["data"] for r in records):
        written.append(
            _bars(
                plt,
                [r for r in rows if r["data"] == data and r["split"] == "test" and r["chosen"]],
                os.path.join(out, f"{data}_test_auc.png"),
                data,
            )
        )
        written.append(
            _curves(
                plt,
                [r for r in records if r["data"] == data and r["chosen"]],
                os.path.join(out, f"{data}_validation.png"),
                data,
            )
        )
        scaling_path = os.path.join(out, f"{data}_scaling.png")
        written.append(scaling_path if plot_scaling(plt, rows, data, scaling_path) else None)
    return [w for w in written if w]


def _bars(plt, test: List[Dict[str, Any]], path: str, data: str) -> Optional[str]:
    if not test:
        return None
    tasks = list(dict.fromkeys(r["task"] for r in test))
    models = list(dict.fromkeys(r["model"] for r in test))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(tasks) * len(models) / 2), 4))
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        values = [[r["auc"] for r in test if r["model"] == model and r["task"] == t] for t in tasks]
        means = [statistics.mean(v) if v else math.nan for v in values]
        stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
        ax.bar([j + i * width for j in range(len(tasks))], means, width, yerr=stds, capsize=2, label=model)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))], tasks, rotation=30)
    ax.set_ylim(0.45, 1.0)
    return save_chart(plt, fig, ax, "", "test AUC", f"{data}: test AUC per task (mean ± std over seeds)", path)


def _curves(plt, records: List[Dict[str, Any]], path: str, data: str) -> Optional[str]:
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = 0
    for model in dict.fromkeys(r["model"] for r in records):
        first = min((r for r in records if r["model"] == model), key=lambda r: r["seed"])
        history = first["final"].get("selection", {}).get("history") or []
        if history:
            ax.plot([h["step"] for h in history], [h["score"] for h in history], marker=".", label=model)
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    return save_chart(
        plt, fig, ax, "step", "validation score (mean over tasks)", f"{data}: validation during training", path
    )
