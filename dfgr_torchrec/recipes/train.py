"""``dfgr train``: train a registered ranking model with sharded embeddings, select it on validation.

Reads top to bottom: :meth:`TrainRecipe.setup` (process group, data, sharded model, train state,
resume), :meth:`~TrainRecipe.train` (steps, logging, validation, checkpoints, then one test of the
selected checkpoint), :meth:`~TrainRecipe.cleanup`. Launch it with ``torchrun --nproc_per_node N -m
dfgr_torchrec.recipes.train --config ...``, TorchX (``launch/dfgr.py:train``) or ``dfgr train``.
"""

from __future__ import annotations

import itertools
import sys
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist

from dfgr_torchrec.data.dataset import PreparedData, make_dataloader
from dfgr_torchrec.data.identity import prepared_for_run, record_prepared
from dfgr_torchrec.distributed.sharding import shard_model, table_pooling_factors
from dfgr_torchrec.models import build_model
from dfgr_torchrec.recipes.args import main as args_main
from dfgr_torchrec.recipes.config import TrainConfig, config_dict, save_config
from dfgr_torchrec.training.checkpoint import latest_checkpoint
from dfgr_torchrec.training.data import prepare_data, rank_dataset
from dfgr_torchrec.training.distributed import collective_errors, fault_hooks, init_distributed
from dfgr_torchrec.training.evaluation import evaluate_model
from dfgr_torchrec.training.logger import TrainLogger, progress_bar
from dfgr_torchrec.training.optim import sparse_optimizer_args
from dfgr_torchrec.training.preemption import Preemption
from dfgr_torchrec.training.report import short_run_warnings, write_metrics
from dfgr_torchrec.training.run_dir import OpenedRun, open_run
from dfgr_torchrec.training.selection import shared_score
from dfgr_torchrec.training.state import TrainState, best_checkpoint_dir, checkpoint_dir
from dfgr_torchrec.training.steps import CountingBatches, make_step


