"""`dfgr bench prepare` times one engine in a child process and writes seconds, peak RSS and load."""

import json

import pytest
import yaml

from dfgr_torchrec.cli import main


@pytest.mark.parametrize("engine", ["duckdb", "python"])
def test_bench_prepare_writes_seconds_and_peak_rss(tmp_path, engine):
    log = tmp_path / "log.tsv"
    log.write_text(
        "u\ti\tt\tclick\n"
        + "".join(f"{u}\t{i}\t{t}\t{(u + i) % 2}\n" for u in range(5) for t, i in enumerate(range(6)))
    )
    config = {
        "name": "b",
        "output_dir": str(tmp_path / "p"),
        "actions": {"click": {"column": "click"}},
        "source": {"path": str(log), "format": "tsv", "columns": {"user": "u", "item": "i", "timestamp": "t"}},
    }
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "r.json"
    assert main(["bench", "prepare", "--config", str(tmp_path / "b.yaml"), "--engine", engine, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["engine"] == engine and result["interactions"] == 30 and result["rows_read"] == 30
    assert result["seconds"] > 0 and 0 < result["peak_rss_gb"] < 4 and len(result["load_average_before"]) == 3
    assert result["rows_per_s"] == pytest.approx(30 / result["seconds"], rel=0.01)
    assert result["bytes_per_row"] == pytest.approx(
        result["peak_rss_gb"] * 2**30 / 30, abs=0.0006 * 2**30 / 30
    )  # peak_rss_gb is rounded
