"""``dfgr data init``: a data YAML guessed from a log's head loads, names the right columns and prepares."""

import gzip
import random
import subprocess
import sys

import duckdb
import pytest

from dfgr_torchrec.data.config import load_data_config
from dfgr_torchrec.data.init import data_yaml, read_head
from dfgr_torchrec.data.prepare import ensure_prepared, load_report


def _rows(time_scale=1):
    rng = random.Random(0)
    for user in range(30):
        t = 1_700_000_000
        for _ in range(12):
            t += rng.randint(1, 999)
            yield (
                f"u{user}",
                rng.randint(0, 300),
                t * time_scale,
                rng.randint(0, 1),
                rng.choice(["pv", "cart", "buy"]),
                f"c{rng.randint(0, 40)}",
            )


HEADER = ("visitor_id", "product", "event_time", "is_click", "behavior", "category")


def _init(log, tmp_path):
    source, columns = read_head(str(log))
    out = tmp_path / "guessed.yaml"
    out.write_text(
        data_yaml(str(log), source, columns).replace(
            "output_dir: data/prepared", f"output_dir: {tmp_path / 'prepared'}"
        )
    )
    return load_data_config(str(out))


def test_a_tsv_with_a_header_is_guessed_and_prepares(tmp_path):
    log = tmp_path / "events.tsv"
    log.write_text("\t".join(HEADER) + "\n" + "".join("\t".join(map(str, r)) + "\n" for r in _rows()))
    config = _init(log, tmp_path)
    assert (config.source.format, config.source.header, config.source.timestamp_unit) == ("tsv", True, "s")
    columns = config.source.columns
    assert (columns.user, columns.item, columns.timestamp) == ("visitor_id", "product", "event_time")
    assert {name: (a.column, a.equals) for name, a in config.actions.items()} == {
        "is_click": ("is_click", None),
        "buy": ("behavior", "buy"),
        "cart": ("behavior", "cart"),
        "pv": ("behavior", "pv"),
    }
    report = load_report(ensure_prepared(config))
    assert report["rows_read"] == 30 * 12


def test_a_headerless_gzip_csv_in_milliseconds_is_named_by_index(tmp_path):
    log = tmp_path / "events.csv.gz"
    with gzip.open(log, "wt") as f:
        f.writelines(",".join(map(str, r)) + "\n" for r in _rows(time_scale=1000))
    config = _init(log, tmp_path)
    assert (config.source.format, config.source.header, config.source.timestamp_unit) == ("csv", False, "ms")
    assert (config.source.columns.timestamp, config.source.columns.item) == (2, 1)
    assert load_report(ensure_prepared(config))["rows_read"] == 30 * 12


def test_a_parquet_log_is_read(tmp_path):
    log = tmp_path / "events.parquet"
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t ("
        + ", ".join(f"{n} {t}" for n, t in zip(HEADER, ["VARCHAR", "BIGINT", "BIGINT", "BIGINT", "VARCHAR", "VARCHAR"]))
        + ")"
    )
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)", list(_rows()))
    con.execute(f"COPY t TO '{log}' (FORMAT parquet)")
    config = _init(log, tmp_path)
    assert config.source.format == "parquet" and config.source.columns.user == "visitor_id"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--log", "no/such.tsv"], "no/such.tsv: no such log file"),
        (["--log", "README.md", "--rows", "0"], "--rows: expected a positive integer, got 0"),
    ],
)
def test_bad_input_is_one_line(args, message):
    result = subprocess.run(
        [sys.executable, "-m", "dfgr_torchrec.cli", "data", "init", *args], capture_output=True, text=True
    )
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_an_existing_out_is_kept_without_force(tmp_path):
    out = tmp_path / "mine.yaml"
    out.write_text("kept")
    result = subprocess.run(
        [sys.executable, "-m", "dfgr_torchrec.cli", "data", "init", "--log", "README.md", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "exists; pass --force" in result.stderr and out.read_text() == "kept"
