"""``dfgr train``: train and evaluate a ranking model with sharded embeddings.

Reads top to bottom: set up the process group, the data, the sharded model and its
optimizers; train, logging every ``log_every`` steps and evaluating every epoch; checkpoint.
Launch it with ``torchrun --nproc_per_node N -m dfgr_torchrec.recipes.train --config ...``, through
TorchX (``launch/dfgr.py:train``), or as one process (``dfgr train --config ...``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from tabulate import tabulate
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from torchrec.optim.clipping import GradientClipping, GradientClippingOptimizer

from dfgr_torchrec.batch import SequenceBatch
from dfgr_torchrec.bench.memory import _status_bytes
from dfgr_torchrec.config import RankingModelConfig, TaskConfig
from dfgr_torchrec.data.config import load_data_config
from dfgr_torchrec.data.dataset import PreparedData, SequenceDataset, make_dataloader
from dfgr_torchrec.data.prepare import prepare, prepared_path
from dfgr_torchrec.distributed.sharding import combined_optimizer, dense_optimizer, shard_model
from dfgr_torchrec.metrics import ranking_metrics
from dfgr_torchrec.models.ranking import DFGRRankingModel, MetaGRRankingModel
from dfgr_torchrec.recipes.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from dfgr_torchrec.recipes.config import TrainConfig, dump_config, load_train_config
from dfgr_torchrec.recipes.distributed import DistEnv, init_distributed

MODELS = {"dfgr": DFGRRankingModel, "metagr": MetaGRRankingModel}
FAIL_AT_STEP = "DFGR_FAIL_AT_STEP"  # test hook: crash right after this global step


# ---------------------------------------------------------------- setup
def setup_data(config: TrainConfig, env: DistEnv) -> PreparedData:
    data_config = load_data_config(config.data.config)
    if env.is_main:
        if data_config.name == "movielens-1m" and not os.path.exists(data_config.source.path):
            from dfgr_torchrec.data.movielens import download_movielens_1m

            download_movielens_1m(os.path.dirname(data_config.source.path))
        prepare(data_config, progress=False)
    dist.barrier()
    return PreparedData(prepared_path(data_config))


def build_model_config(config: TrainConfig, data: PreparedData) -> RankingModelConfig:
    unknown = sorted(set(config.model.task_weights) - set(data.tasks))
    if unknown:
        raise ValueError(f"model.task_weights: unknown task(s) {unknown}; the data has {data.tasks}")
    return RankingModelConfig(
        embeddings=data.embedding_config(config.model.embedding_dim, config.model.merge),
        interaction=config.model.interaction,
        tasks=[TaskConfig(t, config.model.task_weights.get(t, 1.0)) for t in data.tasks],
        head_hidden_dims=list(config.model.head_hidden_dims),
    )


def setup_model(config: TrainConfig, data: PreparedData, env: DistEnv):
    torch.manual_seed(config.train.seed)
    model = MODELS[config.model.type](build_model_config(config, data), device=torch.device("meta"))
    lengths = np.minimum(np.diff(data.offsets), config.data.max_seq_len)
    mean_len = float(lengths.mean()) if len(lengths) else 1.0
    pooling = {"item": [mean_len, 1.0], "action": [mean_len]}  # item_id and cand_item_id; action
    pooling.update({name: [mean_len, 1.0] for name in data.side})
    return shard_model(
        model,
        config.sharding,
        env.device,
        sparse_optimizer=config.optim.sparse_optimizer,
        sparse_lr=config.optim.sparse_lr,
        pooling_factors={k: v for k, v in pooling.items() if k in config.sharding},
    )


def lr_lambda(config: TrainConfig, total_steps: int):
    o = config.optim

    def factor(step: int) -> float:
        if step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        if o.decay == "none" or total_steps <= o.warmup_steps:
            return 1.0
        progress = min(1.0, (step - o.warmup_steps) / (total_steps - o.warmup_steps))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if o.decay == "cosine" else 1.0 - progress
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * shape

    return factor


# ---------------------------------------------------------------- evaluation
@torch.no_grad()  # not inference_mode: fbgemm's fused CPU lookup dispatches through the autograd key
def evaluate(dmp, data: PreparedData, config: TrainConfig, env: DistEnv, split: Optional[str] = None) -> Dict[str, Any]:
    """Scores every candidate of the split with the inference path, gathers them on rank 0, computes metrics."""
    split = split or config.data.eval_split
    ds = SequenceDataset(data, split, config.data.eval_batch_size, config.data.max_seq_len, env.rank, env.world_size)
    model = dmp.module
    model.eval()
    logits, labels, users = [], [], []
    rank_users = ds.rank_users()
    for start in range(0, len(rank_users), ds.batch_size):
        chunk = rank_users[start : start + ds.batch_size]
        batch = ds.make_batch(chunk).to(env.device)
        logits.append(model.score_candidates(batch).values().float().cpu())
        labels.append(batch.candidate_labels.cpu())
        users.append(torch.from_numpy(chunk).repeat_interleave(batch.candidate_lengths.cpu()))
    model.train()
    local = (
        torch.cat(logits) if logits else torch.zeros(0, len(data.tasks)),
        torch.cat(labels) if labels else torch.zeros(0, len(data.tasks)),
        torch.cat(users) if users else torch.zeros(0, dtype=torch.int64),
    )
    gathered: List[Any] = [None] * env.world_size
    dist.all_gather_object(gathered, local)
    if not env.is_main:
        return {}
    all_logits, all_labels, all_users = (torch.cat([g[i] for g in gathered]) for i in range(3))
    return {"split": split, "candidates": int(all_labels.shape[0]), "tasks": ranking_metrics(all_logits, all_labels, all_users, data.tasks)}


def format_metrics(metrics: Dict[str, Any]) -> str:
    rows = [
        [task, m["auc"], m["gauc"], m["logloss"], m["ne"], m["calibration"], m["count"]]
        for task, m in metrics["tasks"].items()
    ]
    return tabulate(rows, headers=["task", "AUC", "GAUC", "log loss", "NE", "calibration", "candidates"], floatfmt=".4f")


# ---------------------------------------------------------------- training
def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        return _status_bytes("VmHWM") / 2**20
    except OSError:
        return float("nan")


def run(config: TrainConfig, eval_only: bool = False) -> Dict[str, Any]:
    env = init_distributed()
    data = setup_data(config, env)
    dmp = setup_model(config, data, env)
    dense = dense_optimizer(dmp, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    clipped = (
        GradientClippingOptimizer(dense, clipping=GradientClipping.NORM, max_gradient=config.optim.grad_clip)
        if config.optim.grad_clip > 0
        else dense
    )
    optimizer = combined_optimizer(dmp, clipped)
    train_ds = SequenceDataset(
        data, "train", config.data.batch_size, config.data.max_seq_len, env.rank, env.world_size,
        seed=config.train.seed, random_window=config.data.random_window,
    )
    steps_per_epoch = len(train_ds)
    total_steps = config.train.max_steps or steps_per_epoch * config.train.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(dense, lr_lambda(config, total_steps))
    run_dir = config.run_dir
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    step, epoch, skip = 0, 0, 0
    resume_from = latest_checkpoint(ckpt_dir) if (config.checkpoint.resume or eval_only) else None
    if resume_from:
        dense.init_state()  # AdamW's state is lazy; it must exist to be loaded in place (weights are loaded after)
        state = {"model": dmp.state_dict(), "optim": optimizer.state_dict()}
        extra, progress = load_checkpoint(resume_from, state)
        dmp.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optim"])
        scheduler.load_state_dict(extra["scheduler"])
        for group, lr in zip(dense.param_groups, scheduler.get_last_lr()):
            group["lr"] = lr
        step, epoch, skip = progress["step"], progress["epoch"], progress["batch_in_epoch"]
        if env.is_main:
            print(f"resumed from {resume_from}: epoch {epoch}, step {step}", flush=True)
    if env.is_main:
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, "config.yaml"), "w") as f:
            f.write(dump_config(config))
    if eval_only:
        return _finish(evaluate(dmp, data, config, env), run_dir, env, "eval")

    pipeline = make_pipeline(config, dmp, optimizer, env)
    fail_at = int(os.environ.get(FAIL_AT_STEP, "0"))
    autocast = env.device.type == "cuda" and config.train.bf16
    log_path = os.path.join(run_dir, "train_log.jsonl")
    writer = SummaryWriter(os.path.join(run_dir, "tensorboard")) if env.is_main else None
    metrics: Optional[Dict[str, Any]] = None  # {} on ranks other than 0 once evaluated
    while epoch < config.train.epochs and (not config.train.max_steps or step < total_steps):
        train_ds.set_epoch(epoch)
        loader = make_dataloader(train_ds, num_workers=config.data.num_workers, pin_memory=env.device.type == "cuda")
        bar = tqdm(total=steps_per_epoch, initial=skip, desc=f"epoch {epoch}", disable=not env.is_main, leave=False)
        window_start, window_loss, window_steps = time.perf_counter(), 0.0, 0
        # resumed mid-epoch: the data order is a function of (seed, epoch), so skip what was done
        batches = _Counting(itertools.islice(iter(loader), skip, None))
        for index in itertools.count(skip):
            with torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=autocast):
                out = pipeline.progress(batches)
            if out is None:
                break
            scheduler.step()
            step += 1
            bar.update(1)
            window_loss += float(out.loss.detach())
            window_steps += 1
            if step % config.train.log_every == 0:
                stats = torch.tensor([window_loss, window_steps, batches.sequences, batches.tokens], dtype=torch.float64)
                dist.all_reduce(stats)
                elapsed = time.perf_counter() - window_start
                record = {
                    "step": step, "epoch": epoch, "loss": stats[0].item() / stats[1].item(),
                    "samples_per_s": stats[2].item() / elapsed, "tokens_per_s": stats[3].item() / elapsed,
                    "lr": scheduler.get_last_lr()[0], "peak_memory_mb": _peak_memory_mb(env.device),
                }
                if env.is_main:
                    bar.set_postfix(loss=f"{record['loss']:.4f}", sps=f"{record['samples_per_s']:.0f}")
                    print(json.dumps(record), flush=True)
                    with open(log_path, "a") as f:
                        f.write(json.dumps(record) + "\n")
                    for key, value in record.items():
                        if key not in ("step", "epoch"):
                            writer.add_scalar(f"train/{key}", value, step)
                window_start, window_loss, window_steps = time.perf_counter(), 0.0, 0
                batches.sequences = batches.tokens = 0
            every = config.checkpoint.every_steps
            if every and step % every == 0:
                _checkpoint(ckpt_dir, step, epoch, index + 1, dmp, optimizer, scheduler, config)
            if fail_at and step == fail_at:
                raise RuntimeError(f"{FAIL_AT_STEP}={fail_at}: simulated crash at step {step}")
            if config.train.max_steps and step >= total_steps:
                break
        bar.close()
        pipeline.end_epoch()
        epoch, skip = epoch + 1, 0
        if not config.checkpoint.every_steps:
            _checkpoint(ckpt_dir, step, epoch, 0, dmp, optimizer, scheduler, config)
        if config.train.eval_every_epochs and epoch % config.train.eval_every_epochs == 0 or epoch >= config.train.epochs:
            pipeline.detach()
            metrics = evaluate(dmp, data, config, env)
            pipeline.attach()
            if env.is_main:
                for task, values in metrics["tasks"].items():
                    for name in ("auc", "gauc", "logloss", "ne", "calibration"):
                        writer.add_scalar(f"{metrics['split']}/{task}/{name}", values[name], step)
                writer.flush()
                if epoch < config.train.epochs:
                    print(f"epoch {epoch} {metrics['split']} metrics:\n{format_metrics(metrics)}", flush=True)
    if writer is not None:
        writer.close()
    if metrics is None:  # resumed after the last evaluation: evaluate (collectively) once more
        pipeline.detach()
        metrics = evaluate(dmp, data, config, env)
    return _finish(metrics, run_dir, env, "final")


class _Counting:
    """Iterates batches, counting the sequences and tokens pulled (the pipeline pulls ahead)."""

    def __init__(self, batches: Iterator[SequenceBatch]) -> None:
        self.batches = batches
        self.sequences = self.tokens = 0

    def __iter__(self) -> "_Counting":
        return self

    def __next__(self) -> SequenceBatch:
        batch = next(self.batches)
        self.sequences += int(batch.history_lengths.numel())
        self.tokens += int(batch.history_lengths.sum())
        return batch


class BaseStep:
    """One plain training step: forward, backward, optimizer step (the fused sparse update runs in backward)."""

    def __init__(self, dmp, optimizer, device: torch.device) -> None:
        self.dmp, self.optimizer, self.device = dmp, optimizer, device

    def progress(self, batches: Iterator[SequenceBatch]):
        try:
            batch = next(batches).to(self.device, non_blocking=True)
        except StopIteration:
            return None
        self.optimizer.zero_grad(set_to_none=True)
        loss, out = self.dmp(batch)
        loss.backward()
        self.optimizer.step()
        return out

    def end_epoch(self) -> None:
        pass

    def detach(self) -> None:
        pass

    def attach(self) -> None:
        pass


class SparseDistStep:
    """TorchRec's TrainPipelineSparseDist: the next batch's embedding input all-to-all overlaps this step."""

    def __init__(self, dmp, optimizer, device: torch.device) -> None:
        from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

        self.dmp = dmp
        self.pipeline = TrainPipelineSparseDist(dmp, optimizer, device, execute_all_batches=True)

    def progress(self, batches: Iterator[SequenceBatch]):
        try:
            return self.pipeline.progress(batches)
        except StopIteration:
            return None

    def end_epoch(self) -> None:
        self.pipeline.reset()  # the next epoch brings a new iterator

    def detach(self) -> None:
        self.pipeline.detach()  # restores the sharded modules' own forward for evaluation

    def attach(self) -> None:
        self.pipeline.attach(self.dmp)


def make_pipeline(config: TrainConfig, dmp, optimizer, env: DistEnv):
    """``sparse_dist`` (the default, ``auto``): our models are FX-traceable down to the sharded
    embedding collection, which is what the pipeline needs; ``base``: a plain loop."""
    if config.train.pipeline == "base":
        return BaseStep(dmp, optimizer, env.device)
    return SparseDistStep(dmp, optimizer, env.device)


def _checkpoint(directory, step, epoch, batch_in_epoch, dmp, optimizer, scheduler, config) -> None:
    state = {"model": dmp.state_dict(), "optim": optimizer.state_dict()}
    progress = {"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch}
    save_checkpoint(directory, step, state, {"scheduler": scheduler.state_dict()}, progress, config.checkpoint.keep)


def _finish(metrics: Dict[str, Any], run_dir: str, env: DistEnv, what: str) -> Dict[str, Any]:
    if env.is_main:
        path = os.path.join(run_dir, f"metrics_{what}.json")
        with open(path, "w") as f:
            json.dump(metrics, f, indent=2)
        print(f"\n{metrics['split']} metrics ({metrics['candidates']} candidates), written to {path}:")
        print(format_metrics(metrics), flush=True)
    dist.barrier()
    return metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="training YAML, e.g. configs/train/dfgr_movielens.yaml")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint of the run")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=0.002 train.epochs=3")


def run_cli(args: argparse.Namespace, eval_only: bool = False) -> Dict[str, Any]:
    config = load_train_config(args.config, args.overrides)
    if args.resume:
        config.checkpoint.resume = True
    try:
        return run(config, eval_only=eval_only)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dfgr_torchrec.recipes.train", description=__doc__)
    add_arguments(parser)
    parser.add_argument("--eval-only", action="store_true", help="evaluate the latest checkpoint and exit")
    args = parser.parse_args(argv)
    run_cli(args, eval_only=args.eval_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
