"""One user's candidates against a cached history as one dense graph: what ``dfgr export`` exports.

The graph holds the interaction blocks (run by the one layer loop, attention as dense matmuls over
a :class:`~dfgr_torchrec.ops.attention.DenseSpec`), the encodings, the final norm and the head; it takes the
candidates' looked-up embeddings and the cached keys/values, so the tables stay outside (plain or
int8 rows) and the graph has no jagged op and no data-dependent shape: ``torch.export`` traces it
with ``M`` (candidates) and ``K`` (cached tokens) as dynamic dimensions.

Example::

    graph = CandidateGraph(model)
    inputs = graph_inputs(model.interaction, state, candidate_embeddings, candidate_timestamps)
    logits = graph(*inputs)   # [M, num_tasks], equal to CachedScorer.score for this user
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from dfgr_torchrec.modules.layer_loop import run_layers
from dfgr_torchrec.modules.stack import TokenStack
from dfgr_torchrec.ops.attention import DenseSpec
from dfgr_torchrec.serving.history import HistoryState, candidate_layout
from dfgr_torchrec.serving.scorer import check_cacheable


class CandidateGraph(nn.Module):
    """Scores one user's ``M`` candidates against ``K`` cached history tokens.

    Args:
        model: a generative ranking model the history cache serves (weights shared, not copied).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        check_cacheable(model)
        self.stack: TokenStack = model.interaction
        self.head = model.head
        self.candidate_tokens = model.candidate_token_module()

    def forward(
        self,
        candidates: torch.Tensor,
        positions: torch.Tensor,
        gaps: torch.Tensor,
        candidate_keys: torch.Tensor,
        history_keys: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
    ) -> torch.Tensor:
        """
        Args:
            candidates: ``[M, e]`` looked-up candidate embeddings (item, side features and user summed;
                with ``embeddings.repeat_feature``, plus :meth:`CachedScorer.candidate_repeat`).
            positions, gaps, candidate_keys: ``[M]`` int64, from :func:`graph_inputs`.
            history_keys: ``[K]`` int64 order keys of the cached tokens.
            keys, values: ``[L, K, H, d_qk]``, ``[L, K, H, d_v]`` cached per layer.

        Returns:
            ``[M, num_tasks]`` logits.
        """
        x = self.stack.encode_candidates(self.candidate_tokens(candidates), positions, gaps)
        visible = DenseSpec(history_keys.unsqueeze(0) < candidate_keys.unsqueeze(1))  # [M, K]
        out = run_layers(self.stack.blocks, x.new_zeros((0, x.shape[1])), x, fake_spec=visible, cached=(keys, values))
        return self.head(self.stack.output_norm(out.fake))


GraphInputs = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def graph_inputs(
    stack: TokenStack,
    state: HistoryState,
    candidates: torch.Tensor,
    candidate_timestamps: Optional[torch.Tensor],
) -> GraphInputs:
    """The :class:`CandidateGraph` arguments for ``candidates`` (``[M, e]``) of the user of ``state``."""
    if state.timestamps is None and stack.encoding.time_gap is not None:
        raise ValueError("this model encodes time gaps: give the history and candidate timestamps")
    offsets = torch.tensor([0, candidates.shape[0]], dtype=torch.int64)
    times = candidate_timestamps if state.timestamps is not None else None
    layout = candidate_layout(stack, [state], offsets, times)
    gaps = layout.gaps if layout.gaps is not None else torch.zeros_like(layout.positions)
    return candidates, layout.positions, gaps, layout.keys, layout.kv_keys, state.keys, state.values
