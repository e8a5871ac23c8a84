"""What a training run reports: windowed train metrics to stdout, ``train_log.jsonl`` and TensorBoard.

Progress bars only when stdout is a terminal; otherwise (TorchX, Slurm, a pipe) one line every
``log_every`` steps, so a job's log is mostly metrics.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any, Dict, Iterator, Optional

import torch
import torch.distributed as dist
from tqdm import tqdm

from dfgr_torchrec.progress import progress
from dfgr_torchrec.training.memory import peak_memory_mb
from dfgr_torchrec.training.steps import CountingBatches


def truncate_log(path: str, step: int) -> None:
    """Keeps the records of ``path`` (JSON lines) up to ``step``: a resumed run logs the rest again."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            pass  # a line cut short by the kill
    with open(path + ".tmp", "w") as f:
        f.writelines(kept)
    os.replace(path + ".tmp", path)


def progress_bar(total: int, initial: int, desc: str, enabled: bool) -> tqdm:
    """A tqdm bar when ``enabled`` and stderr is a TTY; a silent one otherwise."""
    return progress(total=total, initial=initial, desc=desc, leave=False, enabled=enabled)


class TrainLogger:
    """Collects the loss over a window of steps; every ``log_every`` steps reduces it over ranks and
    writes one record to every sink (rank 0): a stdout line, ``train_log.jsonl``, TensorBoard."""

    def __init__(
        self, run_dir: str, log_every: int, device: torch.device, is_main: bool, resumed_step: Optional[int] = None
    ) -> None:
        """``resumed_step``: the run continues from a checkpoint of that step, so what the killed
        run logged after it is dropped (``train_log.jsonl``) or purged (TensorBoard) and logged again."""
        from torch.utils.tensorboard import SummaryWriter

        self.log_every, self.device, self.is_main = log_every, device, is_main
        self.jsonl_path = os.path.join(run_dir, "train_log.jsonl")
        if is_main and resumed_step is not None:
            truncate_log(self.jsonl_path, resumed_step)
        purge = None if resumed_step is None else resumed_step + 1
        self.writer = SummaryWriter(os.path.join(run_dir, "tensorboard"), purge_step=purge) if is_main else None
        self._restart()

    def _restart(self) -> None:
        self.window_start, self.window_loss, self.window_steps = time.perf_counter(), 0.0, 0

    def step(self, step: int, epoch: int, loss: float, lr: float, batches: CountingBatches) -> Optional[Dict[str, Any]]:
        """Adds one step; at a logging step (collective on every rank) returns the record written."""
        self.window_loss += loss
        self.window_steps += 1
        if step % self.log_every != 0:
            return None
        stats = torch.tensor(
            [self.window_loss, self.window_steps, batches.sequences, batches.tokens],
            dtype=torch.float64,
            device=self.device,
        )
        dist.all_reduce(stats)
        # each rank's peak: the sharded tables and the data loader differ per rank
        peaks = [torch.zeros(1, dtype=torch.float64, device=self.device) for _ in range(dist.get_world_size())]
        dist.all_gather(peaks, torch.tensor([peak_memory_mb(self.device)], dtype=torch.float64, device=self.device))
        per_rank = [round(p.item(), 1) for p in peaks]
        elapsed = time.perf_counter() - self.window_start
        record = {
            "step": step,
            "epoch": epoch,
            "loss": stats[0].item() / stats[1].item(),
            "samples_per_s": stats[2].item() / elapsed,
            "tokens_per_s": stats[3].item() / elapsed,
            "lr": lr,
            "peak_memory_mb": max(per_rank),
            "peak_memory_mb_per_rank": per_rank,
        }
        if self.is_main:
            self._write(record)
        self._restart()
        batches.reset_counts()
        return record

    def _write(self, record: Dict[str, Any]) -> None:
        print(
            f"step {record['step']} epoch {record['epoch']} loss {record['loss']:.4f} lr {record['lr']:.2e} "
            f"{record['samples_per_s']:.0f} seq/s {record['tokens_per_s']:.0f} tok/s "
            f"peak {record['peak_memory_mb']:.0f} MB (max over ranks)",
            flush=True,
        )
        with open(self.jsonl_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key not in ("step", "epoch", "peak_memory_mb_per_rank"):
                self.writer.add_scalar(f"train/{key}", value, record["step"])

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside (evaluation, checkpoints) does not count against throughput."""
        start = time.perf_counter()
        yield
        self.window_start += time.perf_counter() - start

    def evaluation(self, metrics: Dict[str, Any], step: int) -> None:
        """Evaluation metrics to TensorBoard as ``<split>/<task>/<metric>`` (rank 0)."""
        if not self.is_main:
            return
        for task, values in metrics["tasks"].items():
            for name in ("auc", "gauc", "logloss", "ne", "calibration"):
                self.writer.add_scalar(f"{metrics['split']}/{task}/{name}", values[name], step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
