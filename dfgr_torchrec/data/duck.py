"""The out-of-core engine of ``dfgr data prepare`` (``source.engine: duckdb``, the default).

DuckDB reads every shard (CSV/TSV, plain or gzip/zstd, or Parquet) into one typed table, parses
and checks each row with the rules of :mod:`dfgr_torchrec.data.readers` (same reasons, same
counts), and turns every id column into int codes plus its sorted vocabulary.
:mod:`dfgr_torchrec.data.duck_rules` applies the rest of ``dfgr data prepare`` on the same
connection (:func:`loaded_engine`); :func:`read_log_duckdb` returns the whole log as a :class:`RawLog`.

DuckDB works within ``DFGR_DUCKDB_MEMORY`` (default 1GB) on ``DFGR_DUCKDB_THREADS`` threads
(default: the CPUs) and spills to a temporary folder beside the prepared data set, removed
afterwards. The message of a bad row (``on_bad_rows: error``) is the reference reader's: the
log is read again in Python up to that row, so file, line, column and wording are identical.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from contextlib import contextmanager
from typing import Dict, Iterator, List, Tuple

import numpy as np

from dfgr_torchrec.data.config import DataConfig
from dfgr_torchrec.data.readers import (
    EMPTY_ITEM,
    EMPTY_USER,
    GZIP_MAGIC,
    MISSING_COLUMNS,
    MISSING_TIMESTAMP,
    NON_NUMERIC_TIMESTAMP,
    UNSORTED,
    ZSTD_MAGIC,
    BadInputError,
    RawLog,
    _column_keys,
    _split_lines,
    _utf8_error,
    negative_side,
    non_numeric_action,
    non_numeric_side,
    parquet_columns,
    raise_first_bad_row,
    read_header,
    shard_files,
)
from dfgr_torchrec.data.vocab import encode_ids
from dfgr_torchrec.features import ACTION_FEATURE

NO_NULL = "\u0001dfgr-no-null\u0002"  # DuckDB's null string: an empty field stays '' (a missing one is NULL)
WHITESPACE = " \t\n\r\x0b\x0c"


def _literal(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _trim(expr: str) -> str:
    """Python's ``str.strip()`` for ASCII whitespace (other Unicode spaces are kept); trims only
    when an end is whitespace, which is much faster than always trimming."""
    return (
        f"CASE WHEN ascii({expr}) > 32 AND ascii(right({expr}, 1)) > 32 THEN {expr} "
        f"ELSE trim({expr}, {_literal(WHITESPACE)}) END"
    )


def _label(config: DataConfig, name: str, text: str) -> str:
    """The 0/1 label of action ``name`` from its trimmed ``text`` (``readers._action_parser``'s rule);
    NULL when it is not a number."""
    action = config.actions[name]
    if isinstance(action.equals, str):
        return f"({text} = {_literal(action.equals)})::UTINYINT"
    number = f"TRY_CAST({text} AS DOUBLE)"
    if action.equals is not None:
        test = f"{number} = {float(action.equals)!r} AND NOT isnan({number})"
    elif action.at_least is not None:
        test = f"{number} >= {float(action.at_least)!r} AND NOT isnan({number})"
    else:
        test = f"{number} <> 0"
    return f"CASE WHEN {number} IS NULL THEN NULL ELSE ({test})::UTINYINT END"


def _log2_bucket(number: str) -> str:
    """``readers.log2_bucket`` of the DOUBLE ``number`` as text: the largest k with 2**k <= number + 1
    (log2's rounding corrected by exact powers of two); NULL unless a finite number >= 0."""
    y = f"floor({number} + 1.0)"
    b = f"floor(log2(greatest({y}, 1.0)))"
    k = f"CASE WHEN pow(2.0, {b}) > {y} THEN {b} - 1 WHEN pow(2.0, {b} + 1) <= {y} THEN {b} + 1 ELSE {b} END"
    return f"CASE WHEN isfinite({number}) AND {number} >= 0 THEN CAST(CAST({k} AS BIGINT) AS VARCHAR) END"


class _Engine:
    def __init__(self, config: DataConfig, con) -> None:
        self.config, self.con = config, con
        self.files = shard_files(config)
        self.actions = list(config.actions)
        self.ids = [
            "user",
            "item",
            *config.source.side_features,
            *([ACTION_FEATURE] if config.action_feature is not None else []),
        ]
        self.starts: List[int] = []  # rowid of each shard's first row

    def _source(self, path: str) -> Tuple[str, Dict[str, str], str]:
        """``(FROM clause, raw text of each key, condition of a row that lacks columns)`` of one shard."""
        keys = _column_keys(self.config)
        src = self.config.source
        if src.format == "parquet":
            parquet_columns(self.config, path)  # a missing column is an error naming it
            raw = {k: f"COALESCE(CAST({_ident(c)} AS VARCHAR), '')" for k, c in keys.items()}
            return f"read_parquet({_literal(path)})", raw, "false"
        index = read_header(self.config, path)
        width = max(index.values()) + 1
        columns = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(width)) + "}"
        with open(path, "rb") as f:
            magic = f.read(4)
        compression = "gzip" if magic.startswith(GZIP_MAGIC) else "zstd" if magic == ZSTD_MAGIC else "none"
        quote = "'\"'" if len(src.delimiter) == 1 else "''"
        source = (
            f"read_csv({_literal(path)}, delim={_literal(src.delimiter)}, header={str(src.header).lower()}, "
            f"columns={columns}, auto_detect=false, null_padding=true, strict_mode=false, quote={quote}, "
            f"escape={quote}, nullstr={_literal(NO_NULL)}, compression='{compression}')"
        )
        return source, {k: f"c{i}" for k, i in index.items()}, f"c{width - 1} IS NULL"

    def _parse(self, path: str) -> str:
        """The SELECT of one shard: trimmed id texts ``id<k>`` (a bucketed side feature's bucket),
        time ``t``, labels ``a<k>`` and ``bad`` (the reason a row is bad, in the reference reader's
        order, or NULL)."""
        source, raw, missing = self._source(path)
        side = [f"side_features.{n}" for n in self.config.source.side_features]
        id_keys = ["user", "item", *side, *(["action_feature"] if self.config.action_feature is not None else [])]
        texts = [f"{_trim(raw[key])} AS id{k}" for k, key in enumerate(id_keys)]
        texts += [f"{_trim(raw['timestamp'])} AS tt", f"{missing} AS missing"]
        texts += [f"{_trim(raw[f'actions.{n}'])} AS v{k}" for k, n in enumerate(self.actions)]
        labels = [f"{_label(self.config, n, f'v{k}')} AS a{k}" for k, n in enumerate(self.actions)]
        buckets = self._buckets()
        numbers = "".join(f", TRY_CAST(id{k} AS DOUBLE) AS n{k}" for k in buckets)
        number = "TRY_CAST(tt AS DOUBLE)"
        t = f"CASE WHEN isfinite({number}) AND {number} = floor({number}) THEN TRY_CAST(tt AS BIGINT) END"
        bad = [
            ("missing", MISSING_COLUMNS),
            ("id0 = ''", EMPTY_USER),
            ("id1 = ''", EMPTY_ITEM),
            ("tt = ''", MISSING_TIMESTAMP),
            ("t IS NULL", NON_NUMERIC_TIMESTAMP),
            *((f"a{k} IS NULL", non_numeric_action(n)) for k, n in enumerate(self.actions)),
        ]
        for k, name in buckets.items():
            bad += [
                (f"NOT coalesce(isfinite(n{k}), false)", non_numeric_side(name)),
                (f"n{k} < 0", negative_side(name)),
            ]
        reason = "CASE " + " ".join(f"WHEN {c} THEN {_literal(r)}" for c, r in bad) + " END"
        ids = ", ".join(f"id{k}" for k in range(len(id_keys)))
        out = ", ".join(f"{_log2_bucket(f'n{k}')} AS id{k}" if k in buckets else f"id{k}" for k in range(len(id_keys)))
        a = ", ".join(f"a{k}" for k in range(len(self.actions)))
        return (
            f"SELECT {out}, t, {a}, {reason} AS bad FROM (SELECT {ids}{numbers}, tt, missing, {t} AS t, "
            f"{', '.join(labels)} FROM (SELECT {', '.join(texts)} FROM {source}))"
        )

    def _buckets(self) -> Dict[int, str]:
        """``{id column k: name}`` of the bucketed side features (id columns: user, item, side...)."""
        side = list(self.config.source.side_features)
        return {2 + side.index(n): n for n in self.config.source.side_buckets}

    def load(self) -> None:
        """Reads every shard into the table ``parsed``, with the reason each row is bad (or NULL).

        Ids are read as BIGINT, checking that each was the decimal form of its integer
        (``ok<k>``); a column where one was not is read again as text."""
        queries = [self._parse(path) for path in self.files]
        self.integer = [True] * len(self.ids)
        while True:
            self._insert(queries)
            found = self.con.execute(
                "SELECT "
                + ", ".join(f"coalesce(bool_and(ok{k} OR bad IS NOT NULL), true)" for k in range(len(self.ids)))
                + " FROM parsed"
            ).fetchone()
            if all(found):
                break
            self.integer = [i and bool(f) for i, f in zip(self.integer, found)]
            self.con.execute("DROP TABLE parsed")
        if self.config.source.require_sorted:  # later than the running max of the user's earlier good rows
            self.con.execute(f"""UPDATE parsed SET bad = {_literal(UNSORTED)} WHERE rowid IN (
                SELECT r FROM (SELECT rowid AS r, t, max(t) OVER (PARTITION BY id0 ORDER BY rowid
                    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before FROM parsed WHERE bad IS NULL)
                WHERE t < before)""")

    def _insert(self, queries: List[str]) -> None:
        types = ", ".join(f"id{k} {'BIGINT' if i else 'VARCHAR'}, ok{k} BOOLEAN" for k, i in enumerate(self.integer))
        labels = ", ".join(f"a{k} UTINYINT" for k in range(len(self.actions)))
        self.con.execute(f"CREATE TABLE parsed ({types}, t BIGINT, {labels}, bad VARCHAR)")
        ids = ", ".join(
            f"TRY_CAST(id{k} AS BIGINT), coalesce(CAST(TRY_CAST(id{k} AS BIGINT) AS VARCHAR) = id{k}, false)"
            if i
            else f"id{k}, true"
            for k, i in enumerate(self.integer)
        )
        a = ", ".join(f"a{k}" for k in range(len(self.actions)))
        self.starts = []
        for path, query in zip(self.files, queries):
            self.starts.append(self.con.execute("SELECT count(*) FROM parsed").fetchone()[0])
            try:
                self.con.execute(f"INSERT INTO parsed SELECT {ids}, t, {a}, bad FROM ({query})")
            except Exception as e:  # duckdb.Error: a file DuckDB cannot read at all
                raise _unreadable(path, e) from None

    def dropped(self) -> Tuple[int, Counter]:
        rows = self.con.execute("SELECT bad, count(*) FROM parsed GROUP BY bad").fetchall()
        dropped = Counter({reason: n for reason, n in rows if reason is not None})
        if dropped and self.config.source.on_bad_rows == "error":
            raise_first_bad_row(self.config)  # the reference reader's message for the same row
            raise BadInputError(
                f"{self.config.source.path}: bad rows {dict(dropped)} (the Python reader accepts them: "
                "please report this; source.engine: python reads the log)"
            )
        return sum(n for _, n in rows), dropped

    def encode(self) -> Dict[str, np.ndarray]:
        """Codes of each text id column (table ``codes<k>``); returns their vocabularies (integer
        columns are encoded in numpy, :func:`encode_ids`, once fetched)."""
        vocabs = {}
        for k, name in enumerate(self.ids):
            if self.integer[k]:
                continue
            self.con.execute(f"CREATE TABLE ids{k} AS SELECT DISTINCT id{k} AS id FROM parsed WHERE bad IS NULL")
            integer = self.con.execute(  # the rows require_sorted dropped may have held the only text ids
                f"SELECT coalesce(bool_and(coalesce(CAST(TRY_CAST(id AS BIGINT) AS VARCHAR) = id, false)), true) FROM ids{k}"
            ).fetchone()[0]
            key = "TRY_CAST(id AS BIGINT)" if integer else "id"
            self.con.execute(
                f"CREATE TABLE codes{k} AS SELECT id, {key} AS raw, "
                f"(row_number() OVER (ORDER BY {key}) - 1)::INTEGER AS code FROM ids{k}"
            )
            column = self.con.execute(f"SELECT raw FROM codes{k} ORDER BY code").fetchnumpy()["raw"]
            vocabs[name] = np.asarray(column, dtype=np.int64) if integer else np.array(column.tolist(), dtype=str)
        return vocabs

    def rows_query(self) -> str:
        """The SELECT of the good rows: ids ``k<k>`` (BIGINT, or the code of a text id), ``t``,
        ``position`` and labels ``a<k>``."""
        text = [k for k in range(len(self.ids)) if not self.integer[k]]
        joins = " ".join(f"JOIN codes{k} c{k} ON p.id{k} = c{k}.id" for k in text)
        ids = ", ".join(f"c{k}.code AS k{k}" if k in text else f"p.id{k} AS k{k}" for k in range(len(self.ids)))
        labels = ", ".join(f"p.a{k}" for k in range(len(self.actions)))
        return f"SELECT {ids}, p.t, p.rowid AS position, {labels} FROM parsed p {joins} WHERE p.bad IS NULL"

    def rows(self) -> Dict[str, np.ndarray]:
        """The good rows (:meth:`rows_query`) as numpy arrays."""
        return self.con.execute(self.rows_query()).fetchnumpy()

    def locate(self, position: int) -> Tuple[str, int]:
        """``(file, line)`` of the row at ``position``: the shard's n-th non-empty row, counted as the
        reference reader counts lines (Parquet: row number from 1)."""
        shard = int(np.searchsorted(self.starts, position, side="right")) - 1
        path, nth = self.files[shard], int(position - self.starts[shard])
        if self.config.source.format == "parquet":
            return path, nth + 1
        rows = ((ln, f) for ln, f in _split_lines(path, self.config.source.delimiter, False) if f)
        for k, (line_no, _) in enumerate(rows):
            if k == nth + int(self.config.source.header):
                return path, line_no
        return path, -1


def _ident(name: str) -> str:
    return '"' + str(name).replace('"', '""') + '"'


def _unreadable(path: str, error: Exception) -> BadInputError:
    text = str(error)
    if "unicode" in text.lower() or "utf-8" in text.lower() or "utf8" in text.lower():
        return BadInputError(_utf8_error(path))
    if any(w in text.lower() for w in ("gzip", "zstd", "compress", "inflate")):
        return BadInputError(f"{path}: damaged compressed file ({text.splitlines()[0]})")
    return BadInputError(f"{path}: cannot be read ({text.splitlines()[0]})")


def _connect(folder: str):
    import duckdb

    return duckdb.connect(
        config={
            "memory_limit": os.environ.get("DFGR_DUCKDB_MEMORY", "1GB"),
            "threads": int(os.environ.get("DFGR_DUCKDB_THREADS", os.cpu_count() or 1)),
            "temp_directory": folder,
            "preserve_insertion_order": True,
        }
    )


@contextmanager
def loaded_engine(config: DataConfig) -> Iterator[_Engine]:
    """An engine whose log is read into ``parsed`` (bad rows marked), on a connection that is
    closed, with its spill folder removed, on exit."""
    os.makedirs(config.output_dir, exist_ok=True)
    folder = tempfile.mkdtemp(prefix=".tmp-duckdb-", dir=config.output_dir)
    con = None
    try:
        con = _connect(folder)
        engine = _Engine(config, con)
        engine.load()
        yield engine
    finally:
        if con is not None:
            con.close()
        shutil.rmtree(folder, ignore_errors=True)


def action_values(config: DataConfig, name: str, limit: int = 8) -> List[Tuple[str, int]]:
    """The commonest (trimmed) texts of the column behind ``actions.<name>`` over the whole log,
    with their counts: what a rule that matched nothing could have compared with."""
    import duckdb

    con = duckdb.connect()
    try:
        engine = _Engine(config, con)
        parts = []
        for path in engine.files:
            source, raw, _ = engine._source(path)
            parts.append(f"SELECT {_trim(raw[f'actions.{name}'])} AS v FROM {source}")
        query = f"SELECT v, count(*) AS n FROM ({' UNION ALL '.join(parts)}) GROUP BY v ORDER BY n DESC, v LIMIT ?"
        return [(str(v), int(n)) for v, n in con.execute(query, [int(limit)]).fetchall()]
    finally:
        con.close()


def read_log_duckdb(config: DataConfig, progress: bool = True) -> RawLog:
    """The :class:`RawLog` of ``config``'s log, read by DuckDB (see the module's doc); the whole
    log in memory (``dfgr data prepare`` uses :mod:`dfgr_torchrec.data.duck_rules` instead)."""
    with loaded_engine(config) as engine:
        rows_read, dropped = engine.dropped()
        vocabs = engine.encode()
        columns = engine.rows()
    names = engine.ids
    codes = {}
    for k, name in enumerate(names):
        if engine.integer[k]:
            vocabs[name], codes[name] = encode_ids(np.asarray(columns.pop(f"k{k}")))
        else:
            codes[name] = np.asarray(columns.pop(f"k{k}"))  # int32 codes
    labels = np.stack([np.asarray(columns[f"a{k}"], dtype=np.uint8) for k in range(len(engine.actions))], axis=1)
    position = np.asarray(columns["position"], dtype=np.int64)
    side = list(config.source.side_features)
    return RawLog(
        users=codes["user"],
        items=codes["item"],
        timestamps=np.asarray(columns["t"], dtype=np.int64),
        position=position,
        labels=labels,
        action_values=codes.get(ACTION_FEATURE),
        side={n: codes[n] for n in side},
        vocabs=dict(zip(names, (vocabs[n] for n in names))),
        rows_read=int(rows_read),
        locate=engine.locate,
        dropped=dropped,
    )
