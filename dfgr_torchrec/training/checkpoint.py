"""Checkpoints of the sharded model, both optimizers, the scheduler, data position and RNG states.

Written with ``torch.distributed.checkpoint`` (each rank writes its own shards) into
``<run>/checkpoints/.tmp-step-N`` and renamed to ``step-N`` by rank 0 once every rank is done,
so a crash mid-write never leaves a checkpoint that loads wrong: an unfinished one has no
final name. The last ``keep`` are kept.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any, Dict, Optional, Tuple

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

_NAME = re.compile(r"^step-(\d+)$")


def latest_checkpoint(directory: str) -> Optional[str]:
    if not os.path.isdir(directory):
        return None
    steps = [(int(m.group(1)), name) for name in os.listdir(directory) if (m := _NAME.match(name))]
    return os.path.join(directory, max(steps)[1]) if steps else None


def save_checkpoint(
    directory: str, step: int, state: Dict[str, Any], extra: Dict[str, Any], progress: Dict[str, Any], keep: int
) -> str:
    """Collective: every rank calls it. Returns the checkpoint's final path.

    ``state`` (sharded tensors: model, optimizers) goes through DCP; ``extra`` (small picklable
    state identical on every rank, e.g. the scheduler) is saved once by rank 0.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    tmp = os.path.join(directory, f".tmp-step-{step}")
    final = os.path.join(directory, f"step-{step}")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    dist.barrier()
    dcp.save(state, checkpoint_id=tmp)
    torch.save(_rng_state(), os.path.join(tmp, f"rng-rank{rank}.pt"))
    dist.barrier()
    if rank == 0:
        torch.save(extra, os.path.join(tmp, "extra.pt"))
        with open(os.path.join(tmp, "progress.json"), "w") as f:
            json.dump({**progress, "world_size": world}, f)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        _prune(directory, keep)
    dist.barrier()
    return final


def load_checkpoint(path: str, state: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Loads ``path`` into ``state`` in place (collective); returns ``(extra, progress)``."""
    with open(os.path.join(path, "progress.json")) as f:
        progress = json.load(f)
    world = dist.get_world_size()
    if progress["world_size"] != world:
        raise RuntimeError(
            f"{path} was written by {progress['world_size']} processes and this run has {world}: the data "
            f"position and RNG states are per rank, so resume with {progress['world_size']} processes "
            f"(the sharded weights alone would reshard, but the run would not continue exactly)"
        )
    dcp.load(state, checkpoint_id=path)
    rng_path = os.path.join(path, f"rng-rank{dist.get_rank()}.pt")
    _set_rng_state(torch.load(rng_path, weights_only=False))
    return torch.load(os.path.join(path, "extra.pt"), weights_only=False), progress


def _rng_state() -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _prune(directory: str, keep: int) -> None:
    steps = sorted((int(m.group(1)), name) for name in os.listdir(directory) if (m := _NAME.match(name)))
    for _, name in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
