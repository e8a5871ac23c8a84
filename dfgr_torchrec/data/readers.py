"""Reading an interaction log into columns, with errors that name file, line and column.

Bad rows either stop the run with an error naming the file, line, column and what was
expected (``on_bad_rows: error``, the default) or are skipped and counted per reason
(``on_bad_rows: skip``); nothing is dropped without being counted.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from dfgr_torchrec.data.config import ActionConfig, Column, DataConfig, source_files
from dfgr_torchrec.data.vocab import encode_ids
from dfgr_torchrec.features import ACTION_FEATURE
from dfgr_torchrec.progress import progress as progress_bar


class BadInputError(ValueError):
    """A row or file that does not match the data config."""


@dataclass
class RawLog:
    """The kept rows of the log (in any order: ``position`` is the file order). User, item, side
    and action ids are int codes into ``vocabs[<name>]``, the column's sorted unique raw ids
    (int64 when all are integers, see :func:`dfgr_torchrec.data.vocab.encode_ids`), so nothing
    downstream holds one Python string per row."""

    users: np.ndarray  # codes into vocabs["user"]
    items: np.ndarray  # codes into vocabs["item"]
    timestamps: np.ndarray  # int64
    position: np.ndarray  # int64: place in the log (shards in sorted path order, then line); ties keep it
    labels: np.ndarray  # uint8 [rows, num_actions]
    action_values: Optional[np.ndarray]  # codes into vocabs["action"]: raw values of config.action_feature
    side: Dict[str, np.ndarray]  # codes into vocabs[<name>]
    vocabs: Dict[str, np.ndarray]
    rows_read: int
    locate: Callable[[int], Tuple[str, int]]  # (file, line) of the row at a position (Parquet: row number from 1)
    dropped: Counter = field(default_factory=Counter)


# why a row is bad: the keys of report.json's rows_dropped (both engines use these)
MISSING_COLUMNS, EMPTY_USER, EMPTY_ITEM = "missing columns", "empty user", "empty item"
MISSING_TIMESTAMP, NON_NUMERIC_TIMESTAMP, UNSORTED = "missing timestamp", "non-numeric timestamp", "unsorted timestamp"


def duplicate_error(
    locate: Callable[[int], Tuple[str, int]],
    position: int,
    first_position: int,
    user: Any,
    item: Any,
    timestamp: int,
    total: int,
) -> "BadInputError":
    """The error of ``duplicates: error``: the duplicate at ``position``, first seen at ``first_position``."""
    (path, line), (first_path, first_line) = locate(int(position)), locate(int(first_position))
    return BadInputError(
        f"{path}:{line}: duplicate event (user {str(user)!r}, item {str(item)!r}, timestamp "
        f"{timestamp}) first seen at {'line ' if first_path == path else first_path + ':'}{first_line}; "
        f"{total} duplicate(s) in all (set source.duplicates: merge, skip or keep)"
    )


def non_numeric_action(name: str) -> str:
    return f"non-numeric action {name}"


def non_numeric_side(name: str) -> str:
    return f"non-numeric side feature {name}"


def negative_side(name: str) -> str:
    return f"negative side feature {name}"


class _BadRow(Exception):
    def __init__(self, reason: str, column: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.column = reason, column


def _parse_timestamp(value: str, column: str) -> int:
    if value == "":
        raise _BadRow(MISSING_TIMESTAMP, column, "expected an integer timestamp, got an empty field")
    try:
        return int(value)
    except ValueError:
        try:
            number = float(value)
        except ValueError:
            raise _BadRow(NON_NUMERIC_TIMESTAMP, column, f"expected an integer timestamp, got {value!r}") from None
        if not number.is_integer():
            raise _BadRow(NON_NUMERIC_TIMESTAMP, column, f"expected an integer timestamp, got {value!r}") from None
        return int(number)


def _action_parser(name: str, action: ActionConfig) -> Callable[[str], int]:
    column = f"actions.{name} ({action.column})"
    if action.equals is not None and isinstance(action.equals, str):
        target = action.equals
        return lambda v: int(v == target)

    def number(v: str) -> float:
        try:
            return float(v)
        except ValueError:
            raise _BadRow(non_numeric_action(name), column, f"expected a number, got {v!r}") from None

    if action.equals is not None:
        target_number = float(action.equals)
        return lambda v: int(number(v) == target_number)
    if action.at_least is not None:
        threshold = float(action.at_least)
        return lambda v: int(number(v) >= threshold)
    return lambda v: int(number(v) != 0.0)


def log2_bucket(value: str, name: str, column: str) -> str:
    """The id of a ``bucket: log2`` side feature's trimmed ``value``: the largest k with
    2**k <= value + 1 (in double precision), as text; not a finite number >= 0 is a bad row."""
    try:
        number = float(value) if value.isascii() else math.nan  # DuckDB reads no other digits
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise _BadRow(non_numeric_side(name), column, f"expected a number, got {value!r}")
    if number < 0:
        raise _BadRow(negative_side(name), column, f"expected a number >= 0, got {value!r}")
    return str(int(math.floor(number + 1.0)).bit_length() - 1)


def _column_keys(config: DataConfig) -> Dict[str, Column]:
    src = config.source
    keys: Dict[str, Column] = {
        "user": src.columns.user,
        "item": src.columns.item,
        "timestamp": src.columns.timestamp,
    }
    for name, action in config.actions.items():
        keys[f"actions.{name}"] = action.column
    if config.action_feature is not None:
        keys["action_feature"] = config.action_feature
    for name, col in src.side_columns.items():
        keys[f"side_features.{name}"] = col
    return keys


def _resolve_header(path: str, header: List[str], keys: Dict[str, Column]) -> Dict[str, int]:
    names = [h.strip() for h in header]
    index = {}
    for key, col in keys.items():
        if col not in names:
            raise BadInputError(f"{path}:1: header lacks column {col!r} (from {key}); it has {names}")
        index[key] = names.index(col)
    return index


def read_log(config: DataConfig, progress: bool = True) -> RawLog:
    """Reads ``config.source`` (a file, or a folder / glob of shards) into a :class:`RawLog`, with
    the engine ``source.engine`` names: ``duckdb`` (out of core) or ``python`` (this module)."""
    if config.source.engine == "duckdb":
        from dfgr_torchrec.data.duck import read_log_duckdb

        return read_log_duckdb(config, progress)
    columns = _Columns(config)
    _scan(config, columns, progress)
    return columns.to_log()


def raise_first_bad_row(config: DataConfig) -> None:
    """Reads the log, keeping nothing, and raises the :class:`BadInputError` of its first bad row
    (as ``on_bad_rows: error`` does); returns when there is none."""
    _scan(config, None, progress=False, stop_at_bad_row=True)


def shard_files(config: DataConfig) -> List[str]:
    """The log's files (:func:`source_files`); a missing one is ``FileNotFoundError``."""
    return source_files(config.source.path)


