"""``dfgr train``: train and evaluate a registered ranking model with sharded embeddings.

Reads top to bottom: :meth:`TrainRecipe.setup` (process group, data, sharded model, train
state, resume), :meth:`~TrainRecipe.train` (epochs of steps, logging, checkpoints, evaluation),
:meth:`~TrainRecipe.evaluate`, :meth:`~TrainRecipe.cleanup`. Launch it with ``torchrun
--nproc_per_node N -m dfgr_torchrec.recipes.train --config ...``, through TorchX
(``launch/dfgr.py:train``), or as one process (``dfgr train --config ...``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist

from dfgr_torchrec.data.config import load_data_config
from dfgr_torchrec.data.dataset import PreparedData, SequenceDataset, make_dataloader
from dfgr_torchrec.data.prepare import prepare, prepared_path
from dfgr_torchrec.data.sources import ensure_source
from dfgr_torchrec.distributed.sharding import shard_model, table_pooling_factors
from dfgr_torchrec.models import build_model
from dfgr_torchrec.recipes.config import TrainConfig, dump_config, load_train_config
from dfgr_torchrec.training.distributed import init_distributed
from dfgr_torchrec.training.evaluation import evaluate
from dfgr_torchrec.training.logger import TrainLogger, progress_bar
from dfgr_torchrec.training.report import format_metrics
from dfgr_torchrec.training.state import TrainState, checkpoint_dir
from dfgr_torchrec.training.steps import CountingBatches, make_step


class TrainRecipe:
    """One training run of ``config``; every method is collective (all ranks call it)."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.ckpt_dir = checkpoint_dir(config.run_dir)

    def setup(self, resume: bool = False) -> None:
        c = self.config
        self.env = init_distributed()
        self.data = self._prepare_data()
        torch.manual_seed(c.train.seed)
        model = build_model(c.model, self.data.schema, device=torch.device("meta"))
        pooling = table_pooling_factors(model, self.data.mean_history_length(c.data.max_seq_len))
        self.dmp = shard_model(
            model, c.sharding, self.env.device, sparse_optimizer=c.optim.sparse_optimizer, sparse_lr=c.optim.sparse_lr,
            pooling_factors={table: pooling[table] for table in c.sharding if table in pooling},
        )
        self.train_data = SequenceDataset(
            self.data, "train", c.data.batch_size, c.data.max_seq_len, self.env.rank, self.env.world_size,
            seed=c.train.seed, random_window=c.data.random_window,
        )
        self.steps_per_epoch = len(self.train_data)
        self.total_steps = c.train.max_steps or self.steps_per_epoch * c.train.epochs
        self.state = TrainState(self.dmp, c.optim, self.total_steps)
        latest = self.state.latest(self.ckpt_dir) if resume else None
        if latest:
            self.load(latest)
        if self.env.is_main:
            os.makedirs(c.run_dir, exist_ok=True)
            with open(os.path.join(c.run_dir, "config.yaml"), "w") as f:
                f.write(dump_config(c))

    def _prepare_data(self) -> PreparedData:
        data_config = load_data_config(self.config.data.config)
        if self.env.is_main:
            ensure_source(data_config)
            prepare(data_config, progress=False)
        dist.barrier()
        return PreparedData(prepared_path(data_config))

    def train(self) -> Dict[str, Any]:
        """Trains to the configured end; returns the final metrics (rank 0; ``{}`` elsewhere)."""
        c, s = self.config, self.state
        step_fn = make_step(c.train.pipeline, self.dmp, s.optimizer, self.env.device)
        logger = TrainLogger(c.run_dir, c.train.log_every, self.env.device, self.env.is_main)
        metrics: Optional[Dict[str, Any]] = None
        while s.epoch < c.train.epochs and s.step < self.total_steps:
            self._train_epoch(step_fn, logger)
            step_fn.end_epoch()
            s.epoch, s.batch_in_epoch = s.epoch + 1, 0
            if not c.checkpoint.every_steps:
                self.save()
            every = c.train.eval_every_epochs
            if (every and s.epoch % every == 0) or s.epoch >= c.train.epochs:
                with logger.paused():
                    step_fn.detach()
                    metrics = self.evaluate()
                    step_fn.attach()
                logger.evaluation(metrics, s.step)
                if self.env.is_main and s.epoch < c.train.epochs:
                    print(f"epoch {s.epoch} {metrics['split']} metrics:\n{format_metrics(metrics)}", flush=True)
        logger.close()
        if metrics is None:  # resumed after the last evaluation: evaluate once more
            step_fn.detach()
            metrics = self.evaluate()
        return self._write_metrics(metrics, "final")

    def _train_epoch(self, step_fn, logger: TrainLogger) -> None:
        c, s = self.config, self.state
        self.train_data.set_epoch(s.epoch)
        loader = make_dataloader(self.train_data, c.data.num_workers, pin_memory=self.env.device.type == "cuda")
        # resumed mid-epoch: the data order is a function of (seed, epoch), so skip what was done
        batches = CountingBatches(itertools.islice(iter(loader), s.batch_in_epoch, None))
        bar = progress_bar(self.steps_per_epoch, s.batch_in_epoch, f"epoch {s.epoch}", self.env.is_main)
        autocast = self.env.device.type == "cuda" and c.train.bf16
        while s.step < self.total_steps:
            with torch.autocast(self.env.device.type, dtype=torch.bfloat16, enabled=autocast):
                out = step_fn.progress(batches)
            if out is None:
                break
            s.scheduler.step()
            s.step, s.batch_in_epoch = s.step + 1, s.batch_in_epoch + 1
            bar.update(1)
            record = logger.step(s.step, s.epoch, float(out.loss.detach()), s.scheduler.get_last_lr()[0], batches)
            if record is not None:
                bar.set_postfix(loss=f"{record['loss']:.4f}")
            if c.checkpoint.every_steps and s.step % c.checkpoint.every_steps == 0:
                self.save()
            if s.step == c.train.crash_at_step:
                raise RuntimeError(f"train.crash_at_step={s.step}: simulated crash at step {s.step}")
        bar.close()

    def evaluate(self, split: Optional[str] = None) -> Dict[str, Any]:
        """Scores every candidate of ``split`` (default ``data.eval_split``) with the inference path."""
        c = self.config
        split = split or c.data.eval_split
        dataset = SequenceDataset(
            self.data, split, c.data.eval_batch_size, c.data.max_seq_len, self.env.rank, self.env.world_size
        )
        model = self.dmp.module
        model.eval()
        # the dataset iterates its own batches: a DataLoader here would draw from the global RNG (dropout's)
        metrics = evaluate(model.score_candidates, dataset, self.data.tasks, split, self.env.device)
        model.train()
        return metrics

    def save(self) -> str:
        return self.state.save(self.ckpt_dir, self.config.checkpoint.keep)

    def load(self, path: str) -> None:
        self.state.load(path)
        if self.env.is_main:
            print(f"resumed from {path}: epoch {self.state.epoch}, step {self.state.step}", flush=True)

    def _write_metrics(self, metrics: Dict[str, Any], what: str) -> Dict[str, Any]:
        if self.env.is_main:
            path = os.path.join(self.config.run_dir, f"metrics_{what}.json")
            with open(path, "w") as f:
                json.dump(metrics, f, indent=2)
            print(f"\n{metrics['split']} metrics ({metrics['candidates']} candidates), written to {path}:")
            print(format_metrics(metrics), flush=True)
        dist.barrier()
        return metrics

    def evaluate_checkpoint(self) -> Dict[str, Any]:
        """``dfgr eval``: the metrics of the state loaded by ``setup(resume=True)``."""
        return self._write_metrics(self.evaluate(), "eval")

    def cleanup(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="training YAML, e.g. configs/train/dfgr_movielens.yaml")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint of the run")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=0.002 train.epochs=3")


def run_cli(args: argparse.Namespace, eval_only: bool = False) -> Dict[str, Any]:
    recipe = TrainRecipe(load_train_config(args.config, args.overrides))
    try:
        recipe.setup(resume=args.resume or recipe.config.checkpoint.resume or eval_only)
        return recipe.evaluate_checkpoint() if eval_only else recipe.train()
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
