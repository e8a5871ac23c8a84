"""Multi-task prediction heads and the weighted BCE loss."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class MultiTaskHead(nn.Module):
    """An MLP from the model width to one logit per task, shared by the tasks or one per task.

    Args:
        d_model: input width.
        num_tasks: number of logits.
        hidden_dims: widths of the hidden SiLU layers (may be empty: a single linear layer).
        per_task: one MLP (tower) of ``hidden_dims`` per task, each ending in its own logit, so a rare
            task's hidden layers are not shaped by the frequent ones; False: one MLP for all tasks.
        device: where to allocate.
        zero_output: the output layer starts at zero (the head adds nothing until it has trained:
            a residual over an offset such as ``model.rate_offset``'s).
    """

    def __init__(
        self,
        d_model: int,
        num_tasks: int,
        hidden_dims: Sequence[int] = (),
        device: Optional[torch.device] = None,
        per_task: bool = False,
        zero_output: bool = False,
    ) -> None:
        super().__init__()
        if per_task:
            self.towers = nn.ModuleList(_mlp(d_model, hidden_dims, 1, device, zero_output) for _ in range(num_tasks))
        else:
            self.mlp = _mlp(d_model, hidden_dims, num_tasks, device, zero_output)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """``[T, d_model]`` -> ``[T, num_tasks]`` logits."""
        if hasattr(self, "towers"):
            return torch.cat([tower(states) for tower in self.towers], dim=-1)
        return self.mlp(states)


class ZeroLinear(nn.Linear):
    """A linear layer whose ``reset_parameters`` (also what DistributedModelParallel calls when it
    allocates a meta model) sets weight and bias to zero."""

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


def _mlp(
    width: int, hidden_dims: Sequence[int], out: int, device: Optional[torch.device], zero_output: bool = False
) -> nn.Sequential:
    layers: List[nn.Module] = []
    for hidden in hidden_dims:
        layers += [nn.Linear(width, hidden, device=device), nn.SiLU()]
        width = hidden
    layers.append((ZeroLinear if zero_output else nn.Linear)(width, out, device=device))
    return nn.Sequential(*layers)


def multitask_bce_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: Sequence[float]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Binary cross-entropy per task, averaged over interactions, combined by task weights.

    Returns:
        ``(loss, per_task_loss)``: the weighted mean over tasks and the ``[num_tasks]`` losses.
    """
    if logits.shape != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ in shape")
    w = torch.tensor(list(weights), dtype=logits.dtype, device=logits.device)
    if logits.shape[0] == 0:
        per_task = logits.sum(0) * 0.0  # keeps the graph so backward still runs on an empty batch
    else:
        per_task = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none").mean(0)
    return (per_task * w).sum() / w.sum().clamp(min=1e-12), per_task


class MultiTaskBCELoss(nn.Module):
    """:func:`multitask_bce_loss` with fixed task weights, as a module (a leaf for FX tracing)."""

    def __init__(self, weights: Sequence[float]) -> None:
        super().__init__()
        self.weights = list(weights)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return multitask_bce_loss(logits, labels, self.weights)
