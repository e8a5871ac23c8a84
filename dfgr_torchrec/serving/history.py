"""Exact history caches for every generative stack: encode a history once, then score candidates against it.

DFGR's real flow is causal, so the keys and values a history token produces at every layer
depend only on the interactions up to it; a candidate (a fake-flow token) reads those keys and
values plus its own. A :class:`HistoryState` holds them per layer, so scoring ``M`` candidates
costs ``O(M N)`` attention per layer instead of ``O((N + M)^2)`` (DFGR) or ``O((2N + M)^2)``
(MetaGR). MetaGR's state caches its ``2N`` interleaved item and action tokens the same way, so
the two models compare fairly; HSTU's (one token per interaction, the targets seeing the history
and themselves) is DFGR's layout.

Everything reads the stack's :class:`~dfgr_torchrec.modules.layout.TokenLayout` and runs through
the one layer loop (:func:`~dfgr_torchrec.modules.layer_loop.run_layers`, any backend, both
attention forms, both mask modes) with the stack's own blocks, so a cached score is the full
recompute's score up to float rounding.

Example::

    states = encode_histories(stack, tokens, offsets, timestamps)       # one per user
    out = score_cached(stack, states, candidate_tokens, candidate_offsets, candidate_times)
    state = append_history(stack, states[0], new_tokens, new_times)      # only new tokens computed
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from dfgr_torchrec.modules.layer_loop import run_layers
from dfgr_torchrec.modules.stack import TokenStack
from dfgr_torchrec.ops.attention import AttentionSpec
from dfgr_torchrec.ops.jagged import lengths_to_offsets


@dataclass(eq=False)
class HistoryState:
    """One user's cached history.

    Attributes:
        tokens: the unencoded inputs, kept to extend or rebuild the state: ``[N, d]`` merged
            (item + action) tokens for DFGR, ``[N, 2, d]`` (item, action) for MetaGR and hstu.
        timestamps: ``[N]`` int64 times, or None for a model that uses none.
        order_keys: ``[N * t]`` the attention order key of every cached token (``t`` tokens per
            interaction: 1 for DFGR, 2 for MetaGR).
        keys, values: ``[L, N * t, H, d_qk]`` and ``[L, N * t, H, d_v]``: the real flow's keys and
            values at each layer's input.
        context: whether the first cached token is the user's context token
            (``embeddings.user_context: token``), one unit of time before the first interaction.
        repeat_ids: ``[N, 2]`` int64 (item row, action id) of every cached interaction (the context
            token: ``(-1, 0)``), what a model with ``embeddings.repeat_feature`` matches candidates
            against; None for a model without it.
    """

    tokens: torch.Tensor
    timestamps: Optional[torch.Tensor]
    order_keys: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    context: bool = False
    repeat_ids: Optional[torch.Tensor] = None

    @property
    def num_interactions(self) -> int:
        return self.tokens.shape[0]

    @property
    def nbytes(self) -> int:
        tensors = [self.tokens, self.order_keys, self.keys, self.values]
        tensors += [t for t in (self.timestamps, self.repeat_ids) if t is not None]
        return sum(t.numel() * t.element_size() for t in tensors)

    def truncated(self, count: int) -> "HistoryState":
        """The state of the first ``count`` interactions (a prefix of a causal cache is exact)."""
        per = self.order_keys.shape[0] // max(self.num_interactions, 1)
        rows = count * per
        return HistoryState(
            tokens=self.tokens[:count],
            timestamps=None if self.timestamps is None else self.timestamps[:count],
            order_keys=self.order_keys[:rows],
            keys=self.keys[:, :rows],
            values=self.values[:, :rows],
            context=self.context,
            repeat_ids=None if self.repeat_ids is None else self.repeat_ids[:count],
        )


def encode_histories(
    stack: TokenStack, tokens: torch.Tensor, offsets: torch.Tensor, timestamps: Optional[torch.Tensor]
) -> List[HistoryState]:
    """Runs each user's real flow once and returns one :class:`HistoryState` per user.

    Args:
        stack: a generative stack (:class:`~dfgr_torchrec.modules.stack.TokenStack`: DFGR, MetaGR,
            HSTU), in eval mode.
        tokens: ``[N_total, d]`` (one token per interaction) or ``[N_total, 2, d]`` (interleaved,
            MetaGR) unencoded history tokens.
        offsets: ``[B + 1]`` per-user offsets into ``tokens``.
        timestamps: ``[N_total]`` int64, or None when the model uses no times.
    """
    layout = stack.layout
    positions, gaps, keys = stack.history_layout(offsets, tokens.shape[0], timestamps, "history")
    order_keys = layout.token_keys(keys)
    token_offsets = offsets * layout.tokens_per_interaction
    spec = AttentionSpec(token_offsets, token_offsets, order_keys, order_keys, strict=layout.strict)
    layer_keys, layer_values = _real_flow(stack, stack.encode_history(tokens, positions, gaps), spec)
    own = (lambda t: t.clone()) if offsets.shape[0] > 2 else (lambda t: t)  # noqa: E731  a state never pins the batch
    states = []
    bounds, token_bounds = offsets.tolist(), token_offsets.tolist()
    for b in range(len(bounds) - 1):
        (s, e), (ts, te) = (bounds[b], bounds[b + 1]), (token_bounds[b], token_bounds[b + 1])
        states.append(
            HistoryState(
                tokens=own(tokens[s:e]),
                timestamps=None if timestamps is None else own(timestamps[s:e]),
                order_keys=own(order_keys[ts:te]),
                keys=own(layer_keys[:, ts:te]),
                values=own(layer_values[:, ts:te]),
            )
        )
    return states


def _real_flow(
    stack: TokenStack,
    x: torch.Tensor,
    spec: AttentionSpec,
    cached: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The real flow of new tokens ``x`` (queries of ``spec``) over ``cached`` ``[L, ...]`` keys/values
    plus their own; returns every layer's keys and values of ``x`` alone, stacked ``[L, ...]``."""
    out = run_layers(
        stack.blocks, x, real_spec=spec, real_self_term=stack.layout.self_term, cached=cached, keep_kv=True
    )
    return out.keys, out.values


