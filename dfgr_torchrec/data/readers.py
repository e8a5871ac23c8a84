"""Reading an interaction log into columns, with errors that name file, line and column.

Bad rows either stop the run with an error naming the file, line, column and what was
expected (``on_bad_rows: error``, the default) or are skipped and counted per reason
(``on_bad_rows: skip``); nothing is dropped without being counted.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from dfgr_torchrec.progress import progress as progress_bar

from dfgr_torchrec.data.config import ActionConfig, Column, DataConfig


class BadInputError(ValueError):
    """A row or file that does not match the data config."""


@dataclass
class RawLog:
    """The log as columns, one entry per kept row, in file order."""

    users: np.ndarray  # str
    items: np.ndarray  # str
    timestamps: np.ndarray  # int64
    lines: np.ndarray  # int64: source line (1-based; header is line 1) or row index for Parquet
    labels: np.ndarray  # uint8 [rows, num_actions]
    action_values: Optional[np.ndarray]  # str: raw values of config.action_feature
    side: Dict[str, np.ndarray]  # str
    rows_read: int
    dropped: Counter = field(default_factory=Counter)


class _BadRow(Exception):
    def __init__(self, reason: str, column: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.column = reason, column


def _parse_timestamp(value: str, column: str) -> int:
    if value == "":
        raise _BadRow("missing timestamp", column, "expected an integer timestamp, got an empty field")
    try:
        return int(value)
    except ValueError:
        try:
            number = float(value)
        except ValueError:
            raise _BadRow("non-numeric timestamp", column, f"expected an integer timestamp, got {value!r}") from None
        if not number.is_integer():
            raise _BadRow("non-numeric timestamp", column, f"expected an integer timestamp, got {value!r}") from None
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
            raise _BadRow(f"non-numeric action {name}", column, f"expected a number, got {v!r}") from None

    if action.equals is not None:
        target_number = float(action.equals)
        return lambda v: int(number(v) == target_number)
    if action.at_least is not None:
        threshold = float(action.at_least)
        return lambda v: int(number(v) >= threshold)
    return lambda v: int(number(v) != 0.0)


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
    for name, col in src.side_features.items():
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
    """Reads ``config.source`` into a :class:`RawLog` (CSV/TSV/delimited, plain or gzip, or Parquet)."""
    path = config.source.path
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file (source.path)")
    if os.path.isdir(path):
        raise BadInputError(f"{path}: is a directory (source.path); expected the log file itself")
    if config.source.format == "parquet":
        return _read_parquet(config)
    return _read_delimited(config, progress)


def _split_lines(path: str, delimiter: str, progress: bool) -> Iterator[Tuple[int, List[str]]]:
    size = os.path.getsize(path)
    bar = progress_bar(total=size, unit="B", unit_scale=True, desc=f"parse {os.path.basename(path)}", enabled=progress)
    read = 0

    def counted(f) -> Iterator[str]:
        nonlocal read
        for number, line in enumerate(f, start=1):
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
    bar.update(size - bar.n)
    bar.close()


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


def _read_delimited(config: DataConfig, progress: bool) -> RawLog:
    src = config.source
    keys = _column_keys(config)
    lines_iter = _split_lines(src.path, src.delimiter, progress)
    if src.header:
        try:
            _, header = next(lines_iter)
        except StopIteration:
            raise BadInputError(f"{src.path}: empty file, expected a header row") from None
        index = _resolve_header(src.path, header, keys)
    else:
        index = {k: int(v) for k, v in keys.items()}
    return _collect(config, ((ln, f) for ln, f in lines_iter if f), index)


class _RowParser:
    """Checks and parses the user, item, timestamp and action columns of one row.

    ``parse`` raises :class:`_BadRow` for a row that does not match the config; with
    ``require_sorted`` it also remembers each user's last timestamp.
    """

    def __init__(self, config: DataConfig, index: Dict[str, int]) -> None:
        self.src = config.source
        names = list(config.actions)
        self.parsers = [_action_parser(n, config.actions[n]) for n in names]
        self.action_idx = [index[f"actions.{n}"] for n in names]
        self.ui, self.ii, self.ti = index["user"], index["item"], index["timestamp"]
        self.needed = max(index.values()) + 1
        self.inverse = {v: k for k, v in index.items()}
        self.last_time: Dict[str, int] = {}

    def parse(self, fields: Sequence[Any]) -> Tuple[str, str, int, List[int]]:
        """``(user, item, timestamp, labels)`` of a row."""
        src = self.src
        if len(fields) < self.needed:
            missing = [f"{self.inverse[i]} (column {i})" for i in range(len(fields), self.needed) if i in self.inverse]
            raise _BadRow("missing columns", ", ".join(missing), f"expected at least {self.needed} fields, got {len(fields)}")
        user = str(fields[self.ui]).strip()
        item = str(fields[self.ii]).strip()
        if user == "":
            raise _BadRow("empty user", f"user ({src.columns.user})", "expected a user id, got an empty field")
        if item == "":
            raise _BadRow("empty item", f"item ({src.columns.item})", "expected an item id, got an empty field")
        ts = _parse_timestamp(str(fields[self.ti]).strip(), f"timestamp ({src.columns.timestamp})")
        row_labels = [p(str(fields[i]).strip()) for p, i in zip(self.parsers, self.action_idx)]
        if src.require_sorted:
            self._check_sorted(user, ts)
        return user, item, ts, row_labels

    def _check_sorted(self, user: str, ts: int) -> None:
        if ts < self.last_time.get(user, ts):
            raise _BadRow(
                "unsorted timestamp", f"timestamp ({self.src.columns.timestamp})",
                f"expected a time >= the user's previous event ({self.last_time[user]}), got {ts}",
            )
        self.last_time[user] = ts


class _Columns:
    """The kept rows, gathered column by column."""

    def __init__(self, config: DataConfig, index: Dict[str, int]) -> None:
        self.num_actions = len(config.actions)
        self.side_names = list(config.source.side_features)
        self.side_idx = [index[f"side_features.{n}"] for n in self.side_names]
        self.feature_idx = index.get("action_feature")
        self.users: List[str] = []
        self.items: List[str] = []
        self.times: List[int] = []
        self.lines: List[int] = []
        self.labels: List[List[int]] = []
        self.values: List[str] = []
        self.side: List[List[str]] = [[] for _ in self.side_names]

    def add(self, line_no: int, fields: Sequence[Any], parsed: Tuple[str, str, int, List[int]]) -> None:
        """Appends a row that ``_RowParser.parse`` accepted (``parsed`` is what it returned)."""
        user, item, ts, row_labels = parsed
        self.users.append(user)
        self.items.append(item)
        self.times.append(ts)
        self.lines.append(line_no)
        self.labels.append(row_labels)
        if self.feature_idx is not None:
            self.values.append(str(fields[self.feature_idx]).strip())
        for column, i in zip(self.side, self.side_idx):
            column.append(str(fields[i]).strip())

    def to_log(self, rows_read: int, dropped: Counter) -> RawLog:
        return RawLog(
            users=np.array(self.users, dtype=str),
            items=np.array(self.items, dtype=str),
            timestamps=np.array(self.times, dtype=np.int64),
            lines=np.array(self.lines, dtype=np.int64),
            labels=np.array(self.labels, dtype=np.uint8).reshape(len(self.users), self.num_actions),
            action_values=np.array(self.values, dtype=str) if self.feature_idx is not None else None,
            side={n: np.array(c, dtype=str) for n, c in zip(self.side_names, self.side)},
            rows_read=rows_read,
            dropped=dropped,
        )


def _collect(config: DataConfig, rows: Iterator[Tuple[int, Sequence[Any]]], index: Dict[str, int]) -> RawLog:
    """Parses ``(line number, fields)`` rows into a :class:`RawLog` under ``on_bad_rows``."""
    src = config.source
    parser = _RowParser(config, index)
    columns = _Columns(config, index)
    skip = src.on_bad_rows == "skip"
    dropped: Counter = Counter()
    rows_read = 0
    for line_no, fields in rows:
        rows_read += 1
        try:
            parsed = parser.parse(fields)
        except _BadRow as bad:
            if not skip:
                raise BadInputError(f"{src.path}:{line_no}: column {bad.column}: {bad}") from None
            dropped[bad.reason] += 1
            continue
        columns.add(line_no, fields, parsed)
    return columns.to_log(rows_read, dropped)


def _read_parquet(config: DataConfig) -> RawLog:
    import pyarrow.parquet as pq

    src = config.source
    keys = _column_keys(config)
    schema_names = pq.read_schema(src.path).names
    for key, col in keys.items():
        if col not in schema_names:
            raise BadInputError(f"{src.path}: no column {col!r} (from {key}); it has {schema_names}")
    columns = sorted(set(keys.values()), key=list(keys.values()).index)
    table = pq.read_table(src.path, columns=columns)
    data = [["" if v is None else v for v in table.column(c).to_pylist()] for c in columns]
    index = {key: columns.index(col) for key, col in keys.items()}
    # Parquet rows are numbered from 1 (no header line), so errors say "<file>:<row>".
    return _collect(config, ((r + 1, [d[r] for d in data]) for r in range(table.num_rows)), index)
