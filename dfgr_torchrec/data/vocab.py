"""Raw id -> table row: the one mapping that preparing a data set and serving a model share.

Ids of the vocabulary (sorted raw id strings, seen in training) get rows ``1..V``; an unseen id
gets row 0 (``oov: oov``) or ``V + 1 + crc32(id) % hash_buckets`` (``oov: hash``).

Example::

    vocab = np.array(["a", "c"])
    rows, seen = vocab_rows(np.array(["c", "b"]), vocab, oov="hash", hash_buckets=4)
    # rows[0] == 2; rows[1] == 3 + crc32(b"b") % 4; seen == [True, False]
"""

from __future__ import annotations

import zlib
from typing import Tuple

import numpy as np

OOV_POLICIES = ("oov", "hash")


def hash_bucket(raw_id: str, hash_buckets: int) -> int:
    """The bucket (``0..hash_buckets-1``) of an unseen raw id: ``crc32(utf-8) % hash_buckets``."""
    return zlib.crc32(raw_id.encode()) % hash_buckets


def table_rows(vocab_size: int, oov: str, hash_buckets: int) -> int:
    """Rows of the table of a vocabulary of ``vocab_size`` ids: row 0, the ids, then any hash buckets."""
    return vocab_size + 1 + (hash_buckets if oov == "hash" else 0)


def vocab_rows(values: np.ndarray, vocab: np.ndarray, oov: str = "oov", hash_buckets: int = 1024) -> Tuple[np.ndarray, np.ndarray]:
    """``(rows, seen)``: the int64 table row of each raw id string of ``values`` and whether it is
    in ``vocab`` (sorted, unique raw id strings; row ``r`` holds ``vocab[r - 1]``)."""
    if oov not in OOV_POLICIES:
        raise ValueError(f"oov: expected one of {OOV_POLICIES}, got {oov!r}")
    values = np.asarray(values)
    if len(vocab) == 0:
        seen = np.zeros(len(values), dtype=bool)
        rows = np.zeros(len(values), dtype=np.int64)
    else:
        pos = np.minimum(np.searchsorted(vocab, values), len(vocab) - 1)
        seen = vocab[pos] == values
        rows = np.where(seen, pos + 1, 0).astype(np.int64)
    if oov == "hash" and not seen.all():
        hashed = np.array([hash_bucket(str(v), hash_buckets) for v in values[~seen]], dtype=np.int64)
        rows[~seen] = len(vocab) + 1 + hashed
    return rows, np.asarray(seen, dtype=bool)
