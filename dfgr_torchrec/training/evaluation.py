"""The evaluation loop: score every candidate of a split, gather on rank 0, compute ranking metrics."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Sequence

import torch
import torch.distributed as dist
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec.batch import SequenceBatch
from dfgr_torchrec.metrics import ranking_metrics

ScoreFn = Callable[[SequenceBatch], JaggedTensor]


@torch.no_grad()  # not inference_mode: fbgemm's fused CPU lookup dispatches through the autograd key
def evaluate(
    score: ScoreFn, batches: Iterable[SequenceBatch], tasks: Sequence[str], split: str, device: torch.device
) -> Dict[str, Any]:
    """Collective: every rank calls it with its own batches; rank 0 returns the metrics, the others ``{}``.

    ``score`` maps a batch to ``[M, num_tasks]`` candidate logits (e.g. a model's
    ``score_candidates``). With sharded tables every call is a collective, so every rank must
    pass the same number of batches (:class:`~dfgr_torchrec.data.dataset.SequenceDataset`
    pads evaluation splits to make it so).
    """
    logits: List[torch.Tensor] = []
    labels: List[torch.Tensor] = []
    users: List[torch.Tensor] = []
    for batch in batches:
        batch = batch.to(device)
        logits.append(score(batch).values().float().cpu())
        labels.append(batch.candidate_labels.cpu())
        users.append(batch.candidate_user_ids.cpu())
    local = tuple(
        torch.cat(parts) if parts else empty
        for parts, empty in (
            (logits, torch.zeros(0, len(tasks))),
            (labels, torch.zeros(0, len(tasks))),
            (users, torch.zeros(0, dtype=torch.int64)),
        )
    )
    gathered: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    if dist.get_rank() != 0:
        return {}
    all_logits, all_labels, all_users = (torch.cat([g[i] for g in gathered]) for i in range(3))
    return {
        "split": split,
        "candidates": int(all_labels.shape[0]),
        "tasks": ranking_metrics(all_logits, all_labels, all_users, list(tasks)),
    }


def evaluate_model(
    model: torch.nn.Module, batches: Iterable[SequenceBatch], tasks: Sequence[str], split: str, device: torch.device
) -> Dict[str, Any]:
    """:func:`evaluate` with ``model.score_candidates`` in eval mode (dropout off), then back to train mode."""
    model.eval()
    try:
        return evaluate(model.score_candidates, batches, tasks, split, device)
    finally:
        model.train()
