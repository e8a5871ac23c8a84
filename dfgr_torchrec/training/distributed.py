"""Process-group setup from the torchrun environment (a single process works too)."""

from __future__ import annotations

import logging
import os
import re
import socket
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
    """NCCL on GPU, gloo on CPU; without torchrun variables, a world of one on a free local port."""
    quiet_known_warnings()
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world)
    return DistEnv(rank=rank, world_size=world, local_rank=local, device=device)


# Benign on every setup this package builds, and printed by every rank: they would bury the metrics.
_KNOWN_LOG_MESSAGES = {
    "torchrec.distributed.planner.types": "The topology was constructed directly",
    "torchrec.distributed.planner.storage_reservations": "There is a known issue with TorchRec's dense tensor size",
    "torch.fx._symbolic_trace": "is_fx_tracing will return true",
}
_KNOWN_WARNINGS = ("HeuristicalStorageReservation is known to cause issues", "`broadcast_buffers` is deprecated")


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
