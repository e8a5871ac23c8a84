"""``dfgr data prepare``: a raw log -> a prepared, memory-mappable, versioned data set.

Layout of ``<output_dir>/<name>-<fingerprint>/`` (numpy ``.npy``, opened with ``mmap_mode="r"``):

- ``user_offsets.npy`` ``[U + 1]``: user ``u``'s interactions are rows ``offsets[u]:offsets[u+1]``,
  in chronological order (ties keep file order).
- ``item.npy``, ``timestamp.npy``, ``action.npy`` ``[T]`` and ``labels.npy`` ``[T, tasks]``;
  ``side_<name>.npy`` per item side feature.
- ``split.npy`` ``[T]``: 0 training history, 1 validation candidate, 2 test candidate.
- ``vocab_<name>.npy``: raw id of each row (row ``r`` of the table is ``vocab[r - 1]``; row 0 is OOV):
  int64 sorted numerically when every raw id of the column is an integer, else sorted strings.
- ``meta.json`` (sizes, tasks, config) and ``report.json`` (what was read, kept and dropped).

The log is read by ``source.engine``: :mod:`dfgr_torchrec.data.duck` out of core by default,
with the rules in DuckDB and the arrays streamed to disk in chunks (:mod:`dfgr_torchrec.data.duck_rules`,
bounded memory), or the Python reference reader, whose integer codes the numpy rules below
(:func:`build_arrays`) turn into the same arrays.
The directory name carries a hash of the config (the engine left out: both give the same
outputs) and of the input's content (blake2b of its bytes, or of every shard's; recorded in ``meta.json`` with the config's own key), so a changed config or log never
reads stale data. ``meta.json`` also records the byte size and blake2b of every file; a copy
whose files no longer match the sizes is prepared again (``prepare``) or refused
(``PreparedData``). It is written to a temporary directory and renamed, so a crash never
leaves a half-written data set behind.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from dfgr_torchrec.data import duck_rules
from dfgr_torchrec.data.atomic import atomic_directory, file_digest
from dfgr_torchrec.data.config import PREPARED_FORMAT_VERSION, DataConfig, source_digest, source_present
from dfgr_torchrec.data.duck import action_values, loaded_engine
from dfgr_torchrec.data.readers import BadInputError, RawLog, duplicate_error, read_log
from dfgr_torchrec.data.sources import ensure_source
from dfgr_torchrec.data.time_units import check_one_unit
from dfgr_torchrec.data.vocab import table_rows, vocab_rows
from dfgr_torchrec.features import ACTION_FEATURE
from dfgr_torchrec.progress import progress as progress_bar

TRAIN, VALID, TEST = 0, 1, 2


def prepared_path(config: DataConfig, source: Optional[Dict[str, Any]] = None) -> str:
    """``<output_dir>/<name>-<fingerprint>``; ``source`` is the log's :func:`source_digest` (computed when not given)."""
    return os.path.join(config.output_dir, f"{config.name}-{config.fingerprint(source)}")


def prepare(config: DataConfig, force: bool = False, progress: bool = True) -> str:
    """Prepares ``config``'s log unless an intact, up-to-date copy exists; returns its directory.

    A copy whose arrays do not match the sizes ``meta.json`` recorded (deleted, truncated) is
    prepared again."""
    source = source_digest(config.source.path)
    out = prepared_path(config, source)
    damage = check_prepared(out) if os.path.exists(out) else "absent"
    if damage is None and not force:
        if progress:
            print(f"up to date: {out}")
        return out
    if damage != "absent" and not force:
        print(f"preparing {out} again: {damage}", file=sys.stderr)
    start = time.perf_counter()
    if config.source.engine == "duckdb":
        report = _prepare_duckdb(config, out, source, start, progress)
    else:
        raw = read_log(config, progress=progress)
        check_one_unit(config.source.path, config.source.columns.timestamp, raw.timestamps, raw.position, raw.locate)
        arrays, report = build_arrays(config, raw, progress=progress)
        check_not_empty(config, report, arrays["timestamp"])
        _finish_report(config, report, start)
        _write(out, arrays, report, config, source, progress)
    if progress:
        print(
            f"prepared {out}: {report['interactions']} interactions, {report['users']} users, "
            f"{report['items']} items in {report['seconds']:.1f} s"
        )
    return out


