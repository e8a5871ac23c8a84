"""``dfgr bench prepare``: seconds and peak memory of ``dfgr data prepare`` with one engine.

The JSON also gives ``rows_per_s`` (rows read / wall seconds) and ``bytes_per_row`` (peak RSS /
rows read), the two figures that say whether a larger log fits a machine.

Runs the preparation in a child process (a fresh interpreter, so nothing of this one is
counted) and records its wall time and its peak resident memory (``wait4``'s ``ru_maxrss``:
the whole process, DuckDB's buffers included), with the load average beside them, since a
shared machine's load shifts the seconds.

Engines: ``duckdb`` and ``python`` run ``dfgr data prepare`` itself (``source.engine``).
``polars-minimal`` is not an engine of the package: it is the smallest Polars pipeline that
does the heavy part of the job on a log whose ids are integers (read and parse the columns,
encode users and items to dense codes, sort by user, time and file order; no bad-row
accounting, no text ids, no split or vocabularies), used to choose between DuckDB and
Polars without writing a second full engine. It is a lower bound on a Polars engine's cost.

Example::

    dfgr bench prepare --config /tmp/synth14/data.yaml --engine duckdb --json results/bench/prepare_synth14_duckdb.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from typing import Any, Dict

from dfgr_torchrec.bench.child import run_child
from dfgr_torchrec.bench.output import write_json

ENGINES = ("duckdb", "python", "polars-minimal")
POLARS_NOTE = (
    "a minimal Polars pipeline, not a full engine: typed read (integer ids assumed), dense codes for users and "
    "items, sort by user, time and file order; no bad-row accounting, text ids, duplicates, split, vocabularies or "
    "writing. A lower bound on what a Polars engine would cost, measured to choose between DuckDB and Polars."
)

_PREPARE = """
import dataclasses, json, sys
from dfgr_torchrec.data.config import load_data_config
from dfgr_torchrec.data.prepare import load_report, prepare
config = load_data_config(sys.argv[1])
config = dataclasses.replace(config, source=dataclasses.replace(config.source, engine=sys.argv[2]))
try:
    path = prepare(config, force=True, progress=False)
except (ValueError, OSError) as e:  # the log's own errors: one line, as `dfgr data prepare` prints them
    sys.exit(f"dfgr data prepare: {e}")
report = load_report(path)
print(json.dumps({"prepared": path, "rows_read": report["rows_read"], "interactions": report["interactions"],
                  "users": report["users"], "items": report["items"], "seconds_inside": report["seconds"]}))
"""

_POLARS = """
import json, sys, time
import numpy as np
import polars as pl
from dfgr_torchrec.data.config import load_data_config
config = load_data_config(sys.argv[1])
src = config.source
cols = src.columns
actions = [a.column for a in config.actions.values()]
start = time.perf_counter()
frame = (
    pl.scan_csv(src.path, separator=src.delimiter, has_header=src.header,
                schema_overrides={c: pl.Int64 for c in [cols.user, cols.item, cols.timestamp, *actions]})
    .with_row_index("position")
    .with_columns((pl.col(cols.user).rank("dense") - 1).cast(pl.Int32).alias("u"),
                  (pl.col(cols.item).rank("dense") - 1).cast(pl.Int32).alias("i"))
    .sort(["u", cols.timestamp, "position"])
    .select(["u", "i", cols.timestamp, "position", *actions])
    .collect(engine="streaming")
)
arrays = {c: frame[c].to_numpy() for c in frame.columns}
users, items = np.unique(arrays["u"]), np.unique(arrays["i"])
print(json.dumps({"rows_read": len(frame), "interactions": len(frame), "users": len(users), "items": len(items),
                  "seconds_inside": round(time.perf_counter() - start, 3)}))
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, help="data YAML of the log (e.g. written by `dfgr data synth --config-out`)"
    )
    parser.add_argument("--engine", choices=ENGINES, default="duckdb")
    parser.add_argument(
        "--json", dest="json_path", default=None, help="where to write the result (e.g. results/bench/...)"
    )


def measure(config_path: str, engine: str) -> Dict[str, Any]:
    """Runs one preparation in a child process: its output, wall seconds and peak RSS."""
    from dfgr_torchrec.data.config import load_data_config, source_digest

    config = load_data_config(config_path)  # a bad config is refused here, in one line, not in the child
    code = _POLARS if engine == "polars-minimal" else _PREPARE
    load_before = os.getloadavg()
    try:
        seconds, peak_mib, out = run_child([sys.executable, "-c", code, config_path, engine], capture=True)
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"bench prepare: the {engine} run failed (exit {e.returncode})") from None
    found = json.loads(out.strip().splitlines()[-1])
    seconds = round(seconds, 2)  # rows_per_s is of the seconds recorded (a 0.29 s run: 1% apart otherwise)
    return {
        "benchmark": "prepare",
        "engine": engine,
        "data_config": config_path,
        "log": config.source.path,
        "log_bytes": source_digest(config.source.path)["size"]
        if engine != "polars-minimal"
        else os.path.getsize(config.source.path),
        **found,
        "seconds": seconds,
        "peak_rss_gb": round(peak_mib / 2**10, 3),
        "rows_per_s": round(found["rows_read"] / seconds, 1) if seconds > 0 else None,
        "bytes_per_row": round(peak_mib * 2**20 / found["rows_read"], 1) if found["rows_read"] else None,
        "chunk_rows": os.environ.get("DFGR_PREPARE_CHUNK_ROWS", "2000000") if engine == "duckdb" else None,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "duckdb_memory_limit": os.environ.get("DFGR_DUCKDB_MEMORY", "1GB") if engine == "duckdb" else None,
        "note": POLARS_NOTE if engine == "polars-minimal" else None,
        "python": platform.python_version(),
        "versions": _versions(),
        "date": datetime.date.today().isoformat(),
    }


def _versions() -> Dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("duckdb", "polars", "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def run(args: argparse.Namespace) -> Dict[str, Any]:
    result = measure(args.config, args.engine)
    print(
        f"{args.engine}: {result['interactions']:,} interactions in {result['seconds']:.1f} s, "
        f"peak RSS {result['peak_rss_gb']:.2f} GB, {result['rows_per_s']:,.0f} rows/s, {result['bytes_per_row']} bytes a row (load average {result['load_average_before'][0]:.2f} "
        f"-> {result['load_average_after'][0]:.2f}, {result['cpus']} CPUs)"
    )
    write_json(result, args.json_path)
    return result
