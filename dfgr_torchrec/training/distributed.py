"""Process-group setup from the torchrun environment (a single process works too)."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.distributed as dist

from dfgr_torchrec.errors import RunError


@dataclass
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(timeout_s: float = 300.0) -> DistEnv:
    """NCCL on GPU, gloo on CPU; without torchrun variables, a world of one (an in-memory store:
    no port, and nothing written to ``os.environ`` for a later subprocess to inherit).

    A collective that waits more than ``timeout_s`` (a rank stopped or stuck) raises instead of
    hanging for the backend's default (30 minutes with gloo): see :func:`collective_errors`."""
    quiet_known_warnings()
    launched = "RANK" in os.environ
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        store = None if launched else dist.HashStore()
        timeout = datetime.timedelta(seconds=timeout_s)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
    return DistEnv(rank=rank, world_size=world, local_rank=local, device=device)


def patient_barrier() -> None:
    """A barrier without the collective timeout, for waits that are long by design (rank 0
    downloading and preparing a data set while the others wait)."""
    if dist.get_world_size() == 1:
        return
    dist.barrier(group=dist.new_group(backend="gloo", timeout=datetime.timedelta(days=1)))


# what gloo and NCCL say when a collective timed out or its peer went away (compared in lower case)
_LOST = ("timed out", "timeout", "connection closed", "connection reset", "pair closure")


@contextlib.contextmanager
def collective_errors(rank: int, timeout_s: float, step: Callable[[], int]) -> Iterator[None]:
    """Turns a collective that timed out, or lost its peer, into a :class:`RunError` naming this
    rank and the step it was at (instead of a gloo/NCCL traceback)."""
    try:
        yield
    except RuntimeError as e:
        if isinstance(e, RunError) or not any(word in str(e).lower() for word in _LOST):
            raise
        raise RunError(
            f"rank {rank}, after step {step()}: a collective got no answer within train.collective_timeout_s="
            f"{timeout_s:g} s (another rank stopped or is stuck; its own log says why): ending the job"
        ) from None


def fault_hooks(step: int, crash_at: int, stall_at: int, env: DistEnv, resumed: bool = False) -> None:
    """Test hooks: ``testing.crash_at_step`` raises on every rank, ``testing.stall_at_step`` puts the
    last rank to sleep for an hour (the others' next collective then times out). Only in a run
    that started fresh: a restarted job resumes past them, as it would past a real fault."""
    if resumed:
        return
    if step == crash_at:
        raise RuntimeError(f"testing.crash_at_step={step}: simulated crash at step {step}")
    if step == stall_at and env.rank == env.world_size - 1:
        time.sleep(3600)


# Library warnings that are not ours to fix, printed by every rank (they would bury the metrics).
# The planner's (topology built directly, dense tensor size unknown) are fixed at their cause in
# distributed.sharding.make_planner instead.
_KNOWN_LOG_MESSAGES = {
    # TrainPipelineSparseDist traces the model with torch.fx, and fx warns that is_fx_tracing()
    # answers True while it does: our models never branch on it, so the traced graph is the eager one
    "torch.fx._symbolic_trace": "is_fx_tracing will return true",
}
_KNOWN_WARNINGS = (
    # TorchRec's DistributedModelParallel wraps the dense layers in DDP passing broadcast_buffers;
    # we do not set it (our modules have no buffers to broadcast)
    "`broadcast_buffers` is deprecated",
    # TorchRec's sharded tables are ShardedTensors (its choice); DCP saves and loads them either way
    "Please use DTensor instead and we are deprecating ShardedTensor",
)


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_known_warnings() -> None:
    """Silences the library warnings listed above (and only those); idempotent."""
    for name, prefix in _KNOWN_LOG_MESSAGES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(_DropMessage(prefix))
    for message in _KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(message), category=FutureWarning)
