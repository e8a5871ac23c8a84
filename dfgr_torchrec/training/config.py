"""The training components' config sections, importable without torch: a config error is
reported in well under a second, before any library is loaded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from dfgr_torchrec.config import check

PIPELINES = ("auto", "sparse_dist", "base")
RESUME_MODES = (False, True, "auto")


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
        check(
            self.sparse_weight_decay_mode in modes,
            "sparse_weight_decay_mode",
            f"one of {modes}",
            self.sparse_weight_decay_mode,
        )


@dataclass
class CheckpointConfig:
    """Args: ``every_steps`` (0: at the end of each epoch); ``keep`` the newest N (0: all);
    ``resume``: ``true`` continue from the run's latest checkpoint (an error if it has none,
    like ``--resume``), ``auto`` resume if the run has a checkpoint, else start it afresh
    (what a scheduler restart wants), ``false`` a new run."""

    every_steps: int = 0
    keep: int = 2
    resume: Union[bool, str] = False

    def __post_init__(self) -> None:
        for key in ("every_steps", "keep"):
            value = getattr(self, key)
            check(isinstance(value, int) and not isinstance(value, bool) and value >= 0, key, "an integer >= 0", value)
        check(self.resume in RESUME_MODES, "resume", "true, false or auto", self.resume)
