"""``dfgr train``: train a registered ranking model with sharded embeddings, select it on validation.

Reads top to bottom: :meth:`TrainRecipe.setup` (process group, data, sharded model, train state,
resume), :meth:`~TrainRecipe.train` (steps, logging, validation, checkpoints, then one test of the
selected checkpoint), :meth:`~TrainRecipe.cleanup`. Launch it with ``torchrun --nproc_per_node N -m
dfgr_torchrec.recipes.train --config ...``, TorchX (``launch/dfgr.py:train``) or ``dfgr train``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist

from dfgr_torchrec.data.dataset import SequenceDataset, make_dataloader
from dfgr_torchrec.distributed.sharding import shard_model, table_pooling_factors
from dfgr_torchrec.models import build_model
from dfgr_torchrec.recipes.config import TrainConfig, load_train_config, save_config
from dfgr_torchrec.training.checkpoint import latest_checkpoint
from dfgr_torchrec.training.data import prepare_data
from dfgr_torchrec.training.distributed import init_distributed
from dfgr_torchrec.training.evaluation import evaluate_model
from dfgr_torchrec.training.logger import TrainLogger, progress_bar
from dfgr_torchrec.training.optim import sparse_optimizer_args
from dfgr_torchrec.training.report import write_metrics
from dfgr_torchrec.training.selection import shared_score
from dfgr_torchrec.training.state import TrainState, best_checkpoint_dir, checkpoint_dir
from dfgr_torchrec.training.steps import CountingBatches, make_step


class TrainRecipe:
    """One training run of ``config``; every method is collective (all ranks call it)."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.ckpt_dir = checkpoint_dir(config.run_dir)

    def setup(self, resume: bool = False) -> None:
        c = self.config
        self.env = init_distributed()
        self.data = prepare_data(c.data.config)
        torch.manual_seed(c.train.seed)
        model = build_model(c.model, self.data.schema(c.data.user_id), device=torch.device("meta"))
        pooling = table_pooling_factors(model, self.data.mean_history_length(c.data.max_seq_len), tables=c.sharding)
        self.dmp = shard_model(model, c.sharding, self.env.device, pooling_factors=pooling, **sparse_optimizer_args(c.optim))
        self.train_data = SequenceDataset(
            self.data, "train", c.data.batch_size, c.data.max_seq_len, self.env.rank, self.env.world_size,
            seed=c.train.seed, random_window=c.data.random_window, user_id=c.data.user_id,
        )
        self.steps_per_epoch = len(self.train_data)
        self.total_steps = c.train.max_steps or self.steps_per_epoch * c.train.epochs
        self.state = TrainState(self.dmp, c.optim, self.total_steps, c.eval)
        latest = latest_checkpoint(self.ckpt_dir) if resume else None
        if latest:
            self.state.load(latest)
            if self.env.is_main:
                print(f"resumed from {latest}: epoch {self.state.epoch}, step {self.state.step}", flush=True)
        if self.env.is_main:
            save_config(c)

    def train(self) -> Dict[str, Any]:
        """Trains, validating as configured, until the last epoch, ``max_steps`` or early stopping;
        then tests the checkpoint chosen on validation, once. Returns the final metrics (rank 0)."""
        c, s = self.config, self.state
        step_fn = make_step(c.train.pipeline, self.dmp, s.optimizer, self.env.device)
        self.logger = TrainLogger(c.run_dir, c.train.log_every, self.env.device, self.env.is_main)
        while s.epoch < c.train.epochs and s.step < self.total_steps and not s.selector.should_stop:
            finished = self._train_epoch(step_fn)
            step_fn.end_epoch()
            if not finished:
                break
            s.epoch, s.batch_in_epoch = s.epoch + 1, 0
            if not c.eval.every_steps:
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
        autocast = self.env.device.type == "cuda" and c.train.bf16
        while s.batch_in_epoch < self.steps_per_epoch:
            if s.step >= self.total_steps or s.selector.should_stop:
                return False
            with torch.autocast(self.env.device.type, dtype=torch.bfloat16, enabled=autocast):
                out = step_fn.progress(batches)
            if out is None:
                break
            s.scheduler.step()
            s.step, s.batch_in_epoch = s.step + 1, s.batch_in_epoch + 1
            bar.update(1)
            self.logger.step(s.step, s.epoch, float(out.loss.detach()), s.scheduler.get_last_lr()[0], batches)
            if c.eval.every_steps and s.step % c.eval.every_steps == 0:
                self._validate(step_fn)
            if c.checkpoint.every_steps and s.step % c.checkpoint.every_steps == 0:
                self.save()
            if s.step == c.train.crash_at_step:
                raise RuntimeError(f"train.crash_at_step={s.step}: simulated crash at step {s.step}")
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
            print(f"step {s.step} validation {self.config.eval.metric} {score:.4f} "
                  f"(best {s.selector.best_score:.4f} at step {s.selector.best_step})", flush=True)

    def _test_selected(self) -> Dict[str, Any]:
        """Loads the checkpoint chosen on validation and evaluates the test split: the only time
        the recipe reads it."""
        selection = self.state.selector.summary()  # before loading: the best checkpoint holds an older history
        self._load_best()
        metrics = self.evaluate("test") if self.config.eval.test else (selection["valid"] or {})
        self.logger.evaluation(metrics, self.state.step)
        self.logger.close()
        return self._write_metrics({**metrics, **selection} if metrics else {}, "final")

    def evaluate(self, split: str) -> Dict[str, Any]:
        """Scores every candidate of ``split`` with the inference path (collective; metrics on rank 0)."""
        c = self.config
        dataset = SequenceDataset(self.data, split, c.data.eval_batch_size, c.data.max_seq_len, self.env.rank,
                                  self.env.world_size, user_id=c.data.user_id)
        # the dataset iterates its own batches: a DataLoader here would draw from the global RNG (dropout's)
        return evaluate_model(self.dmp.module, dataset, self.data.tasks, split, self.env.device)

    def save(self) -> str:
        with self.logger.paused():  # checkpoint time is not training throughput
            return self.state.save(self.ckpt_dir, self.config.checkpoint.keep)

    def _write_metrics(self, metrics: Dict[str, Any], what: str) -> Dict[str, Any]:
        if self.env.is_main:
            write_metrics(self.config.run_dir, what, metrics)
        dist.barrier()
        return metrics

    def evaluate_checkpoint(self, split: str = "test") -> Dict[str, Any]:
        """``dfgr eval``: the best checkpoint (else the latest, loaded by ``setup``) on ``split``."""
        self._load_best()
        return self._write_metrics(self.evaluate(split), "eval")

    def _load_best(self) -> None:
        best = latest_checkpoint(best_checkpoint_dir(self.config.run_dir))
        if best:
            self.state.load(best)

    def cleanup(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="training YAML, e.g. configs/train/dfgr_movielens.yaml")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint of the run")
    parser.add_argument("--split", choices=["valid", "test"], default="test", help="dfgr eval: the split to score")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=0.002 train.epochs=3")


def run_cli(args: argparse.Namespace, eval_only: bool = False) -> Dict[str, Any]:
    recipe = TrainRecipe(load_train_config(args.config, args.overrides))
    try:
        recipe.setup(resume=args.resume or recipe.config.checkpoint.resume or eval_only)
        return recipe.evaluate_checkpoint(args.split) if eval_only else recipe.train()
    finally:
        recipe.cleanup()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dfgr_torchrec.recipes.train", description=__doc__)
    add_arguments(parser)
    parser.add_argument("--eval-only", action="store_true", help="evaluate the latest checkpoint and exit")
    args = parser.parse_args(argv)
    run_cli(args, eval_only=args.eval_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
