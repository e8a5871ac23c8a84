"""The batch the ranking models consume: KJT of sequences and candidates, times and labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence

import torch
from torchrec import KeyedJaggedTensor
from torchrec.sparse.jagged_tensor import JaggedTensor
from torchrec.streamable import Pipelineable

from dfgr_torchrec.modules.embeddings import ITEM_FEATURE, candidate_feature


@dataclass
class SequenceBatch(Pipelineable):
    """One batch of users: each user's behaviour history and, optionally, candidates to score.

    Attributes:
        features: keys of :func:`~dfgr_torchrec.modules.embeddings.sequence_feature_names`:
            ``item_id``, item side features and action features aligned per history
            interaction; ``cand_item_id`` (+ ``cand_<side>``) per candidate (lengths may be 0).
        timestamps: ``[T]`` int64 time of every history interaction (sorted within a user).
        labels: ``[T, num_tasks]`` float targets of every history interaction.
        candidate_timestamps: ``[M]`` int64 request time of every candidate.
        candidate_labels: ``[M, num_tasks]`` float targets of candidates (for evaluation).

    It moves and pins like any TorchRec pipeline batch (``to``, ``pin_memory``,
    ``record_stream``).
    """

    features: KeyedJaggedTensor
    timestamps: torch.Tensor
    labels: torch.Tensor
    candidate_timestamps: torch.Tensor
    candidate_labels: torch.Tensor

    @property
    def history_lengths(self) -> torch.Tensor:
        return self.features[ITEM_FEATURE].lengths()

    @property
    def candidate_lengths(self) -> torch.Tensor:
        return self.features[candidate_feature(ITEM_FEATURE)].lengths()

    def history_timestamps(self) -> JaggedTensor:
        return JaggedTensor(values=self.timestamps, lengths=self.history_lengths)

    def candidate_timestamps_jagged(self) -> JaggedTensor:
        return JaggedTensor(values=self.candidate_timestamps, lengths=self.candidate_lengths)

    def to(self, device: torch.device, non_blocking: bool = False) -> "SequenceBatch":
        return SequenceBatch(
            features=self.features.to(device=device, non_blocking=non_blocking),
            timestamps=self.timestamps.to(device=device, non_blocking=non_blocking),
            labels=self.labels.to(device=device, non_blocking=non_blocking),
            candidate_timestamps=self.candidate_timestamps.to(device=device, non_blocking=non_blocking),
            candidate_labels=self.candidate_labels.to(device=device, non_blocking=non_blocking),
        )

    def record_stream(self, stream: torch.Stream) -> None:
        self.features.record_stream(stream)
        for t in (self.timestamps, self.labels, self.candidate_timestamps, self.candidate_labels):
            t.record_stream(stream)

    def pin_memory(self) -> "SequenceBatch":
        return SequenceBatch(
            features=self.features.pin_memory(),
            timestamps=self.timestamps.pin_memory(),
            labels=self.labels.pin_memory(),
            candidate_timestamps=self.candidate_timestamps.pin_memory(),
            candidate_labels=self.candidate_labels.pin_memory(),
        )


def make_sequence_batch(
    history: Dict[str, Sequence[Sequence[int]]],
    timestamps: Sequence[Sequence[int]],
    labels: Sequence[Sequence[Sequence[float]]],
    candidates: Dict[str, Sequence[Sequence[int]]],
    candidate_timestamps: Sequence[Sequence[int]],
    candidate_labels: Sequence[Sequence[Sequence[float]]],
    num_tasks: int,
) -> SequenceBatch:
    """Builds a :class:`SequenceBatch` from per-user Python lists (handy in tests and examples).

    ``history`` maps each history feature name (``item_id``, side and action features) to one
    list of ids per user; ``candidates`` maps history feature names (``item_id`` and side
    features, without the ``cand_`` prefix) to one list per user.
    """
    num_users = len(timestamps)
    keys: List[str] = []
    lengths: List[torch.Tensor] = []
    values: List[torch.Tensor] = []
    for name, per_user in history.items():
        _check_users(name, per_user, num_users)
        keys.append(name)
        lengths.append(torch.tensor([len(seq) for seq in per_user], dtype=torch.int64))
        values.append(torch.tensor([x for seq in per_user for x in seq], dtype=torch.int64))
    for name, per_user in candidates.items():
        _check_users(candidate_feature(name), per_user, num_users)
        keys.append(candidate_feature(name))
        lengths.append(torch.tensor([len(seq) for seq in per_user], dtype=torch.int64))
        values.append(torch.tensor([x for seq in per_user for x in seq], dtype=torch.int64))
    features = KeyedJaggedTensor.from_lengths_sync(keys=keys, values=torch.cat(values), lengths=torch.cat(lengths))
    return SequenceBatch(
        features=features,
        timestamps=torch.tensor([t for seq in timestamps for t in seq], dtype=torch.int64),
        labels=torch.tensor([row for seq in labels for row in seq], dtype=torch.float32).reshape(-1, num_tasks),
        candidate_timestamps=torch.tensor([t for seq in candidate_timestamps for t in seq], dtype=torch.int64),
        candidate_labels=torch.tensor(
            [row for seq in candidate_labels for row in seq], dtype=torch.float32
        ).reshape(-1, num_tasks),
    )


def _check_users(name: str, per_user: Sequence, num_users: int) -> None:
    if len(per_user) != num_users:
        raise ValueError(f"feature {name!r} has {len(per_user)} users, expected {num_users}")
