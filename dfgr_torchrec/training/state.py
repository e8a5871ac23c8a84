"""The train state: sharded model, optimizers, schedule and data position, saved and loaded in one place."""

from __future__ import annotations

import os
from typing import Optional

from torchrec.distributed.model_parallel import DistributedModelParallel

from dfgr_torchrec.training.checkpoint import load_checkpoint, save_checkpoint
from dfgr_torchrec.training.config import CheckpointConfig  # noqa: F401 (its home before training.config)
from dfgr_torchrec.training.optim import OptimConfig, build_optimizers, build_scheduler
from dfgr_torchrec.training.selection import EvalConfig, Selector


class TrainState:
    """Everything a resumed run needs to continue exactly where it stopped.

    ``step`` counts optimizer steps; ``epoch`` and ``batch_in_epoch`` locate the data (the data
    order is a function of seed and epoch, so a resumed run skips the batches already done);
    ``selector`` holds the validation history (best step, patience).
    """

    def __init__(
        self,
        dmp: DistributedModelParallel,
        optim: OptimConfig,
        total_steps: int,
        evaluation: Optional[EvalConfig] = None,
    ) -> None:
        self.dmp = dmp
        self.dense, self.optimizer = build_optimizers(dmp, optim)
        self.scheduler = build_scheduler(self.dense, optim, total_steps)
        self.selector = Selector(evaluation or EvalConfig())
        self.step = self.epoch = self.batch_in_epoch = 0

    def save(self, directory: str, keep: int) -> str:
        """Collective: every rank calls it."""
        progress = {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}
        extra = {"scheduler": self.scheduler.state_dict(), "selector": self.selector.state_dict()}
        return save_checkpoint(directory, self.step, self._tensors(), extra, progress, keep)

    def load(self, path: str, weights_only: bool = False) -> None:
        """Collective: loads ``path`` in place into the model, both optimizers and the schedule;
        ``weights_only`` the model alone (evaluation: any number of processes, DCP reshards)."""
        if weights_only:
            model = {"model": self.dmp.state_dict()}
            load_checkpoint(path, model, weights_only=True)
            self.dmp.load_state_dict(model["model"])
            return
        self.dense.init_state()  # AdamW's state is lazy; it must exist to be loaded in place
        state = self._tensors()
        extra, progress = load_checkpoint(path, state)
        self.dmp.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optim"])
        self.scheduler.load_state_dict(extra["scheduler"])
        self.selector.load_state_dict(extra.get("selector", {}))
        for group, lr in zip(self.dense.param_groups, self.scheduler.get_last_lr()):
            group["lr"] = lr  # LambdaLR restores its counters, not the groups' current rate
        self.step, self.epoch, self.batch_in_epoch = progress["step"], progress["epoch"], progress["batch_in_epoch"]

    def _tensors(self):
        return {"model": self.dmp.state_dict(), "optim": self.optimizer.state_dict()}


def checkpoint_dir(run_dir: str) -> str:
    """The rolling checkpoints (the newest ``keep``), for resuming."""
    return os.path.join(run_dir, "checkpoints")


def best_checkpoint_dir(run_dir: str) -> str:
    """The checkpoint of the best validation score so far (one)."""
    return os.path.join(run_dir, "best")
