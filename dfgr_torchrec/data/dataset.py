"""Streaming :class:`SequenceBatch` es from a prepared data set, sharded by rank and worker."""

from __future__ import annotations

import json
import math
import os
from typing import Dict, Iterator, List, Optional, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchrec import KeyedJaggedTensor

from dfgr_torchrec.batch import SequenceBatch
from dfgr_torchrec.data.prepare import TEST, TRAIN, VALID, check_prepared
from dfgr_torchrec.features import (
    ACTION_FEATURE,
    ITEM_FEATURE,
    USER_FEATURE,
    DataSchema,
    candidate_feature,
    is_candidate_feature,
)

SPLITS = ("train", "valid", "test")


class PreparedData:
    """A prepared data set on disk, its arrays memory-mapped (read lazily, shared by workers)."""

    def __init__(self, path: str) -> None:
        damage = check_prepared(path)
        if damage is not None:
            raise ValueError(
                f"{path}: not an intact prepared data set: {damage}; prepare it again "
                "(`dfgr data prepare --config <data yaml> --force`)"
            )
        with open(os.path.join(path, "meta.json")) as f:
            self.meta = json.load(f)
        self.path = path
        load = lambda name: np.load(os.path.join(path, f"{name}.npy"), mmap_mode="r")  # noqa: E731
        self.offsets = np.asarray(load("user_offsets"))
        self.item, self.timestamp, self.action = load("item"), load("timestamp"), load("action")
        self.labels, self.split = load("labels"), load("split")
        self.side = {name: load(f"side_{name}") for name in self.meta["side_rows"]}
        lengths = np.diff(self.offsets)
        user_of_row = np.repeat(np.arange(len(lengths)), lengths)
        split = np.asarray(self.split)
        self.counts = {
            code: np.bincount(user_of_row[split == code], minlength=len(lengths)).astype(np.int64)
            for code in (TRAIN, VALID, TEST)
        }

    def item_train_counts(self) -> np.ndarray:
        """``[item rows]`` int64: how often each item occurs in the training split."""
        train_items = np.asarray(self.item)[np.asarray(self.split) == TRAIN]
        return np.bincount(train_items, minlength=int(self.meta["item_rows"])).astype(np.int64)

    def item_train_label_sums(self) -> np.ndarray:
        """``[item rows, tasks]`` float64: the sum of each task's label over each item's training rows."""
        train = np.asarray(self.split) == TRAIN
        items = np.asarray(self.item)[train].astype(np.int64)
        labels = np.asarray(self.labels)[train].astype(np.float64).reshape(len(items), len(self.tasks))
        size = int(self.meta["item_rows"])
        sums = [np.bincount(items, weights=labels[:, t], minlength=size) for t in range(len(self.tasks))]
        return np.stack(sums, 1).reshape(size, len(self.tasks))

    def train_label_means(self) -> np.ndarray:
        """``[tasks]`` float64: the mean label of the training rows (0.5 without any)."""
        labels = np.asarray(self.labels)[np.asarray(self.split) == TRAIN].astype(np.float64)
        return labels.reshape(-1, len(self.tasks)).mean(0) if len(labels) else np.full(len(self.tasks), 0.5)

    def whole_training_histories(self, batch_size: int = 1024) -> "SequenceDataset":
        """Every user's whole training history once, in user order (no shuffle, no truncation): the
        rows a model fits closed-form statistics on (``logreg``)."""
        longest = max(1, int(self.counts[TRAIN].max())) if self.num_users else 1
        return SequenceDataset(self, "train", batch_size=batch_size, max_seq_len=longest, shuffle=False)

    @property
    def tasks(self) -> List[str]:
        return list(self.meta["tasks"])

    @property
    def num_users(self) -> int:
        return int(self.meta["num_users"])

    def schema(self, user_id: bool = False) -> DataSchema:
        """The tasks and table sizes a model trained on this data set needs; ``user_id`` adds the
        user as a per-user feature (row 0 left for a user the data set does not know)."""
        return DataSchema(
            tasks=self.tasks,
            item_rows=int(self.meta["item_rows"]),
            action_rows={ACTION_FEATURE: int(self.meta["action_rows"])},
            side_rows={k: int(v) for k, v in self.meta["side_rows"].items()},
            user_rows={USER_FEATURE: self.num_users + 1} if user_id else {},
        )

    def mean_history_length(self, max_seq_len: int) -> float:
        """Mean interactions per user, capped at ``max_seq_len`` (the planner's pooling factor)."""
        lengths = np.minimum(np.diff(self.offsets), max_seq_len)
        return float(lengths.mean()) if len(lengths) else 1.0


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, e)`` for each pair, without a Python loop."""
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    shift = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return np.arange(total, dtype=np.int64) + shift


class SequenceDataset(IterableDataset):
    """Yields :class:`SequenceBatch` es of one split, sharded by rank and DataLoader worker.

    - ``train``: each user's training history (the most recent ``max_seq_len``), labels at
      every position, no candidates. Users are shuffled per epoch (``set_epoch``) with the
      same permutation on every rank; each rank takes ``num_users // world_size`` of them,
      so every rank yields the same number of batches (``dropped_users`` counts the rest).
    - ``valid``: history = training part, candidates = the validation interactions.
    - ``test``: history = training + validation parts, candidates = the test interactions.
      Evaluation covers every user with candidates: rank ``r`` takes users ``r::world_size``;
      a rank with fewer users pads with empty batches (one user id -1, nothing to score), so
      every rank yields the same number of batches and sharded lookups stay collective.

    Use it with ``DataLoader(dataset, batch_size=None, num_workers=..., pin_memory=...)``
    (:func:`make_dataloader`); workers take the rank's batches round-robin, so the loader
    yields them in order.

    Args:
        data: a :class:`PreparedData` or its path.
        split: ``"train"``, ``"valid"`` or ``"test"``.
        batch_size: users per batch.
        max_seq_len: longest history kept (the most recent interactions).
        rank: this process's shard.
        world_size: the number of shards.
        shuffle: shuffle users each epoch (default: only for ``train``).
        seed: shuffling seed.
        user_id: emit each user's id as the per-user feature ``user_id`` (see ``PreparedData.schema``).
        random_window: ``train`` only: instead of the most recent ``max_seq_len`` interactions,
            a window ending at a random point of the training history (drawn per user and epoch),
            so long histories are seen in full over the epochs.
    """

    def __init__(
        self,
        data: Union[PreparedData, str],
        split: str,
        batch_size: int,
        max_seq_len: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: Optional[bool] = None,
        seed: int = 0,
        random_window: bool = False,
        user_id: bool = False,
    ) -> None:
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank: expected 0 <= rank < world_size ({world_size}), got {rank}")
        if batch_size <= 0 or max_seq_len <= 0:
            raise ValueError(f"batch_size and max_seq_len must be positive, got {batch_size}, {max_seq_len}")
        self.data = data if isinstance(data, PreparedData) else PreparedData(data)
        self.split, self.batch_size, self.max_seq_len = split, batch_size, max_seq_len
        self.rank, self.world_size = rank, world_size
        self.shuffle = (split == "train") if shuffle is None else shuffle
        self.seed, self.epoch = seed, 0
        if random_window and split != "train":
            raise ValueError(
                "random_window: only the train split samples windows; evaluation uses the most recent history"
            )
        self.random_window = random_window
        d = self.data
        self._history_count = d.counts[TRAIN] + (d.counts[VALID] if split == "test" else 0)
        self._candidate_count = {
            "train": np.zeros_like(d.counts[TRAIN]),
            "valid": d.counts[VALID],
            "test": d.counts[TEST],
        }[split]
        needs = self._history_count > 0 if split == "train" else self._candidate_count > 0
        self.users = np.flatnonzero(needs)
        self.dropped_users = len(self.users) % world_size if split == "train" else 0
        self.feature_names = d.schema(user_id).feature_names

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rank_users(self) -> np.ndarray:
        users = self.users
        if self.shuffle:
            users = np.random.default_rng([self.seed, self.epoch]).permutation(users)
        if self.split == "train":
            per_rank = len(users) // self.world_size
            return users[self.rank * per_rank : (self.rank + 1) * per_rank]
        return users[self.rank :: self.world_size]

    def batch_users(self) -> List[np.ndarray]:
        """The users of each batch this rank yields (empty arrays pad evaluation splits)."""
        users = self.rank_users()
        batches = [users[start : start + self.batch_size] for start in range(0, len(users), self.batch_size)]
        if self.split != "train":  # the rank with the most users sets the count
            most = math.ceil(len(self.users) / self.world_size)
            batches += [users[:0]] * (math.ceil(most / self.batch_size) - len(batches))
        return batches

    def __len__(self) -> int:
        """Batches this rank yields."""
        return len(self.batch_users())

    def __iter__(self) -> Iterator[SequenceBatch]:
        batches = self.batch_users()
        worker = get_worker_info()
        if worker is not None:
            batches = batches[worker.id :: worker.num_workers]
        for users in batches:
            yield self.make_batch(users)

    def make_batch(self, users: np.ndarray) -> SequenceBatch:
        """The batch of the given users (indices into the prepared data set); no users: an empty batch."""
        d = self.data
        padding = len(users) == 0
        user_ids = torch.tensor([-1]) if padding else torch.from_numpy(np.asarray(users, dtype=np.int64))
        if padding:  # one user with nothing to look up or score
            users = np.zeros(1, dtype=np.int64)
        starts = d.offsets[users]
        history_end = starts + self._history_count[users]
        if self.random_window:
            # a training history longer than max_seq_len contributes a different window each epoch
            extra = np.maximum(self._history_count[users] - self.max_seq_len, 0)
            rng = np.random.default_rng([self.seed, self.epoch, 1])
            draws = rng.random(len(self.data.offsets) - 1)[users]  # per (epoch, user), whatever the batching
            history_end = history_end - np.floor(draws * (extra + 1)).astype(np.int64)
        history_start = np.maximum(starts, history_end - self.max_seq_len)
        candidate_end = history_end + self._candidate_count[users]
        if padding:
            history_start = history_end = candidate_end = starts
        rows = _ranges(history_start, history_end)
        cand_rows = _ranges(history_end, candidate_end)
        h_lengths = torch.from_numpy(history_end - history_start)
        c_lengths = torch.from_numpy(candidate_end - history_end)

        per_key: Dict[str, np.ndarray] = {
            ITEM_FEATURE: d.item[rows],
            candidate_feature(ITEM_FEATURE): d.item[cand_rows],
        }
        for name, column in d.side.items():
            per_key[name] = column[rows]
            per_key[candidate_feature(name)] = column[cand_rows]
        per_key[ACTION_FEATURE] = d.action[rows]
        per_key[USER_FEATURE] = np.where(padding, 0, users + 1)
        keys = self.feature_names
        values = torch.from_numpy(np.concatenate([np.asarray(per_key[k], dtype=np.int64) for k in keys]))
        one_each = torch.ones(len(users), dtype=torch.int64)
        lengths = torch.cat(
            [one_each if k == USER_FEATURE else c_lengths if is_candidate_feature(k) else h_lengths for k in keys]
        )
        return SequenceBatch(
            features=KeyedJaggedTensor(keys=keys, values=values, lengths=lengths),
            timestamps=torch.from_numpy(np.asarray(d.timestamp[rows], dtype=np.int64)),
            labels=torch.from_numpy(np.asarray(d.labels[rows], dtype=np.float32)),
            candidate_timestamps=torch.from_numpy(np.asarray(d.timestamp[cand_rows], dtype=np.int64)),
            candidate_labels=torch.from_numpy(np.asarray(d.labels[cand_rows], dtype=np.float32)),
            user_ids=user_ids,
        )


def make_dataloader(dataset: SequenceDataset, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over ready-made batches (the dataset batches itself)."""
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