def _scan(config: DataConfig, columns: Optional["_Columns"], progress: bool, stop_at_bad_row: bool = False) -> None:
    """Parses every shard's rows under ``on_bad_rows`` into ``columns`` (None: keep nothing)."""
    files = shard_files(config)
    last_time: Dict[str, int] = {}
    skip = config.source.on_bad_rows == "skip" and not stop_at_bad_row
    for shard, path in enumerate(files):
        index, rows = _open_shard(config, path, progress)
        parser = _RowParser(config, index, last_time)
        for line_no, fields in rows:
            if columns is not None:
                columns.rows_read += 1
            try:
                parsed = parser.parse(fields)
            except _BadRow as bad:
                if not skip:
                    raise BadInputError(f"{path}:{line_no}: column {bad.column}: {bad}") from None
                columns.dropped[bad.reason] += 1
                continue
            if columns is not None:
                columns.add(shard, line_no, parsed)
    if columns is not None:
        columns.files = files


def _open_shard(
    config: DataConfig, path: str, progress: bool
) -> Tuple[Dict[str, int], Iterator[Tuple[int, Sequence[Any]]]]:
    """``(column index of each key, (line number, fields) of each non-empty row)`` of one file."""
    if config.source.format == "parquet":
        return _parquet_rows(config, path)
    src = config.source
    keys = _column_keys(config)
    lines_iter = _split_lines(path, src.delimiter, progress)
    if src.header:
        try:
            _, header = next(lines_iter)
        except StopIteration:
            raise BadInputError(f"{path}: empty file, expected a header row") from None
        index = _resolve_header(path, header, keys)
    else:
        index = {k: int(v) for k, v in keys.items()}
    return index, ((ln, f) for ln, f in lines_iter if f)


def read_header(config: DataConfig, path: str) -> Dict[str, int]:
    """The column index of each key in one delimited file (its header's errors, or the config's indices)."""
    index, rows = _open_shard(config, path, progress=False)
    rows.close()
    return index


