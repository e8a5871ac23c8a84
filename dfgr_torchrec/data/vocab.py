"""Raw id -> table row: the one mapping that preparing a data set and serving a model share.

Ids of the vocabulary (sorted raw ids, seen in training) get rows ``1..V``; an unseen id gets row 0
(``oov: oov``) or ``V + 1 + crc32(id) % hash_buckets`` (``oov: hash``). A column whose raw ids are
all integers (each the decimal form of an int64: ``str(int(v)) == v``) keeps them as an int64
vocabulary sorted numerically; a raw id that is not such an integer is then unknown.

Example::

    vocab = np.array(["a", "c"])
    rows, seen = vocab_rows(np.array(["c", "b"]), vocab, oov="hash", hash_buckets=4)
    # rows[0] == 2; rows[1] == 3 + crc32(b"b") % 4; seen == [True, False]
"""

from __future__ import annotations

import zlib
from typing import Optional, Tuple

import numpy as np

OOV_POLICIES = ("oov", "hash")


def hash_bucket(raw_id: str, hash_buckets: int) -> int:
    """The bucket (``0..hash_buckets-1``) of an unseen raw id: ``crc32(utf-8) % hash_buckets``."""
    return zlib.crc32(raw_id.encode()) % hash_buckets


def table_rows(vocab_size: int, oov: str, hash_buckets: int) -> int:
    """Rows of the table of a vocabulary of ``vocab_size`` ids: row 0, the ids, then any hash buckets."""
    return vocab_size + 1 + (hash_buckets if oov == "hash" else 0)


def integer_ids(values: np.ndarray) -> Optional[np.ndarray]:
    """``values`` as int64 when every one is the decimal form of an int64 (``str(int(v)) == v``), else None."""
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    try:
        ints = values.astype(np.int64)
    except (ValueError, OverflowError):
        return None
    return ints if bool((ints.astype(values.dtype) == values).all()) else None


def encode_ids(values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(vocabulary, codes)``: the sorted unique raw ids (int64 when all are integers, see
    :func:`integer_ids`) and the int64 index of each value in them."""
    ints = integer_ids(values)
    vocab, codes = np.unique(np.asarray(values) if ints is None else ints, return_inverse=True)
    return vocab, codes.astype(np.int64).reshape(-1)


def _integer_keys(values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(int64 keys, is an integer id)`` of raw ids looked up in an integer vocabulary."""
    keys, ok = np.zeros(len(values), dtype=np.int64), np.zeros(len(values), dtype=bool)
    for k, v in enumerate(values.tolist()):
        text = str(v)
        try:
            number = int(text)
        except ValueError:
            continue
        if str(number) == text and -(2**63) <= number < 2**63:
            keys[k], ok[k] = number, True
    return keys, ok


def vocab_rows(
    values: np.ndarray, vocab: np.ndarray, oov: str = "oov", hash_buckets: int = 1024
) -> Tuple[np.ndarray, np.ndarray]:
    """``(rows, seen)``: the int64 table row of each raw id of ``values`` and whether it is in
    ``vocab`` (sorted, unique raw ids; row ``r`` holds ``vocab[r - 1]``). With an integer
    vocabulary, string ids are compared as integers (``"7"`` is ``7``; ``"7.0"`` is unknown)."""
    if oov not in OOV_POLICIES:
        raise ValueError(f"oov: expected one of {OOV_POLICIES}, got {oov!r}")
    values, vocab = np.asarray(values), np.asarray(vocab)
    keys, known = values, np.ones(len(values), dtype=bool)
    if vocab.dtype.kind in "iu" and values.dtype.kind not in "iu":
        keys, known = _integer_keys(values)
    elif vocab.dtype.kind not in "iu" and values.dtype.kind in "iu":
        keys = values.astype(str)
    if len(vocab) == 0:
        seen = np.zeros(len(values), dtype=bool)
        rows = np.zeros(len(values), dtype=np.int64)
    else:
        pos = np.minimum(np.searchsorted(vocab, keys), len(vocab) - 1)
        seen = known & (vocab[pos] == keys)
        rows = np.where(seen, pos + 1, 0).astype(np.int64)
    if oov == "hash" and not seen.all():
        hashed = np.array([hash_bucket(str(v), hash_buckets) for v in values[~seen]], dtype=np.int64)
        rows[~seen] = len(vocab) + 1 + hashed
    return rows, np.asarray(seen, dtype=bool)
