"""``dfgr data init --log PATH``: a commented data YAML to edit, from the head of a log.

Reads the first rows of a CSV / TSV / Parquet log (plain or gzip; DuckDB sniffs the delimiter and
the header), prints each column with its type, distinct values in the head and examples, and
guesses the user, item and timestamp columns (and the timestamp's unit from the epoch bands
:mod:`~dfgr_torchrec.data.time_units` uses) and candidate actions: 0/1 columns, and the values of
a text column with few of them (``behavior: buy``). Every guess is written as such in the YAML;
``dfgr data prepare`` then checks the whole log.

Example::

    dfgr data init --log logs/events.tsv --out configs/data/mylog.yaml
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import yaml

from dfgr_torchrec.data.time_units import EPOCH_RANGE_S, UNITS

HEAD_ROWS = 20_000
_NAME_HINTS = {
    "user": r"user|uid|member|customer|visitor|session|account",
    "item": r"item|video|movie|product|sku|photo|article|doc|content|iid|goods|song|track",
    "timestamp": r"time|ts$|^ts|date|epoch|when",
}
_UNIT_KEYS = {"seconds": "s", "milliseconds": "ms", "microseconds": "us", "nanoseconds": "ns"}
MAX_ACTION_VALUES = 12  # a text column with at most this many values in the head: one action per value


@dataclass
class Column:
    """One column as seen in the head of the log."""

    name: str
    kind: str  # integer | number | text | other
    distinct: int
    examples: List[str]
    values: List  # its distinct values when few (<= MAX_ACTION_VALUES), else []
    low: Optional[float] = None
    high: Optional[float] = None


def _format_of(path: str) -> str:
    name = path.lower().removesuffix(".gz")
    return "parquet" if name.endswith((".parquet", ".pq")) else "csv"


def read_head(path: str, rows: int = HEAD_ROWS) -> Tuple[Dict, List[Column]]:
    """``(source keys, columns)`` from the first ``rows`` rows of ``path``."""
    import duckdb

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such log file")
    con = duckdb.connect()
    try:
        if _format_of(path) == "parquet":
            source, relation = (
                {"format": "parquet"},
                con.sql("SELECT * FROM read_parquet(?) LIMIT ?", params=[path, rows]),
            )
        else:
            delimiter, header = con.execute("SELECT Delimiter, HasHeader FROM sniff_csv(?)", [path]).fetchall()[0]
            fmt = {",": "csv", "\t": "tsv"}.get(delimiter, "delimited")
            source = {"format": fmt, **({"delimiter": delimiter} if fmt == "delimited" else {}), "header": bool(header)}
            relation = con.sql(
                "SELECT * FROM read_csv(?, delim=?, header=?) LIMIT ?", params=[path, delimiter, header, rows]
            )
        names, types, data = relation.columns, [str(t) for t in relation.types], relation.fetchall()
    except duckdb.Error as e:
        raise ValueError(f"{path}: cannot read the log's head: {str(e).splitlines()[0]}") from None
    finally:
        con.close()
    if not data:
        raise ValueError(f"{path}: no rows to look at")
    columns = [_column(name, kind, [row[i] for row in data]) for i, (name, kind) in enumerate(zip(names, types))]
    if not source.get("header", True):  # without a header the YAML names columns by index
        for i, c in enumerate(columns):
            c.name = i
    return source, columns


def _column(name: str, duck_type: str, values: list) -> Column:
    present = [v for v in values if v is not None]
    distinct = sorted(set(present), key=str)
    kind = (
        "integer"
        if re.fullmatch(r"U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?", duck_type)
        else "number"
        if duck_type in ("DOUBLE", "FLOAT", "REAL") or duck_type.startswith("DECIMAL")
        else "text"
        if duck_type == "VARCHAR"
        else "other"
    )
    numeric = kind in ("integer", "number") and present
    return Column(
        name=name,
        kind=kind,
        distinct=len(distinct),
        examples=[str(v) for v in distinct[:3]],
        values=distinct if len(distinct) <= MAX_ACTION_VALUES else [],
        low=float(min(present)) if numeric else None,
        high=float(max(present)) if numeric else None,
    )


def timestamp_unit(column: Column) -> Optional[str]:
    """The epoch unit every head value of ``column`` falls in (1990-2100), else None."""
    if column.kind != "integer" or column.low is None:
        return None
    lo, hi = EPOCH_RANGE_S
    for unit, seconds in UNITS:
        if lo / seconds <= column.low and column.high < hi / seconds:
            return _UNIT_KEYS[unit]
    return None


def guess_roles(columns: List[Column]) -> Dict[str, Column]:
    """``{"user", "item", "timestamp"}`` -> the column guessed for each (absent: no guess)."""
    roles: Dict[str, Column] = {}
    stamps = [c for c in columns if timestamp_unit(c)]
    named = [c for c in stamps if re.search(_NAME_HINTS["timestamp"], str(c.name), re.I)]
    if stamps:
        roles["timestamp"] = (named or stamps)[0]
    ids = [c for c in columns if c.kind in ("integer", "text") and c is not roles.get("timestamp") and c.distinct > 2]
    for role in ("user", "item"):
        hinted = [c for c in ids if re.search(_NAME_HINTS[role], str(c.name), re.I) and c not in roles.values()]
        if hinted:
            roles[role] = hinted[0]
    rest = sorted((c for c in ids if c not in roles.values()), key=lambda c: c.distinct)
    if "user" not in roles and rest:  # a head holds few users with many rows each, and many items
        roles["user"] = rest.pop(0)
    if "item" not in roles and rest:
        roles["item"] = rest.pop()
    return roles


def guess_actions(columns: List[Column], taken: List[Column]) -> Dict[str, Dict]:
    """Candidate actions: each 0/1 column, and each value of a text column with few values."""
    actions: Dict[str, Dict] = {}
    for c in columns:
        if c in taken:
            continue
        if c.kind in ("integer", "number") and c.values and set(c.values) <= {0, 1} and len(c.values) == 2:
            actions[_key(c.name)] = {"column": c.name}
        elif c.kind == "text" and 2 <= len(c.values) <= MAX_ACTION_VALUES:
            for value in c.values:
                actions[_key(value)] = {"column": c.name, "equals": value}
    return actions


def _key(name) -> str:
    key = re.sub(r"\W+", "_", str(name)).strip("_").lower()
    return key if key and not key[0].isdigit() else f"action_{key}"


def _flow(value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1_000).strip()
    return text.removesuffix("...").strip()  # a plain scalar's document-end marker


def data_yaml(path: str, source: Dict, columns: List[Column]) -> str:
    """The commented data YAML of the log at ``path`` (see docs/data.md for every key)."""
    roles = guess_roles(columns)
    missing = [r for r in ("user", "item", "timestamp") if r not in roles]
    actions = guess_actions(columns, list(roles.values()))
    unit = timestamp_unit(roles["timestamp"]) if "timestamp" in roles else "s"
    name = re.sub(r"[^\w.-]+", "-", os.path.basename(path).split(".")[0]) or "my-log"
    mapping = {r: (roles[r].name if r in roles else f"<the {r} column>") for r in ("user", "item", "timestamp")}
    lines = [
        f"# Written by `dfgr data init --log {path}` from the head of the log: check every guess,",
        "# then `dfgr data prepare --config <this file>` (every key: docs/data.md).",
        f"name: {name}",
        "source:",
        f"  path: {path}",
        *(f"  {k}: {_flow(v)}" for k, v in source.items()),
        f"  timestamp_unit: {unit}" + ("" if "timestamp" in roles else "   # no epoch-time column found: set it"),
        f"  columns: {_flow(mapping)}"
        + (f"   # guessed; not found: {', '.join(missing)}" if missing else "   # guessed"),
        "  on_bad_rows: error             # or skip (counted in report.json)",
        "  duplicates: error              # or merge / skip / keep: the same (user, item, timestamp) twice",
    ]
    sides = [
        c
        for c in columns
        if c not in roles.values() and c.kind in ("integer", "text") and c.distinct > MAX_ACTION_VALUES
    ]
    if sides:
        lines.append(
            f"  # side_features: {_flow({_key(c.name): c.name for c in sides})}   # item side features, if they are"
        )
    lines.append(
        "actions:                         # each a task (one logit); positive when non-zero, `equals` or `at_least`"
    )
    lines += [f"  {k}: {_flow(v)}" for k, v in actions.items()] or [
        "  # none guessed: name at least one, e.g. click: {column: is_click}"
    ]
    lines += [
        'split: {valid_per_user: 1, test_per_user: 1}   # or time_cutoff: "2024-06-01"',
        "vocab: {oov: oov}",
        "output_dir: data/prepared",
    ]
    return "\n".join(lines) + "\n"


def describe(columns: List[Column], rows: int) -> str:
    """The columns as a table: type, distinct values in the head, examples."""
    from tabulate import tabulate

    table = [[c.name, c.kind, c.distinct, ", ".join(c.examples)] for c in columns]
    return f"the first {rows} rows:\n" + tabulate(table, headers=["column", "type", "distinct", "examples"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log", required=True, help="the log: CSV / TSV / Parquet, plain or .gz")
    parser.add_argument("--out", default=None, help="the data YAML to write (default: print it)")
    parser.add_argument("--rows", type=int, default=HEAD_ROWS, help="how many rows of the head to read")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")


def run(args: argparse.Namespace) -> None:
    if args.rows <= 0:
        raise ValueError(f"--rows: expected a positive integer, got {args.rows}")
    if args.out and os.path.exists(args.out) and not args.force:
        raise ValueError(f"{args.out}: exists; pass --force to replace it")
    source, columns = read_head(args.log, args.rows)
    print(describe(columns, args.rows))
    text = data_yaml(args.log, source, columns)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        print(f"\nwrote {args.out}: edit it, then `dfgr data prepare --config {args.out}`")
    else:
        print("\n" + text, end="")
