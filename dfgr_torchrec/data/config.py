"""Data set configs: where a log is, how its columns map to users, items, times and actions.

A user's own log needs a YAML file of this shape, not code::

    name: my-log
    source:
      path: logs/events.tsv
      format: tsv                 # csv | tsv | parquet | delimited (with `delimiter`, e.g. "::")
      header: true                # false: columns are 0-based indices
      columns: {user: user_id, item: video_id, timestamp: time_ms}
      side_features: {category: category_id}
      on_bad_rows: error          # or skip: skipped rows are counted per reason in report.json
      duplicates: error           # same (user, item, timestamp) twice: error | merge (one interaction, the
                                  # union of the actions) | skip (keep the first) | keep
      require_sorted: false       # true: a user's event earlier than their previous one is a bad row
      download: null              # a public data set to fetch into path's folder when path is missing (movielens-1m)
    actions:                      # one action type each: a task (one logit) and a bit of the action id
      click: {column: is_click}             # numeric, positive when != 0
      like: {column: label, equals: 1}      # positive when the value equals
      buy: {column: behavior, equals: buy}
      good: {column: rating, at_least: 4}   # positive when the number is >= the threshold
    action_feature: null          # a column whose raw values are the action id (e.g. rating); default: bitmask of actions
    split: {valid_per_user: 1, test_per_user: 1}   # or time_cutoff: <timestamp>
    vocab: {oov: oov}             # ids unseen in training: one shared OOV row, or `hash` into hash_buckets rows
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Dict, Mapping, Optional, Union

from dfgr_torchrec.config import check, from_dict, load_config_file
from dfgr_torchrec.data.sources import check_download_name

Column = Union[str, int]
FORMATS = ("csv", "tsv", "parquet", "delimited")
DUPLICATES = ("error", "merge", "skip", "keep")
DELIMITERS = {"csv": ",", "tsv": "\t"}


@dataclass
class ColumnsConfig:
    """Which columns hold the user, the item and the timestamp (names, or indices without header)."""

    user: Column
    item: Column
    timestamp: Column


@dataclass
class SourceConfig:
    path: str
    format: str = "csv"
    columns: ColumnsConfig = None  # type: ignore[assignment]
    header: bool = True
    delimiter: Optional[str] = None
    side_features: Dict[str, Column] = field(default_factory=dict)
    on_bad_rows: str = "error"
    duplicates: str = "error"
    require_sorted: bool = False
    download: Optional[str] = None

    def __post_init__(self) -> None:
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
        for key, col in [*asdict(self.columns).items(), *self.side_features.items()]:
            if self.header or self.format == "parquet":
                check(isinstance(col, str), f"columns.{key}", "a column name (the file has a header)", col)
            else:
                check(isinstance(col, int) and col >= 0, f"columns.{key}", "a 0-based column index (header: false)", col)


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
        check(self.equals is None or self.at_least is None, "equals/at_least", "at most one of them", self)


@dataclass
class SplitConfig:
    """Time-respecting split: per user the last ``test_per_user`` interactions are test
    candidates and the ``valid_per_user`` before them validation candidates; the rest is
    training history. With ``time_cutoff``, test is every interaction at or after it instead."""

    valid_per_user: int = 1
    test_per_user: int = 1
    time_cutoff: Optional[int] = None
    min_train_per_user: int = 1

    def __post_init__(self) -> None:
        for key in ("valid_per_user", "test_per_user"):
            check(isinstance(getattr(self, key), int) and getattr(self, key) >= 0, key, "an integer >= 0", getattr(self, key))
        check(
            isinstance(self.min_train_per_user, int) and self.min_train_per_user >= 1,
            "min_train_per_user", "an integer >= 1", self.min_train_per_user,
        )


@dataclass
class VocabConfig:
    """Ids seen in training get contiguous rows 1..V; unseen ids get row 0 (``oov``) or one of
    ``hash_buckets`` rows after the vocabulary (``hash``)."""

    oov: str = "oov"
    hash_buckets: int = 1024

    def __post_init__(self) -> None:
        check(self.oov in ("oov", "hash"), "oov", "'oov' or 'hash'", self.oov)
        check(isinstance(self.hash_buckets, int) and self.hash_buckets > 0, "hash_buckets", "a positive integer", self.hash_buckets)


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
        if isinstance(self.source, Mapping):
            self.source = from_dict(SourceConfig, self.source, "source")
        check(isinstance(self.actions, Mapping) and len(self.actions) > 0, "actions", "at least one action type", self.actions)
        self.actions = {
            name: from_dict(ActionConfig, a, f"actions.{name}") if isinstance(a, Mapping) else a
            for name, a in self.actions.items()
        }
        if isinstance(self.split, Mapping):
            self.split = from_dict(SplitConfig, self.split, "split")
        if isinstance(self.vocab, Mapping):
            self.vocab = from_dict(VocabConfig, self.vocab, "vocab")

    @property
    def task_names(self):
        return list(self.actions)

    def fingerprint(self) -> str:
        """A hash of everything that shapes the prepared data (config and input file identity)."""
        import os

        stat = os.stat(self.source.path)
        payload = json.dumps(
            {"format_version": PREPARED_FORMAT_VERSION, "config": asdict(self), "input": [stat.st_size, int(stat.st_mtime)]},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


PREPARED_FORMAT_VERSION = 1


def load_data_config(path: str) -> DataConfig:
    """Reads and validates a data YAML; errors name the file and the key."""
    return load_config_file(DataConfig, path)
