"""`dfgr bench attention --isolate`: each path in its own process, repeated, summarised with spreads."""

import argparse
import json

import pytest

from dfgr_torchrec.bench.isolated import flags_of, medians, summarise, summarise_rows
from dfgr_torchrec.cli import main


@pytest.mark.slow
def test_each_path_runs_in_its_own_process_and_is_summarised(tmp_path):
    """~30 s: two child processes, each importing torch."""
    path = tmp_path / "bench.json"
    args = ["bench", "attention", "--isolate", "--runs", "2", "--seq-lens", "16", "--num-candidates", "2"]
    args += ["--batch-size", "2", "--repeats", "1", "--d-model", "16", "--kernels", "tiled", "--models", "dfgr"]
    assert main([*args, "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    assert result["protocol"].startswith("isolated") and result["config"]["d_model"] == 16
    [row] = result["rows"]
    path_ = row["paths"]["tiled/dfgr"]
    assert len(path_["train_ms"]["runs"]) == 2 and path_["train_ms"]["median"] > 0
    assert len(path_["cpu"]["user_s"]) == 2 and all(s > 0 for s in path_["cpu"]["user_s"])
    assert 0 < path_["train_share_of_peak"] < 1


def test_the_summary_is_the_median_and_spread_over_runs():
    def child(ms):
        fields = {"dfgr_train_ms": ms, "dfgr_infer_ms": 1.0, "dfgr_train_gflops": 10.0, "matmul_peak_gflops": 100.0}
        return {"rows": [fields], "cpu": {"user_s": 1.0, "sys_s": 0.1}}

    [row] = summarise({("tiled", "dfgr"): [child(10.0), child(12.0), child(11.0)]}, [64])
    train = row["paths"]["tiled/dfgr"]["train_ms"]
    assert train["median"] == 11.0 and abs(train["spread"] - 2 / 11) < 1e-12
    assert row["paths"]["tiled/dfgr"]["train_share_of_peak"] == 0.1


def test_flags_of_writes_the_parsed_values_back_as_flags():
    args = argparse.Namespace(seq_lens=[16, 32], no_compile=True, package_dir=None, quiet=False, seed=0)
    assert flags_of(args, ("seq_lens", "no_compile", "package_dir", "quiet", "seed")) == [
        "--seq-lens",
        "16",
        "32",
        "--no-compile",
        "--seed",
        "0",
    ]


def test_rows_merge_into_summaries_keys_kept():
    runs = [{"rows": [{"seq_len": 16, "ms": ms, "ok": True, "diff": None}]} for ms in (1.0, 3.0, 2.0)]
    [row] = summarise_rows(runs, ("seq_len",))
    assert row["seq_len"] == 16 and row["ok"] is True and row["diff"] is None
    assert row["ms"]["median"] == 2.0 and row["ms"]["spread"] == 1.0
    assert medians([row]) == [{"seq_len": 16, "ms": 2.0, "ok": True, "diff": None}]
