"""Pointwise samples for the baselines teams run (bias, DLRM, DCN, DeepFM, DIN).

They score one (user, target item) pair at a time from features of the history the target may
see. To train on the same signal as DFGR (a label at every history interaction), every history
interaction ``i`` is a sample whose target is item ``i`` and whose history is what DFGR's fake
token ``i`` sees: interactions ``j < i`` by position, or ``t_j < t_i`` in session mode. At
inference a candidate sees the whole history (``t_j < t_candidate`` in session mode). That
visible history is always a prefix of the user's (time-sorted) sequence, so pooled history
features cost O(N) per user through prefix sums.

Shapes: ``S`` samples (``T`` history interactions in training, ``M`` candidates in scoring),
``D`` the embedding width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn

from dfgr_torchrec.modules.embeddings import SequenceEmbeddings
from dfgr_torchrec.modules.stack import session_layout
from dfgr_torchrec.ops.attention import AttentionSpec
from dfgr_torchrec.ops.jagged import lengths_to_offsets, positions_in_sequence, repeat_per_element


@dataclass
class PointwiseSamples:
    """One row per scored interaction.

    Attributes:
        target: ``[S, D]`` the target item's embedding (with its side features).
        history_items: ``[S, D]`` mean item embedding of the history the target may see (0 if none).
        history_actions: ``[S, D]`` mean action embedding of that history (0 if none).
        visible: ``[S]`` int64 how many history interactions the target sees.
        owner: ``[S]`` int64 the batch row (user) of each sample.
        user: ``[S, D]`` the user-feature embedding, when the model has user features.
    """

    target: torch.Tensor
    history_items: torch.Tensor
    history_actions: torch.Tensor
    visible: torch.Tensor
    owner: torch.Tensor
    user: Optional[torch.Tensor] = None


def prefix_sum(values: torch.Tensor, starts: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Row ``s`` is the float64 sum of ``values[starts[s] : starts[s] + counts[s]]`` (0 where empty),
    through prefix sums in float64, so long sequences of small values lose no precision."""
    csum = torch.cat([values.new_zeros(1, values.shape[1], dtype=torch.float64), values.double().cumsum(0)])
    return csum[starts + counts] - csum[starts]


def prefix_mean(values: torch.Tensor, starts: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Row ``s`` is the mean of ``values[starts[s] : starts[s] + counts[s]]`` (0 where empty)."""
    total = prefix_sum(values, starts, counts)
    return (total / counts.clamp(min=1).unsqueeze(1)).to(values.dtype)


def training_layout(
    lengths: torch.Tensor, timestamps: torch.Tensor, session: bool, total: int
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(starts, visible, owner)`` of a sample per history interaction (``total`` of them): its
    user's first history row, how many rows before it it sees (its session excluded), its user."""
    offsets = lengths_to_offsets(lengths)
    positions = positions_in_sequence(offsets, total)
    visible = session_layout(timestamps, positions, "history")[0] if session else positions
    owner = repeat_per_element(torch.arange(lengths.numel(), device=lengths.device), lengths, total)
    return offsets[:-1][owner], visible, owner


def candidate_layout(
    h_lengths: torch.Tensor,
    c_lengths: torch.Tensor,
    history_timestamps: torch.Tensor,
    candidate_timestamps: torch.Tensor,
    session: bool,
    total: int,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(starts, visible, owner)`` of a sample per candidate (``total`` of them), seeing the whole
    history (``t_j < t_candidate`` in session mode)."""
    h_offsets, c_offsets = lengths_to_offsets(h_lengths), lengths_to_offsets(c_lengths)
    owner = repeat_per_element(torch.arange(c_lengths.numel(), device=c_lengths.device), c_lengths, total)
    if session:
        spec = AttentionSpec(c_offsets, h_offsets, candidate_timestamps, history_timestamps, strict=True)
        visible = spec.visible_counts()
    else:
        visible = h_lengths[owner]
    return h_offsets[:-1][owner], visible, owner


def training_samples(emb: SequenceEmbeddings, timestamps: torch.Tensor, session: bool) -> PointwiseSamples:
    """A sample per history interaction, seeing the interactions before it (its session excluded);
    ``timestamps``: ``[T]`` of the history (used in session mode)."""
    target = emb.items.values()
    starts, visible, owner = training_layout(emb.items.lengths(), timestamps, session, target.shape[0])
    return _samples(emb, target, starts, visible, owner)


def candidate_samples(
    emb: SequenceEmbeddings, history_timestamps: torch.Tensor, candidate_timestamps: torch.Tensor, session: bool
) -> PointwiseSamples:
    """A sample per candidate, seeing the whole history (``t_j < t_candidate`` in session mode)."""
    target = emb.candidates.values()
    starts, visible, owner = candidate_layout(
        emb.items.lengths(),
        emb.candidates.lengths(),
        history_timestamps,
        candidate_timestamps,
        session,
        target.shape[0],
    )
    return _samples(emb, target, starts, visible, owner)


def _samples(
    emb: SequenceEmbeddings, target: torch.Tensor, starts: torch.Tensor, visible: torch.Tensor, owner: torch.Tensor
) -> PointwiseSamples:
    return PointwiseSamples(
        target=target,
        history_items=prefix_mean(emb.items.values(), starts, visible),
        history_actions=prefix_mean(emb.actions.values(), starts, visible),
        visible=visible,
        owner=owner,
        user=None if emb.users is None else emb.users[owner],
    )


class TrainingSampler(nn.Module):
    """:func:`training_samples` as a module: TorchRec's train pipelines trace a model's forward
    down to its submodules, and the sample layout has data-dependent shapes, so it stays a leaf."""

    def __init__(self, session: bool) -> None:
        super().__init__()
        self.session = session

    def forward(self, emb: SequenceEmbeddings, timestamps: torch.Tensor) -> PointwiseSamples:
        return training_samples(emb, timestamps, self.session)
