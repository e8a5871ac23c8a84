"""The scaling chart: test GAUC against training FLOPs, one log-linear fit per model family.

A scaling study names each size ``<family>@<size>`` (e.g. ``dfgr@L2-d64-N200``); every size is
one point (test GAUC averaged over tasks and seeds; training FLOPs averaged over seeds) and each
family gets the least-squares fit ``GAUC = a + b log10(FLOPs)``.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any, Dict, List, Tuple

SEPARATOR = "@"


def scaling_points(rows: List[Dict[str, Any]], data: str) -> Dict[str, List[Tuple[float, float, str]]]:
    """``{family: [(train_flops, mean test GAUC, size), ...]}`` sorted by FLOPs, for one data set."""
    by_model: Dict[str, List[Dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["data"] == data and row["split"] == "test" and row["chosen"] and SEPARATOR in row["model"]:
            if row["train_flops"] and not math.isnan(row["gauc"]):
                by_model[row["model"]].append(row)
    points: Dict[str, List[Tuple[float, float, str]]] = defaultdict(list)
    for model, mine in by_model.items():
        family, size = model.split(SEPARATOR, 1)
        flops = statistics.mean(r["train_flops"] for r in mine)
        points[family].append((flops, statistics.mean(r["gauc"] for r in mine), size))
    return {family: sorted(p) for family, p in points.items()}


def log_linear_fit(points: List[Tuple[float, float, str]]) -> Tuple[float, float]:
    """``(a, b)`` of ``GAUC = a + b log10(FLOPs)`` by least squares (needs two distinct FLOPs)."""
    xs = [math.log10(f) for f, _, _ in points]
    ys = [g for _, g, _ in points]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def fit_r2(points: List[Tuple[float, float, str]], a: float, b: float) -> float:
    """The share of the GAUC variance across sizes the fit explains (1: every point on the line)."""
    ys = [g for _, g, _ in points]
    total = sum((y - statistics.mean(ys)) ** 2 for y in ys)
    residual = sum((g - a - b * math.log10(f)) ** 2 for f, g, _ in points)
    return 1.0 - residual / total if total > 0 else 1.0


def plot_scaling(plt, rows: List[Dict[str, Any]], data: str, path: str) -> Dict[str, Tuple[float, float]]:
    """Draws the chart to ``path`` if some family has two sizes; returns each family's fit."""
    points = {f: p for f, p in scaling_points(rows, data).items() if len({x for x, _, _ in p}) > 1}
    if not points:
        return {}
    fits = {}
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for family, p in points.items():
        a, b = fits[family] = log_linear_fit(p)
        label = f"{family}: {a:.3f} + {b:.4f} log10 F (R² {fit_r2(p, a, b):.2f})"
        (line,) = ax.plot([f for f, _, _ in p], [g for _, g, _ in p], "o", label=label)
        ends = [p[0][0], p[-1][0]]
        ax.plot(ends, [a + b * math.log10(f) for f in ends], "-", color=line.get_color())
    ax.set_xscale("log")
    save_chart(
        plt,
        fig,
        ax,
        "training FLOPs (analytic)",
        "test GAUC (mean over tasks and seeds)",
        f"{data}: quality against training compute",
        path,
    )
    return fits


def save_chart(plt, fig, ax, xlabel: str, ylabel: str, title: str, path: str) -> str:
    """Labels, legend, then writes the figure to ``path`` and closes it."""
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
