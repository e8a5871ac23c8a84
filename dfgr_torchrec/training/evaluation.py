"""The evaluation loop: score every candidate of a split, gather on rank 0, compute ranking metrics."""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec.batch import SequenceBatch
from dfgr_torchrec.features import ITEM_FEATURE, candidate_feature
from dfgr_torchrec.metrics import ranking_metrics

ScoreFn = Callable[[SequenceBatch], JaggedTensor]
# candidates sliced by how often their item occurs in the training split: (name, lowest, highest)
ITEM_COUNT_SLICES = (("0", 0, 0), ("1-4", 1, 4), ("5-49", 5, 49), ("50+", 50, None))


@torch.no_grad()  # not inference_mode: fbgemm's fused CPU lookup dispatches through the autograd key
def evaluate(
    score: ScoreFn,
    batches: Iterable[SequenceBatch],
    tasks: Sequence[str],
    split: str,
    device: torch.device,
    item_train_counts: Optional[np.ndarray] = None,
) -> Dict[str, Any]:
    """Collective: every rank calls it with its own batches; rank 0 returns the metrics, the others ``{}``.

    ``score`` maps a batch to ``[M, num_tasks]`` candidate logits (e.g. a model's
    ``score_candidates``). With sharded tables every call is a collective, so every rank must
    pass the same number of batches (:class:`~dfgr_torchrec.data.dataset.SequenceDataset`
    pads evaluation splits to make it so). ``item_train_counts`` (``[item rows]``, each item's
    training occurrences) adds ``by_item_train_count``: the metrics of the candidates in each
    of :data:`ITEM_COUNT_SLICES` (cold items, rare ones, ...).
    """
    parts: Dict[str, List[torch.Tensor]] = {"logits": [], "labels": [], "users": [], "items": []}
    for batch in batches:
        batch = batch.to(device)
        parts["logits"].append(score(batch).values().float().cpu())
        parts["labels"].append(batch.candidate_labels.cpu())
        parts["users"].append(batch.candidate_user_ids.cpu())
        parts["items"].append(batch.features[candidate_feature(ITEM_FEATURE)].values().cpu())
    empty = {"logits": torch.zeros(0, len(tasks)), "labels": torch.zeros(0, len(tasks))}
    local = {k: torch.cat(v) if v else empty.get(k, torch.zeros(0, dtype=torch.int64)) for k, v in parts.items()}
    gathered: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    if dist.get_rank() != 0:
        return {}
    logits, labels, users, items = (torch.cat([g[k] for g in gathered]) for k in ("logits", "labels", "users", "items"))
    metrics = {
        "split": split,
        "candidates": int(labels.shape[0]),
        "tasks": ranking_metrics(logits, labels, users, list(tasks)),
    }
    if item_train_counts is not None:
        counts = torch.from_numpy(np.asarray(item_train_counts, dtype=np.int64))[items]
        metrics["by_item_train_count"] = {}
        for name, low, high in ITEM_COUNT_SLICES:
            keep = (counts >= low) & (counts <= (high if high is not None else math.inf))
            metrics["by_item_train_count"][name] = ranking_metrics(logits[keep], labels[keep], users[keep], list(tasks))
    return metrics


def evaluate_model(
    model: torch.nn.Module,
    batches: Iterable[SequenceBatch],
    tasks: Sequence[str],
    split: str,
    device: torch.device,
    item_train_counts: Optional[np.ndarray] = None,
) -> Dict[str, Any]:
    """:func:`evaluate` with ``model.score_candidates`` in eval mode (dropout off), then back to train mode."""
    model.eval()
    try:
        return evaluate(model.score_candidates, batches, tasks, split, device, item_train_counts)
    finally:
        model.train()