def _split_lines(path: str, delimiter: str, progress: bool) -> Iterator[Tuple[int, List[str]]]:
    size = os.path.getsize(path)
    bar = progress_bar(total=size, unit="B", unit_scale=True, desc=f"parse {os.path.basename(path)}", enabled=progress)
    read = 0

    def counted(f) -> Iterator[str]:
        nonlocal read
        for number, line in enumerate(iter(lambda: f.readline(MAX_LINE_CHARS), ""), start=1):
            if len(line) == MAX_LINE_CHARS and not line.endswith(("\n", "\r")):
                raise BadInputError(_long_line(path, number, line))
            read += len(line)
            if number % 65536 == 0:
                bar.update(min(read, size) - bar.n)
            yield line

    with open_text(path) as f:
        try:
            if len(delimiter) == 1:
                yield from enumerate(csv.reader(counted(f), delimiter=delimiter), start=1)
            else:
                for line_no, line in enumerate(counted(f), start=1):
                    line = line.rstrip("\r\n")
                    yield line_no, line.split(delimiter) if line else []
        except UnicodeDecodeError:
            raise BadInputError(_utf8_error(path)) from None
        except (EOFError, gzip.BadGzipFile) as e:
            raise BadInputError(f"{path}: damaged compressed file ({e})") from None
        except csv.Error as e:  # e.g. a field over the csv module's limit
            raise BadInputError(f"{path}: {e}; not a delimited text log (a binary or damaged file?)") from None
    bar.update(size - bar.n)
    bar.close()


MAX_LINE_CHARS = 1 << 24  # a row is read whole: a file without line breaks must not be read whole


def _long_line(path: str, number: int, line: str) -> str:
    what = "NUL bytes and no line break" if "\x00" in line else "no line break"
    return (
        f"{path}:{number}: {what} in {MAX_LINE_CHARS:,} characters: not a delimited text log "
        "(a binary or damaged file?)"
    )


GZIP_MAGIC, ZSTD_MAGIC = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"


