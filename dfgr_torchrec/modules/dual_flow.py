"""The DFGR interaction module: a real and a fake flow through shared blocks."""

from __future__ import annotations

from typing import Optional

import torch
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec.config import InteractionConfig
from dfgr_torchrec.modules.stack import GenerativeStack, dual_flow_states


def _values_or_none(jt: Optional[JaggedTensor]) -> Optional[torch.Tensor]:
    return None if jt is None else jt.values()


class DualFlowInteraction(GenerativeStack):
    """Dual-flow generative ranking over jagged behaviour sequences (one token per interaction).

    Training (:meth:`forward`): the real flow runs causal self-attention over the true
    (item + action) tokens; the fake flow carries the same items with a placeholder action,
    and its token ``i`` attends to the real flow's keys/values at earlier interactions only
    (``j < i`` by position, or ``t_j < t_i`` in session mode) plus to itself. Each layer costs
    two ``N x N`` attentions instead of MetaGR's one ``2N x 2N``.

    Inference (:meth:`score`): the history runs as the real flow and the candidates as the fake
    flow, each candidate seeing the whole history (per the mask mode) and itself, never
    another candidate: one pass over ``N + M`` tokens.

    Args:
        config: interaction hyper-parameters.
        device: where to allocate (``"meta"`` for DistributedModelParallel).

    Example::

        interaction = DualFlowInteraction(InteractionConfig(d_model=64))
        real = JaggedTensor(values=torch.randn(5, 64), lengths=torch.tensor([2, 3]))
        fake = JaggedTensor(values=torch.randn(5, 64), lengths=torch.tensor([2, 3]))
        out = interaction(real, fake)  # JaggedTensor, values [5, 64]: one state per interaction
    """

    def __init__(self, config: InteractionConfig, device: Optional[torch.device] = None) -> None:
        super().__init__(config, device=device)

    def forward(
        self,
        real: JaggedTensor,
        fake: JaggedTensor,
        timestamps: Optional[JaggedTensor] = None,
    ) -> JaggedTensor:
        """Training pass.

        Args:
            real: ``[T, d_model]`` tokens merged from items and their true actions.
            fake: ``[T, d_model]`` tokens of the same items with the placeholder action.
            timestamps: ``[T]`` int64 times, needed in session mode and for time encodings.

        Returns:
            The fake flow's final states, jagged like ``real``: state ``i`` has seen no action
            of interaction ``i`` (nor of its session, in session mode).
        """
        offsets, lengths = real.offsets(), real.lengths()
        if not torch.equal(lengths, fake.lengths()):
            raise ValueError("real and fake must have the same lengths (one fake token per real interaction)")
        out = dual_flow_states(self, real.values(), fake.values(), offsets, _values_or_none(timestamps))
        return JaggedTensor(values=out, lengths=lengths, offsets=offsets)

    def score(
        self,
        history: JaggedTensor,
        candidates: JaggedTensor,
        history_timestamps: Optional[JaggedTensor] = None,
        candidate_timestamps: Optional[JaggedTensor] = None,
    ) -> JaggedTensor:
        """Inference pass: one state per candidate, jagged per user.

        Args:
            history: ``[N_total, d_model]`` real tokens (item + true action).
            candidates: ``[M_total, d_model]`` fake tokens (item + placeholder action).
            history_timestamps: int64 times of the history, given with ``candidate_timestamps`` or
                not at all; required in session mode, where a candidate sees only history with
                ``t_j < t_candidate``.
            candidate_timestamps: int64 times of the candidates (with ``history_timestamps``).
        """
        out = self.score_pass(
            history.values(),
            history.offsets(),
            _values_or_none(history_timestamps),
            candidates.values(),
            candidates.offsets(),
            _values_or_none(candidate_timestamps),
        )
        return JaggedTensor(values=out, lengths=candidates.lengths(), offsets=candidates.offsets())
