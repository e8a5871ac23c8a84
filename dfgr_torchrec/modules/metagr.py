"""The MetaGR (HSTU ranking) baseline: item and action tokens interleaved, 2N tokens."""

from __future__ import annotations

from typing import Optional

import torch
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec.modules.dual_flow import _values_or_none
from dfgr_torchrec.modules.layout import INTERLEAVED
from dfgr_torchrec.modules.stack import GenerativeStack, interleaved_states


class MetaGRInteraction(GenerativeStack):
    """HSTU ranking as in Meta's generative recommenders, built from the same blocks as DFGR.

    The sequence ``item_1, action_1, ..., item_N, action_N`` (2N tokens) runs causal
    self-attention; the output at ``item_i`` (which has seen ``action_1..action_{i-1}`` but
    not ``action_i``) predicts ``action_i``. Every token sees the tokens with a strictly
    smaller order key plus itself; the key of ``item_i`` is ``2 k_i`` and of ``action_i``
    ``2 k_i + 1``, with ``k`` the position, or the timestamp in session mode (so an item sees
    nothing of its own session but itself, as a DFGR fake token). At inference, candidate item
    tokens are appended, each seeing the whole history (per the mask mode) and itself.

    Example::

        metagr = MetaGRInteraction(InteractionConfig(d_model=64))
        items = JaggedTensor(values=torch.randn(5, 64), lengths=torch.tensor([2, 3]))
        actions = JaggedTensor(values=torch.randn(5, 64), lengths=torch.tensor([2, 3]))
        out = metagr(items, actions)  # values [5, 64]: the state at each item token
    """

    layout = INTERLEAVED

    def forward(
        self,
        items: JaggedTensor,
        actions: JaggedTensor,
        timestamps: Optional[JaggedTensor] = None,
    ) -> JaggedTensor:
        """Training pass; returns the final state at every item token, jagged like ``items``."""
        offsets, lengths = items.offsets(), items.lengths()
        if not torch.equal(lengths, actions.lengths()):
            raise ValueError("items and actions must have the same lengths (one action per item)")
        out = interleaved_states(self, items.values(), actions.values(), offsets, _values_or_none(timestamps))
        return JaggedTensor(values=out, lengths=lengths, offsets=offsets)

    def score(
        self,
        history_items: JaggedTensor,
        history_actions: JaggedTensor,
        candidates: JaggedTensor,
        history_timestamps: Optional[JaggedTensor] = None,
        candidate_timestamps: Optional[JaggedTensor] = None,
    ) -> JaggedTensor:
        """Inference pass over ``2N + M`` tokens; one state per candidate, jagged per user."""
        out = self.score_pass(
            torch.stack([history_items.values(), history_actions.values()], dim=1),
            history_items.offsets(),
            _values_or_none(history_timestamps),
            candidates.values(),
            candidates.offsets(),
            _values_or_none(candidate_timestamps),
        )
        return JaggedTensor(values=out, lengths=candidates.lengths(), offsets=candidates.offsets())
