"""Data set configs: where a log is, how its columns map to users, items, times and actions.

A user's own log needs a YAML file of this shape, not code::

    name: my-log
    source:
      path: logs/events.tsv       # or a folder / glob of shards of one format, read in sorted path order
      format: tsv                 # csv | tsv | parquet | delimited (with `delimiter`, e.g. "::")
      header: true                # false: columns are 0-based indices (a YAML boolean, unquoted)
      timestamp_unit: s           # s | ms | us | ns: the unit of the timestamp column (scales a date time_cutoff)
      columns: {user: user_id, item: video_id, timestamp: time_ms}
      side_features:              # item side features, each one id column of its own embedding table
        category: category_id     # {name: column}: the raw values are the ids
        duration: {column: duration_ms, bucket: log2}   # a number >= 0, bucketed: floor(log2(value + 1))
      on_bad_rows: error          # or skip: skipped rows are counted per reason in report.json
      duplicates: error           # same (user, item, timestamp) twice: error | merge (one interaction, the
                                  # union of the actions) | skip (keep the first) | keep
      require_sorted: false       # true: a user's event earlier than their previous one is a bad row
      download: null              # a public data set to fetch into path's folder when path is missing (movielens-1m)
      engine: duckdb              # or python: the pure-Python reference reader (same outputs, in memory)
    actions:                      # one action type each: a task (one logit) and a bit of the action id
      click: {column: is_click}             # numeric, positive when != 0
      like: {column: label, equals: 1}      # positive when the value equals
      buy: {column: behavior, equals: buy}
      good: {column: rating, at_least: 4}   # positive when the number is >= the threshold
    action_feature: null          # a column whose raw values are the action id (e.g. rating); default: bitmask of actions
    split: {valid_per_user: 1, test_per_user: 1}   # or time_cutoff: <timestamp in the log's unit, or an
                                                   # ISO date/datetime, e.g. "2022-01-01" (UTC unless an offset is given)>
    vocab: {oov: oov}             # ids unseen in training: one shared OOV row, or `hash` into hash_buckets rows

Like a training YAML it may start from others (``defaults: [base.yaml]``, paths relative to it, its
own keys winning) and take ``key=value`` overrides (:mod:`dfgr_torchrec.yaml_config`).
"""

from __future__ import annotations

import datetime
import glob
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from dfgr_torchrec.config import check, from_dict
from dfgr_torchrec.data.atomic import file_digest
from dfgr_torchrec.data.sources import check_download_name
from dfgr_torchrec.yaml_config import load_config

Column = Union[str, int]
FORMATS = ("csv", "tsv", "parquet", "delimited")
DUPLICATES = ("error", "merge", "skip", "keep")
DELIMITERS = {"csv": ",", "tsv": "\t"}
TIMESTAMP_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}  # per second
COLUMN = "a column name or a 0-based column index"
ENGINES = ("duckdb", "python")  # duckdb: out of core; python: the reference reader (same outputs)
BUCKETS = ("log2",)  # how a numeric side feature becomes ids: log2 is floor(log2(value + 1)), so 0 -> 0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_column(key: str, value: Any) -> None:
    check(isinstance(value, str) or (_is_int(value) and value >= 0), key, COLUMN, value)


def _check_bool(key: str, value: Any) -> None:
    check(isinstance(value, bool), key, "a boolean (true or false, unquoted)", value)


def parse_time_cutoff(value: Any) -> Optional[float]:
    """Unix seconds of an ISO date/datetime string (UTC unless it has an offset); None if not one."""
    try:
        moment = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


@dataclass
class ColumnsConfig:
    """Which columns hold the user, the item and the timestamp (names, or indices without header)."""

    user: Column
    item: Column
    timestamp: Column

    def __post_init__(self) -> None:
        for key in ("user", "item", "timestamp"):
            _check_column(key, getattr(self, key))


