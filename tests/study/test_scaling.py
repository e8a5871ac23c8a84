"""The scaling chart and fit from study rows (no training: rows made by hand)."""

import math

import pytest

from dfgr_torchrec.study.report import _scaling_lines
from dfgr_torchrec.study.scaling import fit_r2, log_linear_fit, plot_scaling, scaling_points


def _row(model, flops, gauc, seed=0, task="like", split="test", chosen=True):
    return {
        "data": "ml",
        "model": model,
        "train_flops": flops,
        "gauc": gauc,
        "seed": seed,
        "task": task,
        "split": split,
        "chosen": chosen,
    }


ROWS = [
    *[_row("dfgr@small", 1e12, g, seed=s) for s, g in enumerate([0.60, 0.62])],
    _row("dfgr@mid", 1e13, 0.65),
    _row("dfgr@big", 1e14, 0.70),
    _row("metagr@small", 2e12, 0.58),
    _row("metagr@big", 2e14, 0.66),
    _row("dfgr@big", 1e14, 0.99, split="valid"),  # validation rows never enter the chart
    _row("bias", None, 0.55),  # not a scaling entry
]


def test_points_average_seeds_and_the_fit_is_least_squares():
    points = scaling_points(ROWS, "ml")
    assert set(points) == {"dfgr", "metagr"}
    assert points["dfgr"] == [(1e12, pytest.approx(0.61), "small"), (1e13, 0.65, "mid"), (1e14, 0.70, "big")]
    a, b = log_linear_fit(points["dfgr"])
    assert b == pytest.approx(0.045) and a + b * 13 == pytest.approx(0.6533333, abs=1e-6)
    # dfgr: 0.61, 0.65, 0.70 against 0.6083, 0.6533, 0.6983 on the line: R^2 = 1 - 0.0000167 / 0.004067
    assert fit_r2(points["dfgr"], a, b) == pytest.approx(
        1 - (2 * (0.61 - 0.6083333) ** 2 + (0.65 - 0.6533333) ** 2) / 0.0040667, abs=1e-4
    )
    a, b = log_linear_fit(points["metagr"])  # two points: the line through them
    assert fit_r2(points["metagr"], a, b) == pytest.approx(1.0)
    assert a + b * math.log10(2e12) == pytest.approx(0.58) and a + b * math.log10(2e14) == pytest.approx(0.66)


def test_chart_and_summary_lines(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = tmp_path / "ml_scaling.png"
    fits = plot_scaling(plt, ROWS, "ml", str(path))
    assert set(fits) == {"dfgr", "metagr"} and path.stat().st_size > 0
    lines = "\n".join(_scaling_lines(ROWS, "ml"))
    assert "fit: GAUC = " in lines and "Scaling, metagr" in lines and "R^2 1.00" in lines
    assert plot_scaling(plt, [_row("dfgr@one", 1e12, 0.6)], "ml", str(tmp_path / "none.png")) == {}  # one size: no fit