def _finish_report(config: DataConfig, report: Dict[str, Any], start: float) -> None:
    """Refuses a task that cannot learn (:func:`check_tasks`); adds the seconds to ``report``."""
    check_tasks(config, report)
    report["warnings"] = []
    report["seconds"] = round(time.perf_counter() - start, 3)


def _prepare_duckdb(
    config: DataConfig, out: str, source: Dict[str, Any], start: float, progress: bool
) -> Dict[str, Any]:
    """Prepares the log with the rules in DuckDB and the arrays streamed in chunks (:mod:`duck_rules`); returns the report."""
    size = duck_rules.chunk_rows()
    steps = progress_bar(total=4, desc="read, sort, split, write", enabled=progress)
    with loaded_engine(config) as engine:
        rows_read, dropped = engine.dropped()
        log = duck_rules.BoundedLog(engine, Counter(dropped))
        log.check_units()
        log.dedup()
        steps.update()
        users = log.users(_min_rows_per_user(config))
        steps.update()
        sizes = duck_rules.split_sizes(config, users)
        head = {
            "rows_read": rows_read,
            "rows_kept": int(users.offsets[-1]),
            "rows_dropped": dict(sorted(log.dropped.items())),
            "split": sizes,
        }
        check_not_empty(config, head, np.array([users.latest]))
        with atomic_directory(out) as tmp:
            names, streamed, columns = duck_rules.stream_arrays(log, users, tmp, size)
            steps.update()
            vocabs = duck_rules.remap_columns(log, columns, tmp, size)
            assert dict(zip(duck_rules.SPLIT_NAMES, streamed.split.tolist())) == sizes, (streamed.split, sizes)
            arrays = _small_arrays(config, log, users, vocabs)
            items = int((columns[0].counts > 0).sum())
            report = _report_dict(config, rows_read, log.dropped, users, streamed, items, vocabs)
            _finish_report(config, report, start)
            meta = _meta_dict(
                config,
                len(users.codes),
                int(users.offsets[-1]),
                vocabs["rows"].pop("item"),
                {n: vocabs["rows"][f"side_{n}"] for n in config.source.side_features},
                vocabs["rows"].get("action", 1 << len(config.actions)),
            )
            _write_files(tmp, arrays, meta, report, config, source, order=_file_order(config, names))
            steps.update()
    steps.close()
    return report