class TrainRecipe:
    """One training run of ``config``; every method is collective (all ranks call it)."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.ckpt_dir = checkpoint_dir(config.run_dir)

    def setup(self, mode: str = "fresh", checkpoint: Optional[str] = None, opened: Optional[OpenedRun] = None) -> None:
        """``mode``: fresh | resume | auto | eval; the run directory is checked first, on every rank,
        before anything is set up (``opened``: already checked, by :func:`open_run`)."""
        c = self.config
        opened = opened or open_run(c.run_dir, mode, config_dict(c), c.train.overwrite, checkpoint)
        mode, self.start = opened.mode, opened.checkpoint
        self.env = init_distributed(c.train.collective_timeout_s)
        with collective_errors(self.env.rank, c.train.collective_timeout_s, lambda: 0):
            self._build()
        if self.start:
            self.state.load(self.start, weights_only=mode == "eval")
            if self.env.is_main and mode != "eval":
                print(f"resumed from {self.start}: epoch {self.state.epoch}, step {self.state.step}", flush=True)
        if self.env.is_main and mode != "eval":
            save_config(c)

    def _build(self) -> None:
        c = self.config
        self.data = prepare_data(c.data.config)
        if self.start:  # resumed or evaluated weights: their table rows must mean the same ids
            path = prepared_for_run(c.run_dir, self.data.path)
            self.data = self.data if path == self.data.path else PreparedData(path)
        elif self.env.is_main:
            record_prepared(c.run_dir, self.data.path)
        torch.manual_seed(c.train.seed)
        model = build_model(c.model, self.data.schema(c.data.user_id), device=torch.device("meta"), data=self.data)
        factors = table_pooling_factors(model, self.data.mean_history_length(c.data.max_seq_len), tables=c.sharding)
        optim = sparse_optimizer_args(c.optim)
        self.dmp = shard_model(model, c.sharding, self.env.device, pooling_factors=factors, **optim)
        self.train_data = rank_dataset(self.data, "train", c.data, self.env, seed=c.train.seed)
        self.steps_per_epoch = len(self.train_data)
        self.length = c.length(self.steps_per_epoch)
        self.state = TrainState(self.dmp, c.optim, self.length.steps, c.eval)

    def train(self) -> Dict[str, Any]:
        """Trains, validating as configured, until the last epoch, ``max_steps`` or early stopping;
        then tests the checkpoint chosen on validation, once. Returns the final metrics (rank 0)."""
        with (
            collective_errors(self.env.rank, self.config.train.collective_timeout_s, lambda: self.state.step),
            Preemption.of(self.config.train, self.env, self.config.testing) as self.preemption,
        ):  # SIGTERM, SIGUSR1: a checkpoint
            return self._train()

    def _train(self) -> Dict[str, Any]:
        c, s = self.config, self.state
        step_fn = make_step(c.train.pipeline, self.dmp, s.optimizer, self.env.device)
        resumed, length, every = s.step if self.start else None, self.length, self.length.eval_every
        self.logger = TrainLogger(c.run_dir, c.train.log_every, self.env.device, self.env.is_main, resumed)
        if self.env.is_main:
            print(f"training {length.describe(self.steps_per_epoch)}", flush=True)
        while s.epoch < length.epochs and s.step < length.steps and not s.selector.should_stop:
            finished = self._train_epoch(step_fn)
            step_fn.end_epoch()
            if not finished:
                break
            s.epoch, s.batch_in_epoch = s.epoch + 1, 0
            if not every:
                self._validate(step_fn)
            if not c.checkpoint.every_steps:
                self.save()
        if s.selector.last_step != s.step:  # the final weights are a candidate too
            self._validate(step_fn)
        step_fn.detach()
        return self._test_selected()

    def _train_epoch(self, step_fn) -> bool:
        """One epoch from ``batch_in_epoch``; False if it stopped inside it (max_steps or patience)."""
        c, s = self.config, self.state
        self.train_data.set_epoch(s.epoch)
        loader = make_dataloader(self.train_data, c.data.num_workers, pin_memory=self.env.device.type == "cuda")
        # resumed mid-epoch: the data order is a function of (seed, epoch), so skip what was done
        batches = CountingBatches(itertools.islice(iter(loader), s.batch_in_epoch, None))
        bar = progress_bar(self.steps_per_epoch, s.batch_in_epoch, f"epoch {s.epoch}", self.env.is_main)
        autocast = c.train.autocast_on(self.env.device.type)
        while s.batch_in_epoch < self.steps_per_epoch:
            if s.step >= self.length.steps or s.selector.should_stop:
                return False
            with torch.autocast(self.env.device.type, dtype=torch.bfloat16, enabled=autocast):
                out = step_fn.progress(batches)
            if out is None:
                break
            s.scheduler.step()
            s.step, s.batch_in_epoch = s.step + 1, s.batch_in_epoch + 1
            bar.update(1)
            self.logger.step(s.step, s.epoch, float(out.loss.detach()), s.scheduler.get_last_lr()[0], batches)
            if self.length.eval_every and s.step % self.length.eval_every == 0:
                self._validate(step_fn)
            if c.checkpoint.every_steps and s.step % c.checkpoint.every_steps == 0:
                self.save()
            fault_hooks(s.step, c.testing.crash_at_step, c.testing.stall_at_step, self.env, resumed=bool(self.start))
            self.preemption.after_step(s.step, self.save)
        bar.close()
        return True

    def _validate(self, step_fn) -> None:
        """Scores the validation split; a new best score saves the best checkpoint (collective)."""
        s = self.state
        with self.logger.paused():
            step_fn.detach()
            metrics = self.evaluate("valid")
            step_fn.attach()
            score = shared_score(metrics, self.config.eval.metric)  # every rank takes the same decisions
            if s.selector.update(score, s.step, metrics or None):
                s.save(best_checkpoint_dir(self.config.run_dir), keep=1)
        self.logger.evaluation(metrics, s.step)
        if self.env.is_main:
            print(s.selector.progress_line(s.step, score), flush=True)

    def _test_selected(self) -> Dict[str, Any]:
        """Loads the checkpoint chosen on validation and evaluates the test split: the only time
        the recipe reads it."""
        # before loading: the best checkpoint holds an older history and step
        selection = {**self.state.selector.summary(), **short_run_warnings(self.state.step)}
        best = latest_checkpoint(best_checkpoint_dir(self.config.run_dir))
        if best:
            self.state.load(best, weights_only=True)
        metrics = self.evaluate("test", slices=True) if self.config.eval.test else (selection["valid"] or {})
        self.logger.evaluation(metrics, self.state.step)
        self.logger.close()
        return self._write_metrics({**metrics, **selection} if metrics else {}, "final")

    def evaluate(self, split: str, slices: bool = False) -> Dict[str, Any]:
        """Scores every candidate of ``split`` with the inference path (collective; metrics on rank 0);
        ``slices`` adds the metrics by the candidate item's training count (cold, rare, ...)."""
        dataset = rank_dataset(self.data, split, self.config.data, self.env)
        counts = self.data.item_train_counts() if slices else None
        # the dataset iterates its own batches: a DataLoader here would draw from the global RNG (dropout's)
        return evaluate_model(self.dmp.module, dataset, self.data.tasks, split, self.env.device, counts)

    def save(self) -> str:
        with self.logger.paused():  # checkpoint time is not training throughput
            return self.preemption.timed(lambda: self.state.save(self.ckpt_dir, self.config.checkpoint.keep))

    def _write_metrics(self, metrics: Dict[str, Any], what: str) -> Dict[str, Any]:
        if self.env.is_main:
            write_metrics(self.config.run_dir, what, metrics)
        dist.barrier()
        return metrics

    def evaluate_checkpoint(self, split: str = "test") -> Dict[str, Any]:
        """``dfgr eval``: the checkpoint ``setup(mode="eval")`` loaded (``--checkpoint``, else the best,
        else the latest) on ``split``."""
        with collective_errors(self.env.rank, self.config.train.collective_timeout_s, lambda: self.state.step):
            return self._write_metrics(self.evaluate(split, slices=True), "eval")

    def cleanup(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def main(argv: Optional[List[str]] = None) -> int:
    return args_main(argv, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