def open_binary(path: str) -> io.BufferedIOBase:
    """The log's bytes: gzip (and zstd when ``zstandard`` is installed) decompressed, by their magic bytes."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic.startswith(GZIP_MAGIC):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if magic == ZSTD_MAGIC:
        try:
            import zstandard
        except ImportError:
            raise BadInputError(
                f"{path}: zstd-compressed, and the zstandard module is not installed; "
                "decompress it (zstd -d) or gzip it instead"
            ) from None
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)  # type: ignore[return-value]
    return open(path, "rb")


def open_text(path: str) -> io.TextIOWrapper:
    """The log as UTF-8 text (a leading byte-order mark is dropped), for the csv module."""
    return io.TextIOWrapper(open_binary(path), encoding="utf-8-sig", newline="")


def _utf8_error(path: str) -> str:
    """Where the first byte that is not UTF-8 is: ``<file>:<line>:<column>`` (column in characters)."""
    with open_binary(path) as f:
        for line_no, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                column = len(line[: e.start].decode("utf-8")) + 1
                return (
                    f"{path}:{line_no}:{column}: byte 0x{line[e.start]:02x} is not valid UTF-8; "
                    "the log must be UTF-8 (convert it, e.g. iconv -f latin1 -t utf-8)"
                )
    return f"{path}: not valid UTF-8"


Parsed = Tuple[str, str, int, List[int], Optional[str], List[str]]  # user, item, time, labels, action value, side


class _RowParser:
    """Checks and parses one row of a file whose columns are at ``index``.

    ``parse`` raises :class:`_BadRow` for a row that does not match the config; with
    ``require_sorted`` it also remembers each user's last timestamp in ``last_time`` (shared by
    the shards: the log is one sequence).
    """

    def __init__(self, config: DataConfig, index: Dict[str, int], last_time: Dict[str, int]) -> None:
        self.src = config.source
        names = list(config.actions)
        self.parsers = [_action_parser(n, config.actions[n]) for n in names]
        self.action_idx = [index[f"actions.{n}"] for n in names]
        self.ui, self.ii, self.ti = index["user"], index["item"], index["timestamp"]
        self.side_idx = [index[f"side_features.{n}"] for n in config.source.side_features]
        buckets, columns = config.source.side_buckets, config.source.side_columns
        self.side_buckets = [  # (name, column text) of each bucketed side feature, None for a plain one
            (n, f"side_features.{n} ({columns[n]})") if n in buckets else None for n in config.source.side_features
        ]
        self.feature_idx = index.get("action_feature")
        self.needed = max(index.values()) + 1
        self.inverse = {v: k for k, v in index.items()}
        self.last_time = last_time

    def parse(self, fields: Sequence[Any]) -> Parsed:
        """``(user, item, timestamp, labels, action value, side values)`` of a row."""
        src = self.src
        if len(fields) < self.needed:
            missing = [f"{self.inverse[i]} (column {i})" for i in range(len(fields), self.needed) if i in self.inverse]
            raise _BadRow(
                MISSING_COLUMNS, ", ".join(missing), f"expected at least {self.needed} fields, got {len(fields)}"
            )
        user = str(fields[self.ui]).strip()
        item = str(fields[self.ii]).strip()
        if user == "":
            raise _BadRow(EMPTY_USER, f"user ({src.columns.user})", "expected a user id, got an empty field")
        if item == "":
            raise _BadRow(EMPTY_ITEM, f"item ({src.columns.item})", "expected an item id, got an empty field")
        ts = _parse_timestamp(str(fields[self.ti]).strip(), f"timestamp ({src.columns.timestamp})")
        row_labels = [p(str(fields[i]).strip()) for p, i in zip(self.parsers, self.action_idx)]
        side = [str(fields[i]).strip() for i in self.side_idx]
        for k, bucket in enumerate(self.side_buckets):
            if bucket is not None:
                side[k] = log2_bucket(side[k], *bucket)
        if src.require_sorted:
            self._check_sorted(user, ts)
        value = str(fields[self.feature_idx]).strip() if self.feature_idx is not None else None
        return user, item, ts, row_labels, value, side

    def _check_sorted(self, user: str, ts: int) -> None:
        if ts < self.last_time.get(user, ts):
            raise _BadRow(
                UNSORTED,
                f"timestamp ({self.src.columns.timestamp})",
                f"expected a time >= the user's previous event ({self.last_time[user]}), got {ts}",
            )
        self.last_time[user] = ts


class _Columns:
    """The kept rows, gathered column by column (the reference engine: Python lists)."""

    def __init__(self, config: DataConfig) -> None:
        self.num_actions = len(config.actions)
        self.side_names = list(config.source.side_features)
        self.has_feature = config.action_feature is not None
        self.users: List[str] = []
        self.items: List[str] = []
        self.times: List[int] = []
        self.shards: List[int] = []
        self.lines: List[int] = []
        self.labels: List[List[int]] = []
        self.values: List[str] = []
        self.side: List[List[str]] = [[] for _ in self.side_names]
        self.rows_read = 0
        self.dropped: Counter = Counter()
        self.files: List[str] = []

    def add(self, shard: int, line_no: int, parsed: Parsed) -> None:
        """Appends a row that ``_RowParser.parse`` accepted (``parsed`` is what it returned)."""
        user, item, ts, row_labels, value, side = parsed
        self.users.append(user)
        self.items.append(item)
        self.times.append(ts)
        self.shards.append(shard)
        self.lines.append(line_no)
        self.labels.append(row_labels)
        if self.has_feature:
            self.values.append(value)  # type: ignore[arg-type]
        for column, v in zip(self.side, side):
            column.append(v)

    def to_log(self) -> RawLog:
        vocabs, codes = {}, {}
        columns = {"user": self.users, "item": self.items, **dict(zip(self.side_names, self.side))}
        if self.has_feature:
            columns[ACTION_FEATURE] = self.values
        for name, values in columns.items():
            vocabs[name], codes[name] = encode_ids(np.array(values, dtype=str))
        files, shards, lines = self.files, np.array(self.shards, dtype=np.int64), np.array(self.lines, dtype=np.int64)
        return RawLog(
            users=codes["user"],
            items=codes["item"],
            timestamps=np.array(self.times, dtype=np.int64),
            position=np.arange(len(self.users), dtype=np.int64),
            labels=np.array(self.labels, dtype=np.uint8).reshape(len(self.users), self.num_actions),
            action_values=codes.get(ACTION_FEATURE),
            side={n: codes[n] for n in self.side_names},
            vocabs=vocabs,
            rows_read=self.rows_read,
            locate=lambda position: (files[shards[position]], int(lines[position])),
            dropped=self.dropped,
        )


def parquet_columns(config: DataConfig, path: str) -> List[str]:
    """The columns the config reads from a Parquet file, in key order; a missing one is an error naming it."""
    import pyarrow.parquet as pq

    keys = _column_keys(config)
    schema_names = pq.read_schema(path).names
    for key, col in keys.items():
        if col not in schema_names:
            raise BadInputError(f"{path}: no column {col!r} (from {key}); it has {schema_names}")
    return sorted(set(keys.values()), key=list(keys.values()).index)  # type: ignore[arg-type]


def _parquet_rows(config: DataConfig, path: str) -> Tuple[Dict[str, int], Iterator[Tuple[int, Sequence[Any]]]]:
    import pyarrow.parquet as pq

    columns = parquet_columns(config, path)
    table = pq.read_table(path, columns=columns)
    data = [["" if v is None else v for v in table.column(c).to_pylist()] for c in columns]
    index = {key: columns.index(col) for key, col in _column_keys(config).items()}
    # Parquet rows are numbered from 1 (no header line), so errors say "<file>:<row>".
    return index, ((r + 1, [d[r] for d in data]) for r in range(table.num_rows))