@dataclass
class SideFeatureConfig:
    """A numeric item side feature: ``column``'s value, a number >= 0, as the id of its ``bucket``
    (``log2``: the largest k with 2**k <= value + 1, i.e. floor(log2(value + 1)); 0 -> 0, 1 -> 1,
    2..5 -> 2...). A value that is not a finite number >= 0 is a bad row (``source.on_bad_rows``)."""

    column: Column
    bucket: str

    def __post_init__(self) -> None:
        _check_column("column", self.column)
        check(self.bucket in BUCKETS, "bucket", " or ".join(repr(b) for b in BUCKETS), self.bucket)


SideFeature = Union[str, int, SideFeatureConfig]


def _side_feature(name: Any, value: Any) -> SideFeature:
    """One ``side_features`` entry: a column (the plain form, kept as is) or a :class:`SideFeatureConfig`."""
    check(isinstance(name, str) and name != "", "side_features", "feature names that are strings", name)
    if isinstance(value, Mapping):
        return from_dict(SideFeatureConfig, value, f"side_features.{name}")
    check(
        isinstance(value, SideFeatureConfig) or isinstance(value, str) or (_is_int(value) and value >= 0),
        f"side_features.{name}",
        f"{COLUMN} or a mapping {{column: <column>, bucket: log2}}",
        value,
    )
    return value


@dataclass
class SourceConfig:
    path: str
    format: str = "csv"
    columns: ColumnsConfig = None  # type: ignore[assignment]
    header: bool = True
    delimiter: Optional[str] = None
    side_features: Dict[str, SideFeature] = field(default_factory=dict)
    on_bad_rows: str = "error"
    duplicates: str = "error"
    require_sorted: bool = False
    download: Optional[str] = None
    timestamp_unit: str = "s"
    engine: str = "duckdb"

    def __post_init__(self) -> None:
        check(isinstance(self.path, str) and self.path != "", "path", "a file path", self.path)
        check(self.engine in ENGINES, "engine", f"one of {ENGINES}", self.engine)
        _check_bool("header", self.header)
        _check_bool("require_sorted", self.require_sorted)
        check(self.delimiter is None or isinstance(self.delimiter, str), "delimiter", "a string", self.delimiter)
        check(isinstance(self.side_features, Mapping), "side_features", "a mapping {name: column}", self.side_features)
        self.side_features = {name: _side_feature(name, value) for name, value in self.side_features.items()}
        check(
            self.timestamp_unit in TIMESTAMP_UNITS,
            "timestamp_unit",
            f"one of {tuple(TIMESTAMP_UNITS)}",
            self.timestamp_unit,
        )
        check_download_name(self.download, "download")
        check(self.format in FORMATS, "format", f"one of {FORMATS}", self.format)
        if self.format == "delimited":
            check(bool(self.delimiter), "delimiter", "a delimiter for format 'delimited'", self.delimiter)
        elif self.format in DELIMITERS:
            self.delimiter = self.delimiter or DELIMITERS[self.format]
        check(self.columns is not None, "columns", "{user, item, timestamp}", self.columns)
        if isinstance(self.columns, Mapping):
            self.columns = from_dict(ColumnsConfig, self.columns, "columns")
        check(self.on_bad_rows in ("error", "skip"), "on_bad_rows", "'error' or 'skip'", self.on_bad_rows)
        check(self.duplicates in DUPLICATES, "duplicates", f"one of {DUPLICATES}", self.duplicates)
        for key, col in [*asdict(self.columns).items(), *self.side_columns.items()]:
            if self.header or self.format == "parquet":
                check(isinstance(col, str), f"columns.{key}", "a column name (the file has a header)", col)
            else:
                check(
                    isinstance(col, int) and col >= 0, f"columns.{key}", "a 0-based column index (header: false)", col
                )

    @property
    def side_columns(self) -> Dict[str, Column]:
        """The column of each side feature."""
        return {n: f.column if isinstance(f, SideFeatureConfig) else f for n, f in self.side_features.items()}

    @property
    def side_buckets(self) -> Dict[str, str]:
        """The bucketing of each numeric side feature (the plain ones are left out)."""
        return {n: f.bucket for n, f in self.side_features.items() if isinstance(f, SideFeatureConfig)}


