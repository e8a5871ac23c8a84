"""What ``dfgr export`` traces: the candidate graph's dense weights copied in fp32 or bf16.

:class:`DenseGraph` holds a copy of the graph's dense weights in the export's precision and
never the embedding tables (the :class:`~dfgr_torchrec.serving.ranker.Ranker` looks rows up
outside the graph, so a program holding them would only duplicate ``weights.pt``). It keeps the
fp32 interface: it casts the candidates and the cached keys/values on the way in and its logits
back to fp32 on the way out, so the Ranker and the history cache (computed by the fp32 model) are
the same for both precisions. :func:`precision_error` measures a program against the fp32 graph.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, Iterable

import torch
from torch import nn
from torchrec import EmbeddingCollection

from dfgr_torchrec.batch import SequenceBatch
from dfgr_torchrec.serving.graph import CandidateGraph, graph_inputs
from dfgr_torchrec.serving.scorer import CachedScorer

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


class DenseGraph(nn.Module):
    """``graph`` without its tables, computed in ``dtype`` with fp32 inputs and outputs (module docstring)."""

    def __init__(self, graph: CandidateGraph, dtype: torch.dtype) -> None:
        super().__init__()
        # a candidate-token module may sit on the embedding module (DFGR's placeholder merge): not its tables
        memo: Dict[int, Any] = {id(m): nn.Module() for m in graph.modules() if isinstance(m, EmbeddingCollection)}
        self.inner = copy.deepcopy(graph, memo).to(dtype)  # not "graph": the exported module has its own
        self.dtype = dtype

    def forward(self, candidates, positions, gaps, candidate_keys, history_keys, keys, values) -> torch.Tensor:
        low = self.dtype
        logits = self.inner(
            candidates.to(low), positions, gaps, candidate_keys, history_keys, keys.to(low), values.to(low)
        )
        return logits.float()


@torch.no_grad()
def precision_error(
    model: nn.Module, program: Callable[..., torch.Tensor], batches: Iterable[SequenceBatch], max_users: int = 256
) -> Dict[str, Any]:
    """``program``'s logits against the fp32 :class:`CandidateGraph` for the candidates of up to
    ``max_users`` users of ``batches``: max / mean absolute difference of logits and of their
    sigmoids (the bias terms, added outside the graph, are the same in both)."""
    graph, scorer = CandidateGraph(model).eval(), CachedScorer(model)
    logit_diffs, probability_diffs = [], []
    for batch in batches:
        candidates = model.embedding(batch.features).candidates
        lengths = candidates.lengths().tolist()
        times = (
            batch.candidate_timestamps.split(lengths)
            if batch.candidate_timestamps is not None
            else [None] * len(lengths)
        )
        for state, embedded, when in zip(scorer.encode(batch), candidates.values().split(lengths), times):
            if embedded.shape[0] == 0 or state.order_keys.shape[0] == 0:
                continue
            inputs = graph_inputs(model.interaction, state, embedded, when)
            exact, low = graph(*inputs), program(*inputs)
            logit_diffs.append((low - exact).abs().flatten())
            probability_diffs.append((torch.sigmoid(low) - torch.sigmoid(exact)).abs().flatten())
            if len(logit_diffs) >= max_users:
                return _summary(logit_diffs, probability_diffs)
    return _summary(logit_diffs, probability_diffs)


def _summary(logit_diffs, probability_diffs) -> Dict[str, Any]:
    if not logit_diffs:
        return {"users": 0, "note": "no user with both history and candidates to measure on"}
    logits, probabilities = torch.cat(logit_diffs), torch.cat(probability_diffs)
    return {
        "users": len(logit_diffs),
        "scores": int(logits.numel()),
        "max_abs_logit": float(logits.max()),
        "mean_abs_logit": float(logits.mean()),
        "max_abs_probability": float(probabilities.max()),
        "mean_abs_probability": float(probabilities.mean()),
    }
