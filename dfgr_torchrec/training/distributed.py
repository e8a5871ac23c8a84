"""Process-group setup from the torchrun environment (a single process works too)."""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistEnv:
    """NCCL on GPU, gloo on CPU; without torchrun variables, a world of one (an in-memory store:
    no port, and nothing written to ``os.environ`` for a later subprocess to inherit)."""
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
        dist.init_process_group(backend, store=store, rank=rank, world_size=world)
    return DistEnv(rank=rank, world_size=world, local_rank=local, device=device)


# Benign on every setup this package builds, and printed by every rank: they would bury the metrics.
_KNOWN_LOG_MESSAGES = {
    "torchrec.distributed.planner.types": "The topology was constructed directly",
    "torchrec.distributed.planner.storage_reservations": "There is a known issue with TorchRec's dense tensor size",
    "torch.fx._symbolic_trace": "is_fx_tracing will return true",
}
_KNOWN_WARNINGS = (
    "HeuristicalStorageReservation is known to cause issues",
    "`broadcast_buffers` is deprecated",
    "Please use DTensor instead and we are deprecating ShardedTensor",  # TorchRec's tables are ShardedTensors
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
