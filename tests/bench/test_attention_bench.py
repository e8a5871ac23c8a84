"""`dfgr bench attention` runs end to end at toy sizes and writes the JSON it promises."""

import json

from dfgr_torchrec.cli import main


def test_bench_writes_rows(tmp_path):
    path = tmp_path / "bench.json"
    rc = main([
        "bench", "attention", "--seq-lens", "16", "32", "--num-candidates", "4", "--batch-size", "2",
        "--repeats", "1", "--d-model", "16", "--json", str(path),
    ])
    assert rc == 0
    result = json.loads(path.read_text())
    assert [r["seq_len"] for r in result["rows"]] == [16, 32]
    for row in result["rows"]:
        assert row["num_candidates"] == 4
        assert row["train_speedup"] == row["metagr_train_ms"] / row["dfgr_train_ms"]
        assert row["infer_speedup"] == row["metagr_infer_ms"] / row["dfgr_infer_ms"]
        assert row["dfgr_train_peak_mb"] is not None and row["dfgr_train_peak_mb"] >= 0
