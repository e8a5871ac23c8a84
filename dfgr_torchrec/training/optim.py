"""Optimizers and the learning-rate schedule.

The embedding tables are updated in backward by TorchRec's fused sparse optimizer (set up when
the model is sharded); the dense parameters by AdamW, clipped by global norm. Both sit in one
``CombinedOptimizer`` so they checkpoint together; the schedule drives the dense learning rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import torch
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.optim.clipping import GradientClipping, GradientClippingOptimizer
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper

from dfgr_torchrec.config import check
from dfgr_torchrec.distributed.sharding import combined_optimizer, dense_optimizer

DECAYS = ("cosine", "linear", "none")


@dataclass
class OptimConfig:
    """Args: ``lr`` / ``weight_decay`` of AdamW on dense parameters; ``warmup_steps`` of linear
    warm-up, then ``decay`` to ``min_lr_ratio * lr``; ``grad_clip`` (global norm, 0: off);
    ``sparse_optimizer`` / ``sparse_lr`` of the fused table optimizer, ``sparse_weight_decay``
    (of the rows each batch looks up) with ``sparse_weight_decay_mode`` (decoupled | l2)."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    decay: str = "cosine"
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    sparse_optimizer: str = "row_wise_adagrad"
    sparse_lr: float = 0.05
    sparse_weight_decay: float = 0.0
    sparse_weight_decay_mode: str = "decoupled"

    def __post_init__(self) -> None:
        check(self.decay in DECAYS, "decay", f"one of {DECAYS}", self.decay)
        check(self.lr > 0, "lr", "a positive learning rate", self.lr)
        check(self.sparse_lr > 0, "sparse_lr", "a positive learning rate", self.sparse_lr)
        check(self.sparse_weight_decay >= 0, "sparse_weight_decay", "a number >= 0", self.sparse_weight_decay)
        modes = ("decoupled", "l2")
        check(self.sparse_weight_decay_mode in modes, "sparse_weight_decay_mode", f"one of {modes}", self.sparse_weight_decay_mode)


def sparse_optimizer_args(config: OptimConfig) -> Dict[str, object]:
    """The fused table optimizer's settings, as :func:`~dfgr_torchrec.distributed.sharding.shard_model` takes them."""
    keys = ("sparse_optimizer", "sparse_lr", "sparse_weight_decay", "sparse_weight_decay_mode")
    return {key: getattr(config, key) for key in keys}


def build_optimizers(dmp: DistributedModelParallel, config: OptimConfig) -> Tuple[KeyedOptimizerWrapper, CombinedOptimizer]:
    """``(dense AdamW, the combined sparse + clipped dense optimizer)``."""
    dense = dense_optimizer(dmp, lr=config.lr, weight_decay=config.weight_decay)
    clipped = (
        GradientClippingOptimizer(dense, clipping=GradientClipping.NORM, max_gradient=config.grad_clip)
        if config.grad_clip > 0
        else dense
    )
    return dense, combined_optimizer(dmp, clipped)


def lr_lambda(config: OptimConfig, total_steps: int) -> Callable[[int], float]:
    """The learning-rate factor at each step: linear warm-up, then the configured decay."""

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.decay == "none" or total_steps <= config.warmup_steps:
            return 1.0
        progress = min(1.0, (step - config.warmup_steps) / (total_steps - config.warmup_steps))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if config.decay == "cosine" else 1.0 - progress
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * shape

    return factor


def build_scheduler(dense: torch.optim.Optimizer, config: OptimConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(dense, lr_lambda(config, total_steps))
