"""The bounded-memory ``dfgr data prepare`` of the DuckDB engine: the rules in DuckDB, the arrays
written in streamed chunks.

:mod:`dfgr_torchrec.data.duck` reads the log into the table ``parsed``; here DuckDB (within its
``memory_limit``, spilling) also checks the timestamp unit, removes or merges duplicates, counts
each user's rows, drops the users the split cannot use and sorts the kept rows by user, time and
file order into the table ``sorted``. Python then reads ``sorted`` in chunks of
``DFGR_PREPARE_CHUNK_ROWS`` rows (default 2,000,000): each chunk's split is computed from the
per-user counts (a row's place in its user and the user's size say it all), and its columns are
appended to the ``.npy`` files, so no column of the whole log is ever held in memory. Only
per-user and per-id arrays (vocabularies, codes -> rows) are whole. Item, side and action
files first receive the id's code; once every chunk is seen (and so which ids training holds),
they are rewritten in place, chunk by chunk, with the table rows (:func:`vocab_rows`).

The results equal those of :func:`dfgr_torchrec.data.prepare.build_arrays` on the Python
reader's log (the numpy reference of the same rules), byte for byte: ``tests/data/test_engines.py``.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from dfgr_torchrec.data.config import DataConfig
from dfgr_torchrec.data.readers import BadInputError, duplicate_error
from dfgr_torchrec.data.time_units import EPOCH_RANGE_S, UNITS, mixed_units_error
from dfgr_torchrec.data.vocab import table_rows, vocab_rows

TRAIN, VALID, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "valid", "test")
DEFAULT_CHUNK_ROWS = 2_000_000


def chunk_rows() -> int:
    """Rows per streamed chunk: ``DFGR_PREPARE_CHUNK_ROWS`` (default 2,000,000)."""
    value = os.environ.get("DFGR_PREPARE_CHUNK_ROWS", str(DEFAULT_CHUNK_ROWS))
    if not value.isdigit() or int(value) < 1:
        raise BadInputError(f"DFGR_PREPARE_CHUNK_ROWS: expected a positive integer, got {value!r}")
    return int(value)


@dataclass
class Users:
    """The kept users (by code, ascending) and their row counts."""

    codes: np.ndarray  # code of each kept user in the user vocabulary
    counts: np.ndarray  # rows of each kept user
    pre: np.ndarray  # rows before time_cutoff of each kept user (counts without one)
    offsets: np.ndarray  # int64 [users + 1]
    latest: int  # the latest kept timestamp


@dataclass
class Streamed:
    """What the streamed pass counted for the report: rows and positives of each split."""

    split: np.ndarray = field(default_factory=lambda: np.zeros(3, np.int64))
    positives: Optional[np.ndarray] = None  # [3, tasks]


class BoundedLog:
    """The rules of ``dfgr data prepare`` on a :class:`dfgr_torchrec.data.duck._Engine`'s ``parsed`` table."""

    def __init__(self, engine: Any, dropped: Counter) -> None:
        self.engine, self.con, self.config = engine, engine.con, engine.config
        self.dropped = dropped
        self.vocabs = self._vocabs()
        self.con.execute(f"CREATE VIEW good AS {engine.rows_query()}")
        self.id_names = list(engine.ids)
        self.actions = list(engine.actions)

    def _vocabs(self) -> Dict[str, np.ndarray]:
        """Sorted unique raw ids of every id column (text ones through ``codes<k>``, :meth:`encode`)."""
        vocabs = self.engine.encode()
        for k, name in enumerate(self.engine.ids):
            if self.engine.integer[k]:
                column = self.con.execute(
                    f"SELECT DISTINCT id{k} AS id FROM parsed WHERE bad IS NULL ORDER BY id"
                ).fetchnumpy()["id"]
                vocabs[name] = np.asarray(column, dtype=np.int64)
        return vocabs

    def codes(self, k: int, values: np.ndarray) -> np.ndarray:
        """Codes (into ``vocabs``) of column ``k``'s values as ``good`` holds them."""
        values = np.asarray(values)
        if self.engine.integer[k]:
            return np.searchsorted(self.vocabs[self.id_names[k]], values).astype(np.int64)
        return values.astype(np.int64)

    def check_units(self) -> None:
        """:func:`dfgr_torchrec.data.time_units.check_one_unit` in SQL (first row: in file order)."""
        lo, hi = EPOCH_RANGE_S
        parts = []
        for _unit, seconds in UNITS:
            cond = f"t::DOUBLE >= {lo / seconds!r} AND t::DOUBLE < {hi / seconds!r}"
            parts.append(
                f"count(*) FILTER (WHERE {cond}), min(position) FILTER (WHERE {cond}), "
                f"arg_min(t, position) FILTER (WHERE {cond})"
            )
        row = self.con.execute(f"SELECT {', '.join(parts)} FROM good").fetchone()
        found = [(unit, row[3 * j], row[3 * j + 1], row[3 * j + 2]) for j, (unit, _) in enumerate(UNITS) if row[3 * j]]
        if len(found) > 1:
            src = self.config.source
            raise mixed_units_error(src.path, src.columns.timestamp, found, self.engine.locate)

    def dedup(self) -> None:
        """The table (or view) ``deduped``: ``good`` under ``source.duplicates``."""
        policy = self.config.source.duplicates
        if policy == "keep":
            self.con.execute("CREATE VIEW deduped AS SELECT * FROM good")
            return
        if policy == "error":
            self._raise_duplicate()
            self.con.execute("CREATE VIEW deduped AS SELECT * FROM good")
            return
        ids = [f"arg_min(k{k}, position) AS k{k}" for k in range(2, len(self.id_names))]
        first = "bit_or" if policy == "merge" else "arg_min"
        labels = [f"{first}(a{k}{'' if policy == 'merge' else ', position'}) AS a{k}" for k in range(len(self.actions))]
        self.con.execute(
            f"CREATE TABLE deduped AS SELECT k0, k1, {', '.join(ids + [''])}t, min(position) AS position, "
            f"{', '.join(labels)} FROM good GROUP BY k0, k1, t"
        )
        removed = self._count("good") - self._count("deduped")
        if removed:
            self.dropped["duplicate event merged into the first" if policy == "merge" else "duplicate event"] += removed

    def _count(self, table: str) -> int:
        return int(self.con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def _raise_duplicate(self) -> None:
        """``duplicates: error``: the message of the first duplicate in (user, item, time) order."""
        total = self.con.execute(
            "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM good GROUP BY k0, k1, t)"
        ).fetchone()[0]
        if not total:
            return
        u, i, t, first = self.con.execute(
            "SELECT k0, k1, t, min(position) FROM good GROUP BY k0, k1, t HAVING count(*) > 1 "
            "ORDER BY k0, k1, t LIMIT 1"
        ).fetchone()
        row = self.con.execute(
            "SELECT min(position) FROM good WHERE k0 = ? AND k1 = ? AND t = ? AND position > ?", [u, i, t, first]
        ).fetchone()[0]
        user = self.vocabs["user"][self.codes(0, np.array([u]))[0]]
        item = self.vocabs["item"][self.codes(1, np.array([i]))[0]]
        raise duplicate_error(self.engine.locate, row, first, user, item, t, int(total))

    def users(self, min_rows: int) -> Users:
        """Counts each user's rows, drops (and counts) those the split cannot use, and sorts the
        kept rows into ``sorted`` (user, time, file order)."""
        s, cutoff = self.config.split, self.config.time_cutoff
        pre = "count(*)" if cutoff is None else f"count(*) FILTER (WHERE t < {int(cutoff)})"
        self.con.execute(
            f"CREATE TABLE users AS SELECT k0, count(*) AS n, {pre} AS pre, max(t) AS latest FROM deduped GROUP BY k0"
        )
        no_history = "false" if cutoff is None else f"pre - least({s.valid_per_user}, pre) < {s.min_train_per_user}"
        self.con.execute(
            f"ALTER TABLE users ADD COLUMN short BOOLEAN; ALTER TABLE users ADD COLUMN no_history BOOLEAN; "
            f"UPDATE users SET short = n < {min_rows}; UPDATE users SET no_history = NOT short AND ({no_history})"
        )
        users = self.con.execute("SELECT k0, n, pre, latest, short, no_history FROM users ORDER BY k0").fetchnumpy()
        short, no_history = np.asarray(users["short"], bool), np.asarray(users["no_history"], bool)
        counts = np.asarray(users["n"], np.int64)
        if short.any():
            self.dropped["user with too few interactions"] += int(counts[short].sum())
        if no_history.any():
            self.dropped["user with no training history before time_cutoff"] += int(counts[no_history].sum())
        keep = ~short & ~no_history
        self.con.execute(
            "CREATE TABLE sorted AS SELECT d.* FROM deduped d JOIN users USING (k0) "
            "WHERE NOT short AND NOT no_history ORDER BY d.k0, d.t, d.position"
        )
        latest = np.asarray(users["latest"], np.int64)[keep]
        return Users(
            self.codes(0, np.asarray(users["k0"])[keep]),
            counts[keep],
            np.asarray(users["pre"], np.int64)[keep],
            np.concatenate([[0], np.cumsum(counts[keep])]).astype(np.int64),
            int(latest.max()) if len(latest) else 0,
        )

    def chunks(self, size: int):
        """``(first row, columns)`` of each ``size`` rows of ``sorted``, in order."""
        total = self._count("sorted")
        for start in range(0, total, size):
            yield (
                start,
                self.con.execute(
                    f"SELECT * FROM sorted WHERE rowid >= {start} AND rowid < {start + size} ORDER BY rowid"
                ).fetchnumpy(),
            )


def split_sizes(config: DataConfig, users: Users) -> Dict[str, int]:
    """Rows of each split, from each kept user's counts (the split of :func:`chunk_split`)."""
    s = config.split
    if config.time_cutoff is None:
        test = np.minimum(s.test_per_user, users.counts)
        valid = np.minimum(s.valid_per_user, users.counts - test)
    else:
        test = users.counts - users.pre
        valid = np.minimum(s.valid_per_user, users.pre)
    train = users.counts - test - valid
    return {"train": int(train.sum()), "valid": int(valid.sum()), "test": int(test.sum())}


def chunk_split(config: DataConfig, users: Users, start: int, user: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The split of rows ``start..`` of ``sorted``; ``user`` is each row's kept-user index."""
    s = config.split
    place = np.arange(start, start + len(user), dtype=np.int64) - users.offsets[user]  # 0 for a user's first row
    split = np.zeros(len(user), dtype=np.int8)
    if config.time_cutoff is None:
        from_end = users.counts[user] - place  # 1 for the last interaction
        split[from_end <= s.test_per_user] = TEST
        split[(from_end > s.test_per_user) & (from_end <= s.test_per_user + s.valid_per_user)] = VALID
    else:
        test = t >= config.time_cutoff
        split[test] = TEST
        # a user's rows before the cutoff come first: the last valid_per_user of them are validation
        split[~test & (users.pre[user] - place <= s.valid_per_user)] = VALID
    return split


class NpyWriter:
    """Appends chunks to a ``.npy`` file of a known shape, header as ``np.save`` writes it."""

    def __init__(self, path: str, dtype: Any, shape: Tuple[int, ...]) -> None:
        self.path, self.dtype, self.shape = path, np.dtype(dtype), shape
        self.file = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(self.file, header)
        self.written = 0

    def append(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=self.dtype)
        self.file.write(values.tobytes())
        self.written += len(values)

    def close(self) -> None:
        self.file.close()
        assert self.written == (self.shape[0] if self.shape else 1), (self.path, self.written, self.shape)


def remap_in_place(path: str, lookup: np.ndarray, size: int) -> None:
    """Replaces each int64 code of the ``.npy`` at ``path`` by ``lookup[code]``, ``size`` rows at a time."""
    with open(path, "r+b") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        start = f.tell()
        while True:
            chunk = np.frombuffer(f.read(8 * size), dtype=np.int64)
            if len(chunk) == 0:
                break
            f.seek(start)
            f.write(lookup[chunk].astype(np.int64).tobytes())
            start = f.tell()


@dataclass
class Column:
    """An id column of the prepared arrays: its file, and how often each code occurs (in all kept
    rows, and in training rows)."""

    k: int  # column of ``sorted`` (k<k>)
    name: str  # vocabulary name
    file: str  # array name: item, side_<name> or action
    counts: np.ndarray
    in_train: np.ndarray


def id_columns(log: BoundedLog) -> List[Column]:
    """The item, side and (with ``action_feature``) action columns."""
    names = log.id_names
    files = ["item", *(f"side_{n}" for n in log.config.source.side_features)]
    if log.config.action_feature is not None:
        files.append("action")
    return [
        Column(
            k + 1,
            names[k + 1],
            f,
            np.zeros(len(log.vocabs[names[k + 1]]), np.int64),
            np.zeros(len(log.vocabs[names[k + 1]]), bool),
        )
        for k, f in enumerate(files)
    ]


def stream_arrays(log: BoundedLog, users: Users, tmp: str, size: int) -> Tuple[List[str], Streamed, List[Column]]:
    """Writes the per-row arrays of ``sorted`` into ``tmp`` chunk by chunk (ids as codes, see
    :func:`remap_columns`); returns the array names, the counts and the id columns."""
    total, tasks = int(users.offsets[-1]), len(log.actions)
    columns = id_columns(log)
    shapes = {"item": (total,), "timestamp": (total,), "labels": (total, tasks), "split": (total,), "action": (total,)}
    dtypes = {"labels": np.uint8, "split": np.int8}
    names = ["item", "timestamp", "labels", "split", *(c.file for c in columns[1:] if c.file != "action"), "action"]
    writers = {
        n: NpyWriter(os.path.join(tmp, f"{n}.npy"), dtypes.get(n, np.int64), shapes.get(n, (total,))) for n in names
    }
    streamed = Streamed(positives=np.zeros((3, tasks), np.int64))
    bits = 1 << np.arange(tasks, dtype=np.int64)
    for start, chunk in log.chunks(size):
        user = np.searchsorted(users.codes, log.codes(0, chunk["k0"]))
        t = np.asarray(chunk["t"], dtype=np.int64)
        split = chunk_split(log.config, users, start, user, t)
        labels = np.stack([np.asarray(chunk[f"a{k}"], dtype=np.uint8) for k in range(tasks)], axis=1)
        train = split == TRAIN
        for column in columns:
            codes = log.codes(column.k, chunk[f"k{column.k}"])
            column.counts += np.bincount(codes, minlength=len(column.counts))
            column.in_train[codes[train]] = True
            writers[column.file].append(codes)
        writers["timestamp"].append(t)
        writers["labels"].append(labels)
        writers["split"].append(split)
        if log.config.action_feature is None:
            writers["action"].append((labels.astype(np.int64) * bits).sum(axis=1))
        streamed.split += np.bincount(split, minlength=3)
        for code in (TRAIN, VALID, TEST):
            streamed.positives[code] += labels[split == code].sum(axis=0, dtype=np.int64)
    for writer in writers.values():
        writer.close()
    return names, streamed, columns


def remap_columns(log: BoundedLog, columns: List[Column], tmp: str, size: int) -> Dict[str, Any]:
    """Vocabularies from training rows and ids -> table rows (rewriting each id file in place):
    ``{"vocabs": {file: vocab}, "rows": {file: table rows}, "unseen": {file: rows unseen in training}}``."""
    cfg = log.config.vocab
    out: Dict[str, Any] = {"vocabs": {}, "rows": {}, "unseen": {}}
    for column in columns:
        raw_ids = log.vocabs[column.name]
        present = np.flatnonzero(column.counts)
        in_train = column.in_train if column.file != "action" else column.counts > 0  # the action: every kept row
        vocab = raw_ids[np.flatnonzero(in_train)]
        rows, seen = vocab_rows(raw_ids[present], vocab, cfg.oov, cfg.hash_buckets)
        lookup = np.zeros(len(raw_ids), dtype=np.int64)
        lookup[present] = rows
        remap_in_place(os.path.join(tmp, f"{column.file}.npy"), lookup, size)
        out["vocabs"][column.file] = vocab
        out["rows"][column.file] = table_rows(len(vocab), cfg.oov, cfg.hash_buckets)
        out["unseen"][column.file] = int(column.counts[present][~seen].sum())
    return out