def _small_arrays(config: DataConfig, log: Any, users: Any, vocabs: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """The per-user and per-id arrays of the DuckDB path (the per-row ones are streamed)."""
    arrays = {
        "user_offsets": users.offsets,
        "vocab_item": vocabs["vocabs"]["item"],
        "vocab_user": log.vocabs["user"][users.codes],
    }
    for name in config.source.side_features:
        arrays[f"vocab_{name}"] = vocabs["vocabs"][f"side_{name}"]
    if "action" in vocabs["vocabs"]:
        arrays["vocab_action"] = vocabs["vocabs"]["action"]
    return arrays


def _file_order(config: DataConfig, streamed: List[str]) -> List[str]:
    """The arrays in the order :func:`build_arrays` makes them (``meta.json`` lists them so)."""
    names = ["user_offsets", "item", "timestamp", "labels", "split", "vocab_item", "vocab_user"]
    for name in config.source.side_features:
        names += [f"side_{name}", f"vocab_{name}"]
    names += ["action"] + (["vocab_action"] if config.action_feature is not None else [])
    assert set(streamed) <= set(names), (streamed, names)
    return names


def check_prepared(path: str) -> Optional[str]:
    """None when ``path`` is an intact prepared data set of this format, else what is wrong with it
    (naming the file): ``meta.json`` unreadable, an array missing or not the size recorded at write time."""
    meta_path = os.path.join(path, "meta.json")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except FileNotFoundError:
        return f"{meta_path}: missing (not a prepared data set; run `dfgr data prepare`)"
    except (OSError, ValueError) as e:
        return f"{meta_path}: unreadable ({e})"
    if meta.get("format_version") != PREPARED_FORMAT_VERSION:
        return f"{path}: prepared with format {meta.get('format_version')}, this code reads {PREPARED_FORMAT_VERSION}"
    for name, expected in {**meta["files"], **meta["arrays"]}.items():
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            return f"{file}: missing"
        if os.path.getsize(file) != expected["bytes"]:
            return (
                f"{file}: {os.path.getsize(file)} bytes, {expected['bytes']} when it was written (truncated or changed)"
            )
    return None


def find_prepared(config: DataConfig) -> Optional[str]:
    """The newest intact prepared copy of this exact config (any log content) under ``output_dir``."""
    if not os.path.isdir(config.output_dir):
        return None
    key, found = config.config_key(), []
    for entry in os.scandir(config.output_dir):
        meta = os.path.join(entry.path, "meta.json")
        if not (entry.name.startswith(f"{config.name}-") and entry.is_dir() and os.path.isfile(meta)):
            continue
        try:
            with open(meta) as f:
                same = json.load(f).get("config_key") == key
        except (OSError, ValueError):
            continue
        if same and check_prepared(entry.path) is None:
            found.append((os.path.getmtime(meta), entry.path))
    return max(found)[1] if found else None


def ensure_prepared(config: DataConfig, force: bool = False, progress: bool = True) -> str:
    """Downloads (``source.download``) and prepares the log unless up to date; returns the prepared folder.

    When the log is gone (moved, deleted) but a prepared copy of this config exists, that copy is
    used, with a warning on stderr, rather than failing (unless ``force``)."""
    if not force and not source_present(config.source.path):
        found = find_prepared(config)
        if found is not None:
            print(
                f"warning: {config.source.path} (source.path of {config.name!r}) is gone; "
                f"using the prepared copy {found}",
                file=sys.stderr,
            )
            return found
    ensure_source(config)
    return prepare(config, force=force, progress=progress)


def _why_dropped(config: DataConfig, reason: str) -> str:
    """The config rule behind a ``rows_dropped`` reason of the report."""
    s = config.split
    if reason == "user with too few interactions":
        if s.time_cutoff is None:
            return (
                f"each user needs split.min_train_per_user + split.valid_per_user + split.test_per_user = "
                f"{_min_rows_per_user(config)} interactions"
            )
        return f"each user needs split.min_train_per_user = {s.min_train_per_user} interactions"
    if reason.startswith("user with no training history"):
        return f"split.time_cutoff ({s.time_cutoff!r}) leaves them fewer than split.min_train_per_user earlier events"
    if reason.startswith("duplicate event"):
        return f"source.duplicates: {config.source.duplicates}"
    return "source.on_bad_rows: skip"


def _empty_message(config: DataConfig, report: Dict[str, Any], split: str) -> str:
    head = f"data set {config.name!r} from {config.source.path}: the {split} split is empty, refusing to prepare it"
    if report["rows_read"] == 0:
        return f"{head}: the log has no data rows" + (" (only a header)" if config.source.header else "")
    removed = "; ".join(
        f"{n} by '{reason}' ({_why_dropped(config, reason)})" for reason, n in report["rows_dropped"].items()
    )
    counts = f"{report['rows_read']} rows read, {report['rows_kept']} kept" + (
        f"; removed: {removed}" if removed else ""
    )
    return f"{head} ({counts})"


def check_not_empty(config: DataConfig, report: Dict[str, Any], timestamps: np.ndarray) -> None:
    """Raises :class:`BadInputError` when the training split, or a validation / test split the config
    asks for, has no rows; the message says which rule removed them (the counts of ``report``)."""
    s, sizes = config.split, report["split"]
    if sizes["train"] == 0:
        raise BadInputError(_empty_message(config, report, "training"))
    if sizes["valid"] == 0 and s.valid_per_user > 0:
        raise BadInputError(_empty_message(config, report, "validation") + "; or set split.valid_per_user: 0")
    if sizes["test"] == 0 and s.time_cutoff is not None:
        raise BadInputError(
            f"{_empty_message(config, report, 'test')}: no event at or after split.time_cutoff "
            f"({s.time_cutoff!r} = {config.time_cutoff} in source.timestamp_unit {config.source.timestamp_unit!r}); "
            f"the latest kept event is at {int(timestamps.max())}"
        )
    if sizes["test"] == 0 and s.test_per_user > 0:
        raise BadInputError(_empty_message(config, report, "test"))


def check_tasks(config: DataConfig, report: Dict[str, Any]) -> None:
    """Refuses a task with no positive in the training split (a value that never occurs, a rare
    action on a small log: its head could not learn, its metrics would mean nothing), naming the
    action, its rule and the values the column holds."""
    empty = [name for name in config.actions if report["positives"]["train"][name] == 0]
    if not empty:
        return
    name, action = empty[0], config.actions[empty[0]]
    seen = ", ".join(f"{v!r} ({n:,})" for v, n in action_values(config, name))
    others = f"; also {', '.join(f'actions.{n}' for n in empty[1:])}" if empty[1:] else ""
    raise BadInputError(
        f"data set {config.name!r}: actions.{name}: no positive in the training split (0 of "
        f"{report['split']['train']} rows; {report['per_action'][name]} in the whole log) with the rule "
        f"{_rule(action)}; the column's commonest values: {seen}: fix the rule or remove the action{others}"
    )


def _rule(action: Any) -> str:
    """An action's rule in words: ``column 'behavior' equals 'purchase'``."""
    if action.equals is not None:
        return f"column {action.column!r} equals {action.equals!r}"
    if action.at_least is not None:
        return f"column {action.column!r} at least {action.at_least:g}"
    return f"column {action.column!r} non-zero"


def _dense_unique(codes: np.ndarray, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """``np.unique(codes, return_inverse=True)`` of codes in ``0..size-1``, in linear time."""
    present = np.bincount(codes, minlength=size) > 0
    remap = np.cumsum(present) - 1
    return np.flatnonzero(present), remap[codes].astype(np.int64)


def _stable_order(*keys: np.ndarray) -> np.ndarray:
    """Row order by ``keys`` (most significant first), ties in row order (the log's order: see
    :func:`_in_file_order`). Keys are packed into one int64 when their ranges allow (faster)."""
    if len(keys[0]) == 0:
        return np.zeros(0, dtype=np.int64)
    lows = [int(k.min()) for k in keys]
    spans = [int(k.max()) - low + 1 for k, low in zip(keys, lows)]
    if np.prod([float(x) for x in spans]) < 2.0**62:
        packed = np.zeros(len(keys[0]), dtype=np.int64)
        for key, low, span in zip(keys, lows, spans):
            packed *= span
            packed += key.astype(np.int64) - low
        return np.argsort(packed, kind="stable")
    return np.lexsort(keys[::-1])  # lexsort is stable too


def _in_file_order(raw: RawLog) -> RawLog:
    """``raw`` with its rows sorted by ``position`` (the DuckDB engine may return them in any order)."""
    if len(raw.position) < 2 or bool((raw.position[1:] > raw.position[:-1]).all()):
        return raw
    perm = np.argsort(raw.position, kind="stable")
    return replace(
        raw,
        users=raw.users[perm],
        items=raw.items[perm],
        timestamps=raw.timestamps[perm],
        position=raw.position[perm],
        labels=raw.labels[perm],
        action_values=None if raw.action_values is None else raw.action_values[perm],
        side={n: v[perm] for n, v in raw.side.items()},
    )


def _drop_duplicates(config: DataConfig, raw: RawLog, user_idx, item_idx, dropped: Counter) -> np.ndarray:
    """Boolean mask of rows to keep under the ``duplicates`` policy."""
    keep = np.ones(len(user_idx), dtype=bool)
    if config.source.duplicates == "keep" or len(user_idx) == 0:
        return keep
    order = _stable_order(user_idx, item_idx, raw.timestamps)
    same = (
        (user_idx[order][1:] == user_idx[order][:-1])
        & (item_idx[order][1:] == item_idx[order][:-1])
        & (raw.timestamps[order][1:] == raw.timestamps[order][:-1])
    )
    dup_rows = order[1:][same]
    if len(dup_rows) == 0:
        return keep
    if config.source.duplicates == "error":
        first = order[:-1][same][0]
        row = dup_rows[0]
        user, item = raw.vocabs["user"][raw.users[row]], raw.vocabs["item"][raw.items[row]]
        raise duplicate_error(
            raw.locate, raw.position[row], raw.position[first], user, item, raw.timestamps[row], len(dup_rows)
        )
    if config.source.duplicates == "merge":  # one interaction: the union of the rows' actions
        starts = np.concatenate([[True], ~same])
        group_first = order[np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))]
        np.bitwise_or.at(raw.labels, group_first[1:][same], raw.labels[dup_rows])
    keep[dup_rows] = False
    reason = "duplicate event merged into the first" if config.source.duplicates == "merge" else "duplicate event"
    dropped[reason] += int(len(dup_rows))
    return keep