@dataclass
class ActionConfig:
    """One action type, read from one column.

    Positive when ``equals`` is given and the value equals it; when ``at_least`` is given and
    the number is >= it; otherwise when the number is non-zero.
    """

    column: Column
    equals: Optional[Union[str, int, float]] = None
    at_least: Optional[float] = None

    def __post_init__(self) -> None:
        _check_column("column", self.column)
        check(
            self.equals is None or isinstance(self.equals, (str, int, float)),
            "equals",
            "a number or a string",
            self.equals,
        )
        check(self.at_least is None or _is_number(self.at_least), "at_least", "a number", self.at_least)
        check(self.equals is None or self.at_least is None, "equals/at_least", "at most one of them", self)


@dataclass
class SplitConfig:
    """Time-respecting split: per user the last ``test_per_user`` interactions are test
    candidates and the ``valid_per_user`` before them validation candidates; the rest is
    training history. With ``time_cutoff``, test is every interaction at or after it instead."""

    valid_per_user: int = 1
    test_per_user: int = 1
    time_cutoff: Optional[Union[int, str]] = None
    min_train_per_user: int = 1

    def __post_init__(self) -> None:
        for key in ("valid_per_user", "test_per_user"):
            check(_is_int(getattr(self, key)) and getattr(self, key) >= 0, key, "an integer >= 0", getattr(self, key))
        check(
            _is_int(self.min_train_per_user) and self.min_train_per_user >= 1,
            "min_train_per_user",
            "an integer >= 1",
            self.min_train_per_user,
        )
        cutoff = self.time_cutoff
        check(
            cutoff is None or _is_int(cutoff) or (isinstance(cutoff, str) and parse_time_cutoff(cutoff) is not None),
            "time_cutoff",
            "an integer timestamp in the log's unit or an ISO date/datetime such as '2022-01-01' "
            "or '2022-01-01T08:00:00+08:00'",
            cutoff,
        )

    def cutoff_in(self, unit: str) -> Optional[int]:
        """``time_cutoff`` in the log's timestamp ``unit`` (an ISO date is converted; an integer is taken as is)."""
        if not isinstance(self.time_cutoff, str):
            return self.time_cutoff
        seconds = parse_time_cutoff(self.time_cutoff)
        return int(round(seconds * TIMESTAMP_UNITS[unit]))


@dataclass
class VocabConfig:
    """Ids seen in training get contiguous rows 1..V; unseen ids get row 0 (``oov``) or one of
    ``hash_buckets`` rows after the vocabulary (``hash``)."""

    oov: str = "oov"
    hash_buckets: int = 1024

    def __post_init__(self) -> None:
        check(self.oov in ("oov", "hash"), "oov", "'oov' or 'hash'", self.oov)
        check(
            _is_int(self.hash_buckets) and self.hash_buckets > 0,
            "hash_buckets",
            "a positive integer",
            self.hash_buckets,
        )


