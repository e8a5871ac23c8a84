"""The history cache at the level of a ranking model: batches of ids in, logits out."""

from __future__ import annotations

import dataclasses
from typing import List, Optional

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec.batch import SequenceBatch
from dfgr_torchrec.features import ITEM_FEATURE, candidate_feature
from dfgr_torchrec.modules import context_token as context_ops
from dfgr_torchrec.modules.stack import TokenStack
from dfgr_torchrec.ops.jagged import lengths_to_offsets
from dfgr_torchrec.serving.history import HistoryState, append_history, encode_histories, score_cached


class CachedScorer:
    """Scores a generative model's candidates against cached histories, exactly as ``score_candidates``.

    Serves any model that implements the serving protocol (``history_tokens``,
    ``context_history_token``, ``candidate_token_module``, ``logits``, ``embedding``,
    ``interaction`` a :class:`~dfgr_torchrec.modules.stack.TokenStack`): DFGR, MetaGR, HSTU.

    Args:
        model: an unsharded generative ranking model (put in eval mode).

    Example::

        scorer = CachedScorer(model)
        states = scorer.encode(batch)               # the batch's histories, one state per user
        logits = scorer.score(states, batch)        # == model.score_candidates(batch), no history recompute
        states[0] = scorer.append(states[0], more)  # ``more``: one user whose history holds the new interactions
    """

    def __init__(self, model: nn.Module) -> None:
        check_cacheable(model)
        self.model = model.eval()
        self.candidate_tokens = model.candidate_token_module()

    @property
    def stack(self) -> TokenStack:
        return self.model.interaction

    def _history_tokens(self, batch: SequenceBatch, with_context: bool):
        """The history's unencoded tokens, offsets and times; with ``with_context`` and a model
        that reads the user through a context token, that token in front of each user's."""
        emb = self.model.embedding(batch.features)
        tokens = self.model.history_tokens(emb.items.values(), emb.actions.values())
        offsets, times = emb.items.offsets(), batch.timestamps
        context = self.model.context_history_token(emb.users) if with_context else None
        if context is not None:
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
        if self.model.repeat is not None:
            bounds = batch.features[ITEM_FEATURE].offsets().tolist()
            ids = self._repeat_ids(batch)
            front = ids.new_tensor([[-1, 0]]) if context else ids[:0]  # the context token matches nothing
            states = [
                dataclasses.replace(s, repeat_ids=torch.cat([front, ids[bounds[b] : bounds[b + 1]]]))
                for b, s in enumerate(states)
            ]
        return [dataclasses.replace(s, context=True) for s in states] if context else states

    def _repeat_ids(self, batch: SequenceBatch) -> torch.Tensor:
        """``[N, 2]`` (item row, action id) of ``batch``'s history interactions."""
        features = batch.features
        return torch.stack(
            [features[ITEM_FEATURE].values(), features[self.model.repeat.action_feature].values()], dim=1
        )

    def candidate_repeat(self, states: List[HistoryState], batch: SequenceBatch) -> Optional[torch.Tensor]:
        """``[M, e]`` the repeat embedding of ``batch``'s candidates against the cached histories, to add
        to their looked-up embeddings (None for a model without ``embeddings.repeat_feature``)."""
        if self.model.repeat is None:
            return None
        if any(s.repeat_ids is None for s in states):
            raise ValueError("embeddings.repeat_feature: a history state lacks repeat_ids; encode it again")
        ids = torch.cat([s.repeat_ids for s in states])
        lengths = torch.tensor([s.num_interactions for s in states], dtype=torch.int64)
        times = None if any(s.timestamps is None for s in states) else torch.cat([s.timestamps for s in states])
        candidates = batch.features[candidate_feature(ITEM_FEATURE)]
        return self.model.repeat.against(
            ids[:, 0], ids[:, 1], lengths, times, candidates.values(), candidates.lengths(), batch.candidate_timestamps
        )

    @torch.no_grad()
    def score(self, states: List[HistoryState], batch: SequenceBatch) -> JaggedTensor:
        """Logits ``[M, num_tasks]`` of ``batch``'s candidates, user ``b`` scored against ``states[b]``.

        ``batch``'s history part is not read by the model (give it empty to skip its lookups);
        its user features are (a user embedding is part of every candidate token, unless the
        model reads it through the context token cached in the states).
        """
        emb = self.model.embedding(batch.features)
        candidates = emb.candidates.values()
        repeat = self.candidate_repeat(states, batch)
        if repeat is not None:
            candidates = candidates + repeat
        candidates = self.candidate_tokens(candidates)
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
        ids = self._repeat_ids(batch) if self.model.repeat is not None else None
        return append_history(self.stack, state, tokens, times, ids)


def check_cacheable(model: nn.Module) -> None:
    """Raises a one-line error naming why ``model``'s histories cannot be cached, if they cannot."""
    stack = getattr(model, "interaction", None)
    if not isinstance(stack, TokenStack) or not hasattr(model, "history_tokens"):
        raise TypeError(f"the history cache serves generative models (dfgr, metagr, hstu), got {type(model).__name__}")
    if stack.cache_blocker is not None:
        raise ValueError(stack.cache_blocker)
    if getattr(model, "repeat", None) is not None and not model.cached_repeat:
        raise ValueError("embeddings.repeat_feature: the history cache and export serve it for dfgr only")
