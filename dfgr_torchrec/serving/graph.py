"""One user's candidates against a cached history as one dense graph: what ``dfgr export`` exports.

The graph holds the interaction blocks, the encodings, the final norm and the head; it takes the
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

from dfgr_torchrec.models.ranking import DFGRRankingModel
from dfgr_torchrec.modules.stack import GenerativeStack
from dfgr_torchrec.ops.dense import dense_attention
from dfgr_torchrec.serving.history import HistoryState, candidate_layout


class CandidateGraph(nn.Module):
    """Scores one user's ``M`` candidates against ``K`` cached history tokens.

    Args:
        model: a :class:`DFGRRankingModel` or :class:`MetaGRRankingModel` (weights shared, not copied).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if getattr(model, "repeat", None) is not None and not isinstance(model, DFGRRankingModel):
            raise ValueError("embeddings.repeat_feature: the history cache and export serve it for dfgr only")
        self.stack: GenerativeStack = model.interaction
        self.head = model.head
        self.embedding = model.embedding if isinstance(model, DFGRRankingModel) else None  # the placeholder merge

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
        config = self.stack.config
        x = self.embedding.merge_placeholder(candidates) if self.embedding is not None else candidates
        x = self.stack.encode(x, positions, gaps)
        visible = (history_keys.unsqueeze(0) < candidate_keys.unsqueeze(1)).unsqueeze(0).unsqueeze(0)  # [1, 1, M, K]
        heads = lambda t: t.transpose(0, 1).unsqueeze(0)  # noqa: E731  [n, H, d] -> [1, H, n, d]
        for index, block in enumerate(self.stack.blocks):
            u, q, k, v = block.project(x)
            attention = dense_attention(
                heads(q * config.attention_dim**-0.5),
                heads(keys[index]),
                heads(values[index]),
                visible,
                config.attention_form,
                config.pointwise_scale_len,
                heads(k),
                heads(v),
            )
            x = block.finish(x, attention[0].transpose(0, 1).flatten(1), u)
        return self.head(self.stack.output_norm(x))


GraphInputs = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def graph_inputs(
    stack: GenerativeStack,
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