@dataclass
class DataConfig:
    name: str
    source: SourceConfig
    actions: Dict[str, ActionConfig]
    action_feature: Optional[Column] = None
    split: SplitConfig = field(default_factory=SplitConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    output_dir: str = "data/prepared"

    def __post_init__(self) -> None:
        check(isinstance(self.name, str) and self.name != "", "name", "a non-empty string", self.name)
        check(
            isinstance(self.output_dir, str) and self.output_dir != "", "output_dir", "a folder path", self.output_dir
        )
        self.source = _section(SourceConfig, self.source, "source")
        self.split = _section(SplitConfig, self.split, "split")
        self.vocab = _section(VocabConfig, self.vocab, "vocab")
        check(
            isinstance(self.actions, Mapping) and len(self.actions) > 0,
            "actions",
            "at least one action type",
            self.actions,
        )
        self.actions = {name: _action(name, a) for name, a in self.actions.items()}
        if self.action_feature is not None:
            _check_column("action_feature", self.action_feature)

    @property
    def task_names(self):
        return list(self.actions)

    @property
    def time_cutoff(self) -> Optional[int]:
        """``split.time_cutoff`` in the unit of the log's timestamps (``source.timestamp_unit``)."""
        return self.split.cutoff_in(self.source.timestamp_unit)

    def config_key(self) -> str:
        """A hash of the config alone (recorded in ``meta.json``: finds a prepared copy without the log)."""
        config = asdict(self)
        del config["source"]["engine"]  # the engines give identical outputs: either one's copy serves both
        payload = json.dumps({"format_version": PREPARED_FORMAT_VERSION, "config": config}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def fingerprint(self, source: Optional[Dict[str, Any]] = None) -> str:
        """A hash of everything that shapes the prepared data: the config and the log's content
        (``source``: :func:`source_digest` of ``source.path``, computed when not given)."""
        source = source_digest(self.source.path) if source is None else source
        payload = json.dumps(
            {"config": self.config_key(), "input": [source["size"], source["blake2b"]]}, sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def source_files(path: str) -> List[str]:
    """The files of ``source.path``: the file itself, every file of a folder (names starting with
    ``.`` or ``_`` left out, e.g. ``_SUCCESS``), or the files a glob matches; in sorted path order,
    which is the log's order. Raises ``FileNotFoundError`` when there is none."""
    if os.path.isdir(path):
        files = [os.path.join(path, n) for n in os.listdir(path) if not n.startswith((".", "_"))]
        files = sorted(f for f in files if os.path.isfile(f))
        if not files:
            raise FileNotFoundError(f"{path}: a folder with no log files in it (source.path)")
        return files
    if os.path.isfile(path):
        return [path]
    if glob.has_magic(path):
        files = sorted(f for f in glob.glob(path) if os.path.isfile(f))
        if files:
            return files
        raise FileNotFoundError(f"{path}: the glob matches no file (source.path)")
    raise FileNotFoundError(f"{path}: no such file (source.path)")


def source_present(path: str) -> bool:
    """Whether ``source.path`` names at least one log file."""
    try:
        return bool(source_files(path))
    except FileNotFoundError:
        return False


def source_digest(path: str) -> Dict[str, Any]:
    """``{"path", "size", "blake2b"}`` of a log: the prepared-data cache keys on its content, so a log
    rewritten with the same size and mtime (``cp -p``, ``touch -r``) is never served stale. For shards
    (a folder or a glob) the size is their total and the digest covers each shard's name and digest."""
    files = source_files(path)
    if len(files) == 1 and files[0] == path:
        return {"path": path, "size": os.path.getsize(path), "blake2b": file_digest(path)}
    digest, base = hashlib.blake2b(digest_size=16), os.path.commonpath([os.path.dirname(f) for f in files])
    for file in files:
        digest.update(f"{os.path.relpath(file, base)}\0{file_digest(file)}\0".encode())
    return {
        "path": path,
        "size": sum(os.path.getsize(f) for f in files),
        "blake2b": digest.hexdigest(),
        "shards": len(files),
    }


def _section(cls: type, value: Any, key: str) -> Any:
    """A nested config from its mapping (already built: kept); anything else names ``key``."""
    if isinstance(value, cls):
        return value
    check(isinstance(value, Mapping), key, f"a mapping of {cls.__name__} keys", value)
    return from_dict(cls, value, key)


def _action(name: Any, value: Any) -> ActionConfig:
    check(isinstance(name, str) and name != "", "actions", "action names that are strings", name)
    if isinstance(value, ActionConfig):
        return value
    check(
        isinstance(value, Mapping),
        f"actions.{name}",
        "a mapping such as {column: <column>}, {column: <column>, equals: <value>} or {column: <column>, at_least: <number>}",
        value,
    )
    return from_dict(ActionConfig, value, f"actions.{name}")


PREPARED_FORMAT_VERSION = 3  # 2: meta.json records the source digest, the config key and every array's size;
# 3: a vocabulary whose raw ids are all integers is int64, sorted numerically


def load_data_config(path: str, overrides: Sequence[str] = ()) -> DataConfig:
    """Reads, composes (``defaults:``), overrides (``source.engine=python``) and validates a data
    YAML through :func:`dfgr_torchrec.yaml_config.load_config`; errors name the file and the key."""
    return load_config(DataConfig, path, overrides)
