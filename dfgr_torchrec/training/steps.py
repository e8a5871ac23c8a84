"""Training steps: a plain loop, or TorchRec's TrainPipelineSparseDist (the default)."""

from __future__ import annotations

from typing import Iterator, Optional

import torch

from dfgr_torchrec.batch import SequenceBatch
from dfgr_torchrec.training.config import PIPELINES


class CountingBatches:
    """Iterates batches, counting the sequences and tokens pulled (a pipeline pulls ahead)."""

    def __init__(self, batches: Iterator[SequenceBatch]) -> None:
        self.batches = batches
        self.sequences = self.tokens = 0

    def __iter__(self) -> "CountingBatches":
        return self

    def __next__(self) -> SequenceBatch:
        batch = next(self.batches)
        self.sequences += int(batch.history_lengths.numel())
        self.tokens += int(batch.history_lengths.sum())
        return batch

    def reset_counts(self) -> None:
        self.sequences = self.tokens = 0


class BaseStep:
    """One plain training step: forward, backward, optimizer step (the fused sparse update runs in backward)."""

    def __init__(self, dmp, optimizer, device: torch.device) -> None:
        self.dmp, self.optimizer, self.device = dmp, optimizer, device

    def progress(self, batches: Iterator[SequenceBatch]):
        """Trains on the next batch; returns the model's output, or None when ``batches`` is done."""
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


class SparseDistStep(BaseStep):
    """TorchRec's TrainPipelineSparseDist: the next batch's embedding input all-to-all overlaps this step."""

    def __init__(self, dmp, optimizer, device: torch.device) -> None:
        from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

        super().__init__(dmp, optimizer, device)
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
        self.pipeline.attach(self.dmp, sparse_dist=False)  # the in-flight batches are already distributed


def make_step(pipeline: str, dmp, optimizer, device: torch.device, name: Optional[str] = None) -> BaseStep:
    """``sparse_dist`` (and ``auto``): our models are FX-traceable down to the sharded embedding
    collection, which is what the pipeline needs; ``base``: a plain loop."""
    if pipeline not in PIPELINES:
        raise ValueError(f"train.pipeline: expected one of {PIPELINES}, got {pipeline!r}")
    return BaseStep(dmp, optimizer, device) if pipeline == "base" else SparseDistStep(dmp, optimizer, device)
