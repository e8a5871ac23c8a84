"""`dfgr bench serving` runs end to end at toy sizes, writes the JSON it promises, and its cached path is exact."""

import json
import math

import pytest

from dfgr_torchrec.bench.serving import percentile
from dfgr_torchrec.cli import main

PATHS = ("metagr_full", "dfgr_full", "dfgr_cached", "metagr_cached", "dfgr_append", "hstu_full", "hstu_cached")


def test_serving_bench_writes_rows(tmp_path):
    path = tmp_path / "serving.json"
    rc = main(
        [
            "bench",
            "serving",
            "--seq-lens",
            "16",
            "32",
            "--num-candidates",
            "2",
            "4",
            "--batch-users",
            "2",
            "--min-repeats",
            "2",
            "--max-repeats",
            "3",
            "--target-seconds",
            "0.01",
            "--no-compile",
            "--json",
            str(path),
        ]
    )
    assert rc == 0
    result = json.loads(path.read_text())
    assert result["benchmark"] == "serving" and result["threads"] >= 1 and result["torch"]
    assert result["targets"] is None  # N=1024, M=64 was not measured
    rows = result["rows"]
    assert [(r["seq_len"], r["num_candidates"]) for r in rows] == [(16, 2), (16, 4), (32, 2), (32, 4)]
    for row in rows:
        for name in PATHS:
            assert row[f"{name}_ms"] > 0 and row[f"{name}_p99_ms"] >= row[f"{name}_ms"]
            assert row[f"{name}_rps"] > 0 and 2 <= row[f"{name}_repeats"] <= 3
        assert row["exported_ms"] is None and row["exported_over_cached"] is None
        assert row["exported_max_abs_diff"] is None
        assert row["max_abs_diff"] <= 1e-5 and row["metagr_max_abs_diff"] <= 1e-5 and row["hstu_max_abs_diff"] <= 1e-5
        assert row["batched_max_abs_diff"] <= 1e-5
        assert row["cached_finite"] is True
        assert row["cached_speedup_vs_metagr_full"] == row["metagr_full_ms"] / row["dfgr_cached_ms"]
        assert row["cached_speedup_vs_dfgr_full"] == row["dfgr_full_ms"] / row["dfgr_cached_ms"]
        # MetaGR caches two tokens per interaction, DFGR one (plus the inputs and keys)
        assert 0 < row["dfgr_cache_bytes"] < row["metagr_cache_bytes"]
        for name in ("metagr_full", "dfgr_full", "dfgr_cached"):
            assert row[f"batched_{name}_ms"] > 0 and row[f"batched_{name}_rps"] > 0
    assert rows[2]["dfgr_cache_bytes"] > rows[0]["dfgr_cache_bytes"]  # grows with N
    assert all(math.isfinite(r["dfgr_cached_ms"]) for r in rows)


def test_percentile_interpolates():
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0], 50) == 1.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 99) == pytest.approx(4.96)
    assert percentile([7.0], 99) == 7.0


@pytest.mark.slow
def test_runs_repeat_the_bench_in_fresh_processes(tmp_path):
    """~25 s: two child processes, each importing torch and torchrec."""
    path = tmp_path / "serving.json"
    args = ["bench", "serving", "--seq-lens", "16", "--num-candidates", "2", "--batch-users", "0", "--no-compile"]
    args += ["--min-repeats", "2", "--max-repeats", "2", "--runs", "2", "--json", str(path)]
    assert main(args) == 0
    result = json.loads(path.read_text())
    assert result["protocol"].startswith("isolated") and len(result["cpu"]) == 2
    [row] = result["rows"]
    assert (row["seq_len"], row["num_candidates"]) == (16, 2)  # keys stay plain
    cached = row["dfgr_cached_ms"]
    assert len(cached["runs"]) == 2 and min(cached["runs"]) <= cached["median"] <= max(cached["runs"])
    assert row["exported_ms"] is None and row["cached_finite"] is True
    assert row["max_abs_diff"]["median"] <= 1e-5
