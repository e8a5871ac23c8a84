"""Optimizers and the learning-rate schedule.

The embedding tables are updated in backward by TorchRec's fused sparse optimizer (set up when
the model is sharded); the dense parameters by AdamW, clipped by global norm. Both sit in one
``CombinedOptimizer`` so they checkpoint together; the schedule drives the dense learning rate.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Tuple

import torch
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.optim.clipping import GradientClipping, GradientClippingOptimizer
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper

from dfgr_torchrec.distributed.sharding import combined_optimizer, dense_optimizer
from dfgr_torchrec.training.config import DECAYS, OptimConfig  # noqa: F401 (their home before training.config)


def sparse_optimizer_args(config: OptimConfig) -> Dict[str, object]:
    """The fused table optimizer's settings, as :func:`~dfgr_torchrec.distributed.sharding.shard_model` takes them."""
    keys = ("sparse_optimizer", "sparse_lr", "sparse_weight_decay", "sparse_weight_decay_mode")
    return {key: getattr(config, key) for key in keys}


def build_optimizers(
    dmp: DistributedModelParallel, config: OptimConfig
) -> Tuple[KeyedOptimizerWrapper, CombinedOptimizer]:
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


def build_scheduler(
    dense: torch.optim.Optimizer, config: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(dense, lr_lambda(config, total_steps))
