"""The batch the ranking models consume: KJT of sequences and candidates, times and labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from torchrec import KeyedJaggedTensor
from torchrec.sparse.jagged_tensor import JaggedTensor
from torchrec.streamable import Pipelineable

from dfgr_torchrec.features import ITEM_FEATURE, candidate_feature


@dataclass
class SequenceBatch(Pipelineable):
    """One batch of users: each user's behaviour history and, optionally, candidates to score.

    Attributes:
        features: keys of :func:`~dfgr_torchrec.features.feature_names`:
            ``item_id``, item side features and action features aligned per history
            interaction; ``cand_item_id`` (+ ``cand_<side>``) per candidate (lengths may be 0).
        timestamps: ``[T]`` int64 time of every history interaction (sorted within a user).
        labels: ``[T, num_tasks]`` float targets of every history interaction.
        candidate_timestamps: ``[M]`` int64 request time of every candidate.
        candidate_labels: ``[M, num_tasks]`` float targets of candidates (for evaluation).
        user_ids: ``[B]`` int64 id of each user (the data set's user index; -1 for the padding
            user of an empty batch), for per-user metrics such as GAUC. Optional.

    It moves and pins like any TorchRec pipeline batch (``to``, ``pin_memory``,
    ``record_stream``).
    """

    features: KeyedJaggedTensor
    timestamps: torch.Tensor
    labels: torch.Tensor
    candidate_timestamps: torch.Tensor
    candidate_labels: torch.Tensor
    user_ids: Optional[torch.Tensor] = None

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

    @property
    def candidate_user_ids(self) -> torch.Tensor:
        """``[M]``: the user id of every candidate."""
        if self.user_ids is None:
            raise ValueError("this batch carries no user_ids")
        return torch.repeat_interleave(self.user_ids, self.candidate_lengths)

    def _tensors(self) -> Dict[str, Optional[torch.Tensor]]:
        names = ("timestamps", "labels", "candidate_timestamps", "candidate_labels", "user_ids")
        return {name: getattr(self, name) for name in names}

    def _map(self, features: KeyedJaggedTensor, fn) -> "SequenceBatch":
        return SequenceBatch(features=features, **{k: None if t is None else fn(t) for k, t in self._tensors().items()})

    def to(self, device: torch.device, non_blocking: bool = False) -> "SequenceBatch":
        features = self.features.to(device=device, non_blocking=non_blocking)
        return self._map(features, lambda t: t.to(device=device, non_blocking=non_blocking))

    def record_stream(self, stream: torch.Stream) -> None:
        self.features.record_stream(stream)
        for t in self._tensors().values():
            if t is not None:
                t.record_stream(stream)

    def pin_memory(self) -> "SequenceBatch":
        return self._map(self.features.pin_memory(), lambda t: t.pin_memory())


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
        candidate_labels=torch.tensor([row for seq in candidate_labels for row in seq], dtype=torch.float32).reshape(
            -1, num_tasks
        ),
    )


def _check_users(name: str, per_user: Sequence, num_users: int) -> None:
    if len(per_user) != num_users:
        raise ValueError(f"feature {name!r} has {len(per_user)} users, expected {num_users}")
