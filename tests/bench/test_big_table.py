"""`dfgr bench big-table` at toy scale: synth, prepare and a 2-process TorchX run, row-wise sharded."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_big_table_bench_runs_the_demo_path(tmp_path):
    out = tmp_path / "big.json"
    env = dict(os.environ, PATH=f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(
        [
            str(pathlib.Path(sys.executable).parent / "dfgr"),
            "bench",
            "big-table",
            "--workdir",
            str(tmp_path / "work"),
            "--num-users",
            "300",
            "--num-items",
            "20000",
            "--steps",
            "2",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    result = json.loads(out.read_text())
    prepared, train = result["prepare"], result["train"]
    assert prepared["item_rows"] == json.loads((pathlib.Path(prepared["path"]) / "meta.json").read_text())["item_rows"]
    assert 5000 < prepared["item_rows"] < 20000 and prepared["peak_rss_mb"] > 0
    assert train["steps"] == 2 and train["tokens_per_s"] > 0
    assert len(train["peak_memory_mb_per_rank"]) == 2 and min(train["peak_memory_mb_per_rank"]) > 100
    assert result["item_table"]["fp32_mb_per_rank_row_wise"] == pytest.approx(
        result["item_table"]["fp32_mb"] / 2, abs=0.1
    )
    assert "item table" in proc.stdout