def score_cached(
    stack: TokenStack,
    states: Sequence[HistoryState],
    candidates: torch.Tensor,
    candidate_offsets: torch.Tensor,
    candidate_timestamps: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The final state of every candidate (``[M_total, d]``, before the head), from cached histories.

    Candidate ``c`` of user ``b`` sees ``states[b]``'s tokens (all of them by position; those with
    ``t_j < t_c`` in session mode) and itself, never another candidate: the fake flow of
    :meth:`DualFlowInteraction.score`, without recomputing the history.

    Args:
        candidates: ``[M_total, d]`` unencoded candidate tokens (the model's ``candidate_token_module``
            output: item + placeholder action for DFGR, the item token for MetaGR and HSTU).
        candidate_offsets: ``[len(states) + 1]``.
        candidate_timestamps: ``[M_total]`` int64; required when the states carry timestamps
            and the model uses times.
    """
    layout = candidate_layout(stack, states, candidate_offsets, candidate_timestamps)
    spec = AttentionSpec(candidate_offsets, layout.kv_offsets, layout.keys, layout.kv_keys, strict=True)
    x = stack.encode_candidates(candidates, layout.positions, layout.gaps)
    cached = (_cat([s.keys for s in states], dim=1), _cat([s.values for s in states], dim=1))
    out = run_layers(stack.blocks, x.new_zeros((0, x.shape[1])), x, fake_spec=spec, cached=cached)
    return stack.output_norm(out.fake)


@dataclass
class CandidateLayout:
    """Where candidates sit after cached histories: their encodings' positions and time gaps, and
    the order keys that decide what they see (candidate ``c`` sees cached token ``j`` of its user
    iff ``kv_keys[j] < keys[c]``)."""

    positions: torch.Tensor  # [M]
    gaps: Optional[torch.Tensor]  # [M], None without timestamps
    keys: torch.Tensor  # [M]
    kv_keys: torch.Tensor  # [sum of cached tokens]
    kv_offsets: torch.Tensor  # [B + 1] offsets of the cached tokens


def candidate_layout(
    stack: TokenStack,
    states: Sequence[HistoryState],
    candidate_offsets: torch.Tensor,
    candidate_timestamps: Optional[torch.Tensor],
) -> CandidateLayout:
    """The :class:`CandidateLayout` of candidates (``candidate_offsets``, one user per state)."""
    if candidate_offsets.shape[0] != len(states) + 1:
        raise ValueError(f"candidate_offsets describe {candidate_offsets.shape[0] - 1} users, states {len(states)}")
    if candidate_timestamps is not None:
        bounds = candidate_offsets.tolist()
        states = [
            _context_timed(stack, s, candidate_timestamps[bounds[b] : bounds[b + 1]]) for b, s in enumerate(states)
        ]
    h_offsets = lengths_to_offsets(torch.tensor([s.num_interactions for s in states], dtype=torch.int64))
    h_times = _cat_times(states, candidate_timestamps)
    positions, gaps, keys, _ = stack.candidate_layout(h_offsets, h_times, candidate_offsets, candidate_timestamps)
    return CandidateLayout(
        positions=positions,
        gaps=gaps,
        keys=stack.layout.candidate_keys(keys),
        kv_keys=_cat([s.order_keys for s in states]),
        kv_offsets=h_offsets * stack.layout.tokens_per_interaction,
    )


def _context_timed(stack: TokenStack, state: HistoryState, candidate_timestamps: torch.Tensor) -> HistoryState:
    """A state holding only the context token takes its time from the candidates (one unit before
    the earliest), as the model does for a user without history; its keys and values do not
    depend on it (the first token has position 0 and no gap), only its order key does."""
    if (
        not state.context
        or state.num_interactions != 1
        or state.timestamps is None
        or candidate_timestamps.numel() == 0
    ):
        return state
    times = candidate_timestamps.min().reshape(1) - 1
    keys = stack.history_layout(torch.tensor([0, 1]), 1, times, "history")[2]
    return dataclasses.replace(state, timestamps=times, order_keys=stack.layout.token_keys(keys))


def append_history(
    stack: TokenStack,
    state: HistoryState,
    tokens: torch.Tensor,
    timestamps: Optional[torch.Tensor] = None,
    repeat_ids: Optional[torch.Tensor] = None,
) -> HistoryState:
    """``state`` extended by new interactions, computing only the new tokens.

    ``repeat_ids`` (``[n, 2]``, the new interactions' item rows and action ids) extend the
    state's own when it keeps them (``embeddings.repeat_feature``), window and all.

    The new tokens attend to the cache and, causally, to each other, so the result equals
    :func:`encode_histories` of the longer history. Exact while the history fits
    ``max_seq_len``: past it the window slides (positions restart at the window's first
    interaction, as the data set truncates histories), so the state is rebuilt from the last
    ``max_seq_len`` interactions at full cost. In session mode an interaction in the cached
    history's last session (same timestamp) changes what that session's tokens see, so that
    session is recomputed with the new interactions.
    """
    if (state.repeat_ids is None) != (repeat_ids is None):
        raise ValueError("give repeat_ids for the new interactions exactly when the state has them")
    out = _append(stack, state, tokens, timestamps)
    if repeat_ids is None or out is state:
        return out
    ids = torch.cat([state.repeat_ids, repeat_ids])
    kept = ids[ids.shape[0] - (out.num_interactions - int(out.context)) :]  # the window's interactions
    return dataclasses.replace(out, repeat_ids=torch.cat([ids[:1], kept]) if out.context else kept)


def _append(
    stack: TokenStack, state: HistoryState, tokens: torch.Tensor, timestamps: Optional[torch.Tensor]
) -> HistoryState:
    if (state.timestamps is None) != (timestamps is None):
        raise ValueError("give timestamps for the new interactions exactly when the state has them")
    if tokens.shape[0] == 0:
        return state
    all_tokens = torch.cat([state.tokens, tokens])
    all_times = None if timestamps is None else torch.cat([state.timestamps, timestamps])
    window = stack.config.max_seq_len
    if state.context and (all_tokens.shape[0] - 1 > window or state.num_interactions == 1):
        # the window slides (or the first interactions arrive): the context token moves to one
        # unit before the new first interaction, so the whole state is encoded again
        start = max(all_tokens.shape[0] - window, 1)
        tokens = torch.cat([all_tokens[:1], all_tokens[start:]])
        times = None if all_times is None else torch.cat([all_times[start : start + 1] - 1, all_times[start:]])
        return dataclasses.replace(_encode_one(stack, tokens, times), context=True)
    if not state.context and all_tokens.shape[0] > window:
        start = all_tokens.shape[0] - window
        return _encode_one(stack, all_tokens[start:], None if all_times is None else all_times[start:])
    keep = _reusable_prefix(stack, state, timestamps)
    layout = stack.layout
    offsets = torch.tensor([0, all_tokens.shape[0]], dtype=torch.int64)
    positions, gaps, keys = stack.history_layout(offsets, all_tokens.shape[0], all_times, "history")
    order_keys = layout.token_keys(keys)
    tail = slice(keep, None)
    new_x = stack.encode_history(all_tokens[tail], positions[tail], None if gaps is None else gaps[tail])
    per = layout.tokens_per_interaction
    prefix = state.truncated(keep)
    spec = AttentionSpec(
        torch.tensor([0, new_x.shape[0]]),
        torch.tensor([0, order_keys.shape[0]]),
        order_keys[keep * per :],
        order_keys,
        strict=layout.strict,
    )
    new_keys, new_values = _real_flow(stack, new_x, spec, (prefix.keys, prefix.values))
    return HistoryState(
        tokens=all_tokens,
        timestamps=all_times,
        order_keys=order_keys,
        keys=torch.cat([prefix.keys, new_keys], dim=1),
        values=torch.cat([prefix.values, new_values], dim=1),
        context=state.context,
    )


def _reusable_prefix(stack: TokenStack, state: HistoryState, timestamps: Optional[torch.Tensor]) -> int:
    """How many cached interactions stay valid: all, except the last session when it continues."""
    n = state.num_interactions
    if not stack.session_mode or n == 0 or timestamps is None or timestamps.numel() == 0:
        return n
    last = state.timestamps[-1]
    if bool(timestamps[0] < last):
        raise ValueError(
            f"new interactions must not be older than the history's last ({int(last)}), got {int(timestamps[0])}"
        )
    if bool(timestamps[0] > last):
        return n
    return int((state.timestamps < last).sum())  # the last session starts after every earlier time


def _encode_one(stack: TokenStack, tokens: torch.Tensor, timestamps: Optional[torch.Tensor]) -> HistoryState:
    return encode_histories(stack, tokens, torch.tensor([0, tokens.shape[0]], dtype=torch.int64), timestamps)[0]


def _cat(tensors: List[torch.Tensor], dim: int = 0) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=dim)


def _cat_times(states: Sequence[HistoryState], candidate_timestamps: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    if candidate_timestamps is None:
        return None
    if any(s.timestamps is None for s in states):
        raise ValueError("candidate timestamps were given but a history state has none")
    return _cat([s.timestamps for s in states])
