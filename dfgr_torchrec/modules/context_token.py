"""The user's context token: one token placed before each user's history.

With ``embeddings.user_context: token`` the generative models do not add the user embedding to
every token; they put it in a token of its own at position 0, which every history token and
candidate can attend to (generative-recommenders prepends its contextual features the same
way). Its time is one unit before the user's first interaction (first candidate, without
history), so in session mode (strictly earlier timestamps only) it is visible to all of them.

Callers use these through the module (``context_ops.with_context_token(...)``): the tensor
helpers are ``torch.fx.wrap``-ed, which TorchRec's pipeline tracer honours only for look-ups in
this module's namespace.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.fx
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec.config import SequenceEmbeddingConfig, UserContext
from dfgr_torchrec.ops.jagged import lengths_to_offsets


def uses_context_token(embeddings: SequenceEmbeddingConfig) -> bool:
    """Whether a generative model reads its user features through a context token (decided by the
    config alone: TorchRec's pipelines trace the forwards that ask)."""
    return embeddings.user_context == UserContext.TOKEN and bool(embeddings.user_vocab_sizes)


@torch.fx.wrap  # leaves for TorchRec's pipeline tracer: they build tensors by item assignment
def prepend_per_user(
    values: torch.Tensor, lengths: torch.Tensor, first: Optional[torch.Tensor]
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``first[b]`` (zeros when ``first`` is None) placed before sequence ``b`` of the jagged ``values``.

    Returns ``(values [T + B, ...], lengths + 1, kept [T + B] bool)``, where ``kept`` marks the
    original rows, so ``out[kept]`` gives ``values`` back.
    """
    new_lengths = lengths + 1
    starts = lengths_to_offsets(new_lengths)[:-1]
    kept = torch.ones(values.shape[0] + lengths.numel(), dtype=torch.bool, device=values.device)
    kept[starts] = False
    out = values.new_empty((kept.numel(), *values.shape[1:]))
    out[starts] = 0 if first is None else first.to(values.dtype)
    out[kept] = values
    return out, new_lengths, kept


@torch.fx.wrap
def context_timestamps(history: JaggedTensor, candidates: Optional[JaggedTensor] = None) -> torch.Tensor:
    """``[B]``: one unit before each user's first history interaction; for a user without history,
    before their earliest candidate (0 for a user with neither). It depends on the history alone
    whenever there is one, so a cached history stays valid for any later candidates."""
    lengths, times = history.lengths(), history.values()
    starts = lengths_to_offsets(lengths)[:-1]
    first = times.new_zeros(lengths.numel())
    has_history = lengths > 0
    first[has_history] = times[starts[has_history]]
    if candidates is not None:
        values = candidates.values()
        owner = torch.repeat_interleave(torch.arange(lengths.numel(), device=values.device), candidates.lengths())
        never = torch.full_like(first, torch.iinfo(torch.int64).max)
        earliest = never.scatter_reduce(0, owner, values.to(first.dtype), reduce="amin", include_self=True)
        first = torch.where(has_history | (earliest == never), first, earliest)
    return first - 1


@torch.fx.wrap
def with_context_token(
    tokens: JaggedTensor,
    context: Optional[torch.Tensor],
    timestamps: Optional[JaggedTensor],
    context_times: torch.Tensor,
) -> Tuple[JaggedTensor, Optional[JaggedTensor], torch.Tensor]:
    """``tokens`` (and their timestamps) with the context token (zeros when None) in front of each user's sequence;
    also returns the ``kept`` mask of the original rows."""
    values, lengths, kept = prepend_per_user(tokens.values(), tokens.lengths(), context)
    times = None
    if timestamps is not None:
        times = JaggedTensor(
            values=prepend_per_user(timestamps.values(), tokens.lengths(), context_times)[0], lengths=lengths
        )
    return JaggedTensor(values=values, lengths=lengths), times, kept


def with_context_interaction(
    items: JaggedTensor,
    actions: JaggedTensor,
    context: torch.Tensor,
    times: JaggedTensor,
    candidate_times: Optional[JaggedTensor],
) -> Tuple[JaggedTensor, JaggedTensor, JaggedTensor, torch.Tensor]:
    """For models that keep item and action apart (MetaGR, hstu): the context as one more
    interaction in front of each history, the user as its item and a zero action. Returns
    ``(items, actions, times, kept)``."""
    context_times = context_timestamps(times, candidate_times)
    items, times, kept = with_context_token(items, context, times, context_times)
    actions = with_context_token(actions, None, None, context_times)[0]
    return items, actions, times, kept


def with_user_context(
    embeddings: SequenceEmbeddingConfig, looked_up, times: JaggedTensor, candidate_times: Optional[JaggedTensor]
) -> Tuple[JaggedTensor, JaggedTensor, JaggedTensor, Optional[torch.Tensor]]:
    """A separate-token model's (MetaGR's, hstu's) items, actions and times from ``looked_up``
    (:class:`~dfgr_torchrec.modules.embeddings.SequenceEmbeddings`), with the user's context
    interaction in front of each history when ``embeddings.user_context`` is ``"token"``, and the
    mask of the original rows (None without one: the inputs unchanged)."""
    if not uses_context_token(embeddings):
        return looked_up.items, looked_up.actions, times, None
    return with_context_interaction(looked_up.items, looked_up.actions, looked_up.users, times, candidate_times)
