"""The history cache at the level of a ranking model: batches of ids in, logits out."""

from __future__ import annotations

import dataclasses
from typing import List

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec.batch import SequenceBatch
from dfgr_torchrec.models.ranking import DFGRRankingModel, MetaGRRankingModel
from dfgr_torchrec.modules import context_token as context_ops
from dfgr_torchrec.ops.jagged import lengths_to_offsets
from dfgr_torchrec.serving.history import HistoryState, append_history, encode_histories, score_cached


class CachedScorer:
    """Scores candidates of DFGR or MetaGR against cached histories, exactly as ``score_candidates``.

    Args:
        model: an unsharded :class:`DFGRRankingModel` or :class:`MetaGRRankingModel` (put in eval mode).

    Example::

        scorer = CachedScorer(model)
        states = scorer.encode(batch)               # the batch's histories, one state per user
        logits = scorer.score(states, batch)        # == model.score_candidates(batch), no history recompute
        states[0] = scorer.append(states[0], more)  # ``more``: one user whose history holds the new interactions
    """

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, (DFGRRankingModel, MetaGRRankingModel)):
            raise TypeError(f"CachedScorer serves DFGR and MetaGR models, got {type(model).__name__}")
        self.model = model.eval()
        self.dual_flow = isinstance(model, DFGRRankingModel)

    @property
    def stack(self):
        return self.model.interaction

    def _history_tokens(self, batch: SequenceBatch, with_context: bool):
        """The history's unencoded tokens, offsets and times; with ``with_context`` and a model
        that reads the user through a context token, that token in front of each user's."""
        emb = self.model.embedding(batch.features)
        items, actions = emb.items.values(), emb.actions.values()
        tokens = self.model.embedding.merge(items, actions) if self.dual_flow else torch.stack([items, actions], dim=1)
        offsets, times = emb.items.offsets(), batch.timestamps
        context = self.model.context_token(emb.users) if with_context else None
        if context is not None:
            if not self.dual_flow:  # MetaGR: the context as the item token, a zero action token
                context = torch.stack([context, torch.zeros_like(context)], dim=1)
            lengths = emb.items.lengths()
            context_times = context_ops.context_timestamps(batch.history_timestamps())
            tokens, new_lengths, _ = context_ops.prepend_per_user(tokens, lengths, context)
            times = context_ops.prepend_per_user(times, lengths, context_times)[0]
            offsets = lengths_to_offsets(new_lengths)
        return tokens, offsets, times, context is not None

    @torch.no_grad()
    def encode(self, batch: SequenceBatch) -> List[HistoryState]:
        """One :class:`HistoryState` per user of ``batch`` (its candidates are ignored)."""
        tokens, offsets, times, context = self._history_tokens(batch, with_context=True)
        states = encode_histories(self.stack, tokens, offsets, times)
        return [dataclasses.replace(s, context=True) for s in states] if context else states

    @torch.no_grad()
    def score(self, states: List[HistoryState], batch: SequenceBatch) -> JaggedTensor:
        """Logits ``[M, num_tasks]`` of ``batch``'s candidates, user ``b`` scored against ``states[b]``.

        ``batch``'s history part is not read by the model (give it empty to skip its lookups);
        its user features are (a user embedding is part of every candidate token, unless the
        model reads it through the context token cached in the states).
        """
        emb = self.model.embedding(batch.features)
        candidates = emb.candidates.values()
        if self.dual_flow:
            candidates = self.model.embedding.merge_placeholder(candidates)
        times = batch.candidate_timestamps if states and states[0].timestamps is not None else None
        states_out = score_cached(self.stack, states, candidates, emb.candidates.offsets(), times)
        return JaggedTensor(
            values=self.model.logits(states_out, batch.features, candidates=True), lengths=emb.candidates.lengths()
        )

    @torch.no_grad()
    def append(self, state: HistoryState, batch: SequenceBatch) -> HistoryState:
        """``state`` extended by the history of ``batch``'s single user (only new tokens computed)."""
        tokens, offsets, times, _ = self._history_tokens(batch, with_context=False)
        if offsets.shape[0] != 2:
            raise ValueError(f"append takes a batch of one user, got {offsets.shape[0] - 1}")
        return append_history(self.stack, state, tokens, times)
