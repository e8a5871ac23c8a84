"""The repeat feature (``embeddings.repeat_feature``): does a token's item occur earlier in the history?

A fake-flow token (DFGR; MetaGR: an item token) or a candidate whose item the user met before
gets a learned embedding of the action of the latest earlier occurrence plus one of how long ago
it was (a log2 bucket of the number of interactions in between); a token with no earlier
occurrence gets the "none" rows. "Earlier" is what the token may see: a strictly smaller order
key (position, or time in session mode), so a token never reads its own label. The embedding is
added to the item embedding before the placeholder merge, so every path (training, scoring, the
history cache, the exported graph's candidate input) adds the same vector.

The code helpers are ``torch.fx.wrap``-ed (TorchRec's pipeline tracer keeps them as leaves);
call them through the module (``repeat_ops.history_codes(...)``).

Example::

    codes = repeat_ops.history_codes(items, actions, lengths, keys)       # [T, 2] int64
    tokens = items_embedded + repeat(codes)                                # RepeatEmbedding
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.fx
from torch import nn
from torchrec import KeyedJaggedTensor

from dfgr_torchrec.config import SequenceEmbeddingConfig
from dfgr_torchrec.features import ITEM_FEATURE, candidate_feature
from dfgr_torchrec.ops.jagged import lengths_to_offsets, positions_in_sequence
from dfgr_torchrec.ops.repeat import log_gap_buckets, previous_occurrence

GAP_BUCKETS = 8  # 1, 2-3, 4-7, ..., >= 128 interactions ago


class RepeatEmbedding(nn.Module):
    """``codes [n, 2]`` (action row + 1 or 0, gap bucket or 0) -> ``[n, dim]``: the two rows summed."""

    def __init__(self, action_rows: int, dim: int, device: Optional[torch.device] = None) -> None:
        super().__init__()
        self.action = nn.Embedding(action_rows + 1, dim, device=device)
        self.gap = nn.Embedding(GAP_BUCKETS + 1, dim, device=device)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.action.weight, std=0.02)
        nn.init.normal_(self.gap.weight, std=0.02)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.action(codes[:, 0]) + self.gap(codes[:, 1])


def _owners(lengths: torch.Tensor) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device), lengths)


def _codes(h_items, h_actions, h_lengths, h_keys, q_items, q_lengths, q_keys, q_index) -> torch.Tensor:
    """``[Q, 2]`` codes; ``q_index`` is each query's index in its user's history (for the gap)."""
    if h_items.numel() == 0:
        return torch.zeros(q_items.shape[0], 2, dtype=torch.int64, device=q_items.device)
    h_users, q_users = _owners(h_lengths), _owners(q_lengths)
    match = previous_occurrence(h_items, h_users, h_keys, q_items, q_users, q_keys)
    found = match >= 0
    safe = match.clamp(min=0)
    h_index = positions_in_sequence(lengths_to_offsets(h_lengths), h_items.shape[0])
    action = torch.where(found, h_actions[safe].to(torch.int64) + 1, torch.zeros_like(match))
    gap = torch.where(found, log_gap_buckets(q_index - h_index[safe], GAP_BUCKETS), torch.zeros_like(match))
    return torch.stack([action, gap], dim=1)


@torch.fx.wrap
def history_codes(
    items: torch.Tensor, actions: torch.Tensor, lengths: torch.Tensor, times: Optional[torch.Tensor]
) -> torch.Tensor:
    """``[T, 2]``: the codes of every history interaction as a query against its own user's earlier
    interactions (earlier by position, or by time when ``times`` is given: session mode)."""
    positions = positions_in_sequence(lengths_to_offsets(lengths), items.shape[0])
    if times is None:
        return _codes(items, actions, lengths, positions, items, lengths, positions, positions)
    # in session mode a token stands where its session starts (as a candidate after the earlier sessions)
    index = torch.arange(items.shape[0], device=items.device)
    new_session = (positions == 0) | (times != torch.roll(times, 1))
    start = torch.cummax(torch.where(new_session, index, torch.zeros_like(index)), dim=0).values
    return _codes(items, actions, lengths, times, items, lengths, times, positions[start])


@torch.fx.wrap
def candidate_codes(
    h_items: torch.Tensor,
    h_actions: torch.Tensor,
    h_lengths: torch.Tensor,
    h_times: Optional[torch.Tensor],
    c_items: torch.Tensor,
    c_lengths: torch.Tensor,
    c_times: Optional[torch.Tensor],
) -> torch.Tensor:
    """``[M, 2]``: the codes of candidates placed after each user's history; they see the whole
    history (``h_times``/``c_times`` None) or, in session mode, the history with ``t_j < t_c``."""
    per_candidate = torch.repeat_interleave(h_lengths, c_lengths, output_size=c_items.shape[0])
    if h_times is None or c_times is None:
        h_keys = positions_in_sequence(lengths_to_offsets(h_lengths), h_items.shape[0])
        c_keys = per_candidate
    else:
        h_keys, c_keys = h_times, c_times
    return _codes(h_items, h_actions, h_lengths, h_keys, c_items, c_lengths, c_keys, per_candidate)


class RepeatFeature(nn.Module):
    """The repeat embedding of a model's query tokens from a batch's features (KJT keys
    ``item_id``, ``cand_item_id`` and the first action feature).

    Args:
        config: the model's embeddings (the first action feature's rows, the width).
        session: ``mask_mode`` is ``session`` (earlier = strictly earlier time).
    """

    def __init__(self, config: SequenceEmbeddingConfig, session: bool, device: Optional[torch.device] = None) -> None:
        super().__init__()
        self.action_feature = next(iter(config.action_vocab_sizes))
        self.session = session
        self.embedding = RepeatEmbedding(config.action_vocab_sizes[self.action_feature], config.embedding_dim, device)

    def history(self, features: KeyedJaggedTensor, timestamps: torch.Tensor) -> torch.Tensor:
        """``[T, e]``: every history interaction as a query against its user's earlier ones."""
        items = features[ITEM_FEATURE]
        actions = features[self.action_feature].values()
        codes = history_codes(items.values(), actions, items.lengths(), timestamps if self.session else None)
        return self.embedding(codes)

    def candidates(
        self, features: KeyedJaggedTensor, timestamps: torch.Tensor, candidate_timestamps: torch.Tensor
    ) -> torch.Tensor:
        """``[M, e]``: every candidate against its user's history."""
        items, candidates = features[ITEM_FEATURE], features[candidate_feature(ITEM_FEATURE)]
        actions = features[self.action_feature].values()
        return self.against(
            items.values(),
            actions,
            items.lengths(),
            timestamps,
            candidates.values(),
            candidates.lengths(),
            candidate_timestamps,
        )

    def against(self, h_items, h_actions, h_lengths, h_times, c_items, c_lengths, c_times) -> torch.Tensor:
        """``[M, e]``: candidates against given histories (item rows, action ids and lengths per user;
        the times are read in session mode only): what the history cache calls with its states."""
        session = self.session and h_times is not None and c_times is not None
        codes = candidate_codes(
            h_items,
            h_actions,
            h_lengths,
            h_times if session else None,
            c_items,
            c_lengths,
            c_times if session else None,
        )
        return self.embedding(codes)
