"""`dfgr bench attention` runs end to end at toy sizes and writes the JSON it promises."""

import json

from dfgr_torchrec.cli import main


def test_bench_writes_rows(tmp_path):
    path = tmp_path / "bench.json"
    rc = main(
        [
            "bench",
            "attention",
            "--seq-lens",
            "16",
            "32",
            "--num-candidates",
            "4",
            "--batch-size",
            "2",
            "--repeats",
            "1",
            "--d-model",
            "16",
            "--json",
            str(path),
        ]
    )
    assert rc == 0
    result = json.loads(path.read_text())
    assert [r["seq_len"] for r in result["rows"]] == [16, 32]
    for row in result["rows"]:
        assert row["num_candidates"] == 4
        assert row["train_speedup"] == row["metagr_train_ms"] / row["dfgr_train_ms"]
        assert row["infer_speedup"] == row["metagr_infer_ms"] / row["dfgr_infer_ms"]
        assert row["dfgr_train_peak_mb"] is not None and row["dfgr_train_peak_mb"] >= 0


def test_data_bench_on_the_kuairand_sample(tmp_path):
    import pathlib

    import pytest

    if not (pathlib.Path(__file__).resolve().parents[3] / "shared" / "data").exists():
        pytest.skip("../shared/data is absent")
    path = tmp_path / "data.json"
    assert (
        main(
            [
                "bench",
                "data",
                "--config",
                "configs/data/kuairand-sample.yaml",
                "--train-steps",
                "2",
                "--train-config",
                "configs/train/debug.yaml",
                "--num-workers",
                "0",
                "--json",
                str(path),
            ]
        )
        == 0
    )
    result = json.loads(path.read_text())
    assert result["interactions"] == 41704 and result["loader"]["sequences_per_s"] > 0
    assert result["loader_over_train"] > 0


def test_init_scale_bench_shows_the_epsilon_damping(tmp_path):
    path = tmp_path / "init.json"
    assert (
        main(
            [
                "bench",
                "init-scale",
                "--seq-len",
                "32",
                "--max-seq-len",
                "64",
                "--batch-size",
                "4",
                "--eps",
                "1e-2",
                "1e-6",
                "--json",
                str(path),
            ]
        )
        == 0
    )
    rows = json.loads(path.read_text())["rows"]
    assert [(r["scale_len"], r["eps"]) for r in rows] == [(64, 1e-2), (64, 1e-6), (32, 1e-2), (32, 1e-6)]
    for big, small in (rows[0:2], rows[2:4]):
        assert big["attention_var"] == small["attention_var"] > 0
        assert 0 < big["branch_gain"] < small["branch_gain"] < 1  # a larger epsilon damps more
    assert rows[2]["attention_var"] > rows[0]["attention_var"]  # a smaller divisor, a larger output