def _assign_split(config: DataConfig, offsets: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    split = np.zeros(len(timestamps), dtype=np.int8)
    lengths = np.diff(offsets)
    position = np.arange(len(timestamps)) - np.repeat(offsets[:-1], lengths)
    from_end = np.repeat(lengths, lengths) - position  # 1 for the last interaction
    s = config.split
    if s.time_cutoff is None:
        split[from_end <= s.test_per_user] = TEST
        split[(from_end > s.test_per_user) & (from_end <= s.test_per_user + s.valid_per_user)] = VALID
    else:
        split[timestamps >= config.time_cutoff] = TEST
        # rows are chronological per user, so the pre-cutoff rows are a prefix of each user:
        # the last valid_per_user of that prefix are validation
        pre = (split != TEST).astype(np.int64)
        user_of_row = np.repeat(np.arange(len(lengths)), lengths)
        pre_total = np.bincount(user_of_row, weights=pre, minlength=len(lengths)).astype(np.int64)
        cumulative = np.cumsum(pre)
        before_user = np.concatenate([[0], cumulative])[offsets[:-1]]
        rank_from_end = pre_total[user_of_row] - (cumulative - before_user[user_of_row]) + 1
        split[(pre == 1) & (rank_from_end <= s.valid_per_user)] = VALID
    return split


def _vocab(
    codes: np.ndarray, train_mask: np.ndarray, config: DataConfig, raw_ids: np.ndarray
) -> Tuple[np.ndarray, np.ndarray, int, int]:
    """Contiguous rows 1..V for ids seen in training; unseen ids -> 0 or a hash bucket (:func:`vocab_rows`).

    ``codes`` index ``raw_ids`` (sorted unique raw ids), so the mapping runs once per distinct id."""
    vocab = raw_ids[_dense_unique(codes[train_mask], len(raw_ids))[0]]
    present, inverse = _dense_unique(codes, len(raw_ids))
    rows, seen = vocab_rows(raw_ids[present], vocab, config.vocab.oov, config.vocab.hash_buckets)
    num_rows = table_rows(len(vocab), config.vocab.oov, config.vocab.hash_buckets)
    inverse = inverse.reshape(-1)
    return rows[inverse], vocab, num_rows, int((~seen[inverse]).sum())


@dataclass
class _Rows:
    """The kept rows of the log, in prepared order, and the users they belong to."""

    order: np.ndarray  # row of the raw log for each prepared row
    timestamps: np.ndarray
    split: np.ndarray
    kept_users: np.ndarray  # index into the user vocabulary of each prepared user
    user_new: np.ndarray  # prepared user of each prepared row
    counts: np.ndarray  # rows per prepared user
    offsets: np.ndarray


def _min_rows_per_user(config: DataConfig) -> int:
    s = config.split
    return s.min_train_per_user + (s.valid_per_user + s.test_per_user if s.time_cutoff is None else 0)


def _chronological_order(config: DataConfig, raw: RawLog, user_idx: np.ndarray, dropped: Counter) -> np.ndarray:
    """Raw row indices grouped by user, chronological within a user, duplicates removed."""
    keep = _drop_duplicates(config, raw, user_idx, raw.items, dropped)
    order = _stable_order(user_idx, raw.timestamps)
    return order[keep[order]]


def _drop_short_users(
    config: DataConfig, user_idx: np.ndarray, order: np.ndarray, num_users: int, dropped: Counter
) -> np.ndarray:
    """``order`` without the rows of users with fewer rows than the split needs."""
    users_sorted = user_idx[order]
    counts = np.bincount(users_sorted, minlength=num_users)
    short = counts < _min_rows_per_user(config)
    if short.any():
        dropped["user with too few interactions"] += int(counts[short].sum())
        order = order[~short[users_sorted]]
    return order


def _group_users(user_idx: np.ndarray, order: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(kept_users, user_new, counts, offsets)`` of the rows ``order``."""
    kept_users, user_new = _dense_unique(user_idx[order], int(user_idx.max(initial=-1)) + 1)
    counts = np.bincount(user_new, minlength=len(kept_users))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return kept_users, user_new, counts, offsets


def _split_rows(config: DataConfig, raw: RawLog, user_idx: np.ndarray, order: np.ndarray) -> _Rows:
    """Groups the rows ``order`` by user and assigns each to training, validation or test."""
    kept_users, user_new, counts, offsets = _group_users(user_idx, order)
    timestamps = raw.timestamps[order]
    split = _assign_split(config, offsets, timestamps)
    return _Rows(order, timestamps, split, kept_users, user_new, counts, offsets)


def _drop_users_without_history(config: DataConfig, user_idx: np.ndarray, rows: _Rows, dropped: Counter) -> _Rows:
    """Under ``time_cutoff``, drops users left with no training history (they cannot be scored)."""
    s = config.split
    if s.time_cutoff is None:
        return rows
    train_counts = np.bincount(rows.user_new[rows.split == TRAIN], minlength=len(rows.kept_users))
    no_history = train_counts < s.min_train_per_user
    if not no_history.any():
        return rows
    dropped["user with no training history before time_cutoff"] += int(rows.counts[no_history].sum())
    row_keep = ~no_history[rows.user_new]
    order, timestamps, split = rows.order[row_keep], rows.timestamps[row_keep], rows.split[row_keep]
    return _Rows(order, timestamps, split, *_group_users(user_idx, order))


def _id_arrays(
    config: DataConfig, raw: RawLog, user_vocab: np.ndarray, rows: _Rows
) -> Tuple[Dict[str, np.ndarray], int, Dict[str, int], Dict[str, int]]:
    """The prepared arrays but the action: ``(arrays, item_rows, side_rows, unseen per feature)``."""
    order = rows.order
    train = rows.split == TRAIN
    item_ids, item_vocab, item_rows, item_unseen = _vocab(raw.items[order], train, config, raw.vocabs["item"])
    arrays: Dict[str, np.ndarray] = {
        "user_offsets": rows.offsets,
        "item": item_ids,
        "timestamp": rows.timestamps,
        "labels": raw.labels[order],
        "split": rows.split,
        "vocab_item": item_vocab,
        "vocab_user": user_vocab[rows.kept_users],
    }
    side_rows: Dict[str, int] = {}
    oov: Dict[str, int] = {"item": item_unseen}
    for name, values in raw.side.items():
        ids, vocab, num_rows, unseen = _vocab(values[order], train, config, raw.vocabs[name])
        arrays[f"side_{name}"], arrays[f"vocab_{name}"] = ids, vocab
        side_rows[name], oov[name] = num_rows, unseen
    return arrays, item_rows, side_rows, oov


def _add_actions(config: DataConfig, raw: RawLog, order: np.ndarray, arrays: Dict[str, np.ndarray]) -> int:
    """Adds ``action`` (and ``vocab_action``) to ``arrays``; returns the action table's rows.

    With ``action_feature`` the action is that column's vocabulary id; otherwise it is the
    bitmask of the labels (bit ``k`` for action type ``k``).
    """
    if raw.action_values is not None:
        action_ids, action_vocab, action_rows, _ = _vocab(
            raw.action_values[order], np.ones(len(order), bool), config, raw.vocabs[ACTION_FEATURE]
        )
        arrays["action"], arrays["vocab_action"] = action_ids, action_vocab
        return action_rows
    bits = 1 << np.arange(len(config.actions), dtype=np.int64)
    arrays["action"] = (arrays["labels"].astype(np.int64) * bits).sum(axis=1) if len(order) else np.zeros(0, np.int64)
    return 1 << len(config.actions)


def build_arrays(
    config: DataConfig, raw: RawLog, progress: bool = True
) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """The prepared arrays (meta under ``"__meta__"``) and the report of a read log."""
    dropped: Counter = Counter(raw.dropped)
    raw = _in_file_order(raw)
    steps = progress_bar(total=4, desc="sort, split, vocab", enabled=progress)
    user_vocab, user_idx = raw.vocabs["user"], raw.users
    order = _chronological_order(config, raw, user_idx, dropped)
    steps.update()
    order = _drop_short_users(config, user_idx, order, len(user_vocab), dropped)
    rows = _split_rows(config, raw, user_idx, order)
    steps.update()
    rows = _drop_users_without_history(config, user_idx, rows, dropped)
    arrays, item_rows, side_rows, oov = _id_arrays(config, raw, user_vocab, rows)
    steps.update()
    action_rows = _add_actions(config, raw, rows.order, arrays)
    steps.update()
    steps.close()
    report = _report(config, raw, rows, arrays["labels"], dropped, oov)
    arrays["__meta__"] = _meta(config, rows, item_rows, side_rows, action_rows)  # type: ignore[assignment]
    return arrays, report


SPLIT_CODES = (("train", TRAIN), ("valid", VALID), ("test", TEST))


def _report(
    config: DataConfig, raw: RawLog, rows: _Rows, labels: np.ndarray, dropped: Counter, oov: Dict[str, int]
) -> Dict[str, Any]:
    """What was read, kept and dropped (``report.json``) of :func:`build_arrays`."""
    order, split = rows.order, rows.split
    positives = np.array([labels[split == code].sum(axis=0, dtype=np.int64) for _, code in SPLIT_CODES]).reshape(3, -1)
    items = int(len(_dense_unique(raw.items[order], len(raw.vocabs["item"]))[0]))
    sizes = {name: int((split == code).sum()) for name, code in SPLIT_CODES}
    return _report_of(
        config,
        raw.rows_read,
        dropped,
        len(rows.kept_users),
        items,
        labels.sum(axis=0, dtype=np.int64),
        sizes,
        positives,
        oov,
        np.diff(rows.offsets),
    )


def _report_dict(
    config: DataConfig, rows_read: int, dropped: Counter, users: Any, streamed: Any, items: int, vocabs: Dict[str, Any]
) -> Dict[str, Any]:
    """``report.json`` of the DuckDB path, from the counts of its streamed pass."""
    unseen = vocabs["unseen"]
    oov = {"item": unseen["item"], **{n: unseen[f"side_{n}"] for n in config.source.side_features}}
    sizes = dict(zip(duck_rules.SPLIT_NAMES, (int(n) for n in streamed.split)))
    return _report_of(
        config,
        rows_read,
        dropped,
        len(users.codes),
        items,
        streamed.positives.sum(axis=0),
        sizes,
        streamed.positives,
        oov,
        users.counts,
    )


def _report_of(
    config: DataConfig,
    rows_read: int,
    dropped: Counter,
    users: int,
    items: int,
    per_action: np.ndarray,
    split: Dict[str, int],
    positives: np.ndarray,
    oov: Dict[str, int],
    lengths: np.ndarray,
) -> Dict[str, Any]:
    """What was read, kept and dropped (``report.json``); rows read = kept + dropped.
    ``positives``: ``[split, action]``; ``lengths``: rows of each kept user."""
    kept = int(lengths.sum())
    report: Dict[str, Any] = {
        "name": config.name,
        "source": config.source.path,
        "rows_read": int(rows_read),
        "rows_kept": kept,
        "rows_dropped": dict(sorted(dropped.items())),
        "users": int(users),
        "items": int(items),
        "interactions": kept,
        "per_action": {n: int(per_action[i]) for i, n in enumerate(config.actions)},
        "split": split,
        "positives": {
            name: {n: int(positives[code, i]) for i, n in enumerate(config.actions)} for name, code in SPLIT_CODES
        },
        "unseen_in_training": oov,
        "sequence_length": _percentiles(np.asarray(lengths)),
    }
    assert report["rows_read"] == report["rows_kept"] + sum(report["rows_dropped"].values()), report
    return report


def _meta(
    config: DataConfig, rows: _Rows, item_rows: int, side_rows: Dict[str, int], action_rows: int
) -> Dict[str, Any]:
    return _meta_dict(config, len(rows.kept_users), len(rows.order), item_rows, side_rows, action_rows)


def _meta_dict(
    config: DataConfig, users: int, interactions: int, item_rows: int, side_rows: Dict[str, int], action_rows: int
) -> Dict[str, Any]:
    """Sizes and tasks of the prepared data set (``meta.json``, the config is added on write)."""
    return {
        "format_version": PREPARED_FORMAT_VERSION,
        "name": config.name,
        "tasks": list(config.actions),
        "num_users": int(users),
        "item_rows": int(item_rows),
        "side_rows": side_rows,
        "action_rows": int(action_rows),
        "action_feature": ACTION_FEATURE,
        "interactions": int(interactions),
    }


def _percentiles(lengths: np.ndarray) -> Dict[str, float]:
    if len(lengths) == 0:
        return {}
    qs = np.percentile(lengths, [50, 90, 99])
    return {
        "min": int(lengths.min()),
        "p50": round(float(qs[0]), 2),
        "p90": round(float(qs[1]), 2),
        "p99": round(float(qs[2]), 2),
        "max": int(lengths.max()),
        "mean": round(float(lengths.mean()), 2),
    }


def _write(
    out: str, arrays: Dict[str, Any], report: Dict[str, Any], config: DataConfig, source: Dict[str, Any], progress: bool
) -> None:
    """Writes the arrays, ``report.json`` and, last, ``meta.json`` with the size and blake2b of every file."""
    meta = arrays.pop("__meta__")
    with atomic_directory(out) as tmp:
        for name, array in progress_bar(arrays.items(), desc="write", enabled=progress):
            np.save(os.path.join(tmp, f"{name}.npy"), array)
        _write_files(tmp, {}, meta, report, config, source, order=list(arrays))


def _write_files(
    tmp: str,
    arrays: Dict[str, np.ndarray],
    meta: Dict[str, Any],
    report: Dict[str, Any],
    config: DataConfig,
    source: Dict[str, Any],
    order: List[str],
) -> None:
    """Saves ``arrays`` into ``tmp``, then ``report.json`` and, last, ``meta.json`` recording every
    array of ``order`` (all in ``tmp`` by then)."""
    for name, array in arrays.items():
        np.save(os.path.join(tmp, f"{name}.npy"), array)
    meta.update(config=asdict(config), config_key=config.config_key(), source=source)
    with open(os.path.join(tmp, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    meta["arrays"] = _file_records(tmp, [f"{name}.npy" for name in order])
    meta["files"] = _file_records(tmp, ["report.json"])
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2, default=str)


def _file_records(folder: str, names) -> Dict[str, Dict[str, Any]]:
    return {
        n: {"bytes": os.path.getsize(os.path.join(folder, n)), "blake2b": file_digest(os.path.join(folder, n))}
        for n in names
    }


def load_report(path: str) -> Dict[str, Any]:
    with open(os.path.join(path, "report.json")) as f:
        return json.load(f)
