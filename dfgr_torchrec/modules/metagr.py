"""The MetaGR (HSTU ranking) baseline: item and action tokens interleaved, 2N tokens."""

from __future__ import annotations

from typing import Optional

import torch
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec.modules.dual_flow import _values_or_none
from dfgr_torchrec.modules.stack import GenerativeStack
from dfgr_torchrec.ops.attention import AttentionSpec
from dfgr_torchrec.ops.jagged import interleave


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

    def _interleaved_keys(self, keys: torch.Tensor) -> torch.Tensor:
        return interleave(2 * keys, 2 * keys + 1)

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
        total = items.values().shape[0]
        positions, gaps, keys = self.history_layout(offsets, total, _values_or_none(timestamps), "history")
        tokens = interleave(
            self.encode(items.values(), positions, gaps), self.encode(actions.values(), positions, gaps)
        )
        token_offsets = 2 * offsets
        token_keys = self._interleaved_keys(keys)
        item_keys = token_keys[0::2]
        all_spec = AttentionSpec(token_offsets, token_offsets, token_keys, token_keys, strict=True)
        item_spec = AttentionSpec(offsets, token_offsets, item_keys, token_keys, strict=True)
        for index, block in enumerate(self.blocks):
            u, q, k, v = block.project(tokens)
            if index == len(self.blocks) - 1:
                # Only item tokens are read after the last block: query with those alone.
                attention = block.attend(q[0::2], k, v, item_spec, self_k=k[0::2], self_v=v[0::2])
                out = block.finish(tokens[0::2], attention, u[0::2])
            else:
                tokens = block.finish(tokens, block.attend(q, k, v, all_spec, self_k=k, self_v=v), u)
        return JaggedTensor(values=self.output_norm(out), lengths=lengths, offsets=offsets)

    def score(
        self,
        history_items: JaggedTensor,
        history_actions: JaggedTensor,
        candidates: JaggedTensor,
        history_timestamps: Optional[JaggedTensor] = None,
        candidate_timestamps: Optional[JaggedTensor] = None,
    ) -> JaggedTensor:
        """Inference pass over ``2N + M`` tokens; one state per candidate, jagged per user."""
        h_offsets, c_offsets = history_items.offsets(), candidates.offsets()
        if h_offsets.shape != c_offsets.shape:
            raise ValueError(f"history has {h_offsets.numel() - 1} users but candidates have {c_offsets.numel() - 1}")
        h_times, c_times = _values_or_none(history_timestamps), _values_or_none(candidate_timestamps)
        total = history_items.values().shape[0]
        h_positions, h_gaps, h_keys = self.history_layout(h_offsets, total, h_times, "history")
        c_positions, c_gaps, _, _ = self.candidate_layout(h_offsets, h_times, c_offsets, c_times)
        history = interleave(
            self.encode(history_items.values(), h_positions, h_gaps),
            self.encode(history_actions.values(), h_positions, h_gaps),
        )
        token_offsets = 2 * h_offsets
        token_keys = self._interleaved_keys(h_keys)
        # A candidate is an item token placed after the history: key 2n by position, 2t by time.
        c_keys = 2 * (c_times if self.session_mode else c_positions)
        out = self.run_two_flows(
            history,
            self.encode(candidates.values(), c_positions, c_gaps),
            AttentionSpec(token_offsets, token_offsets, token_keys, token_keys, strict=True),
            AttentionSpec(c_offsets, token_offsets, c_keys, token_keys, strict=True),
            real_self_term=True,
        )
        return JaggedTensor(values=out, lengths=candidates.lengths(), offsets=c_offsets)
