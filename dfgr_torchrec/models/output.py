"""What every registered model's training forward returns: :class:`RankingOutput`."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RankingOutput:
    """What a training forward returns.

    Attributes:
        loss: the weighted multi-task BCE (scalar).
        task_losses: ``[num_tasks]`` BCE per task.
        logits: ``[T, num_tasks]``: the prediction for every history interaction.
        labels: ``[T, num_tasks]``: its targets.
    """

    loss: torch.Tensor
    task_losses: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor

    def __iter__(self):
        """Unpacks as ``(loss, output)``, the form TorchRec's train pipelines expect."""
        return iter((self.loss, self))
