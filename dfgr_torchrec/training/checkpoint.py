"""Checkpoints of the sharded model, both optimizers, the scheduler, data position and RNG states.

Written with ``torch.distributed.checkpoint`` (each rank writes its own shards) into
``<run>/checkpoints/.tmp-step-N`` and renamed to ``step-N`` by rank 0 once every rank is done,
so a crash mid-write never leaves a checkpoint that loads wrong: an unfinished one has no
final name. The last ``keep`` are kept.

Before the rename rank 0 writes ``manifest.json`` (size and blake2b of every file), so a
checkpoint damaged later (a truncated or deleted file) is recognised before it is loaded:
:func:`newest_intact_checkpoint` then falls back to the previous one, saying which file is bad.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
from typing import Any, Dict, Optional, Tuple

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from dfgr_torchrec.errors import RunError
from dfgr_torchrec.training.manifest import write_manifest
from dfgr_torchrec.training.safe_dcp import UnsafeCheckpoint, safe_load

_NAME = re.compile(r"^step-(\d+)$")


def latest_checkpoint(directory: str) -> Optional[str]:
    if not os.path.isdir(directory):
        return None
    steps = [(int(m.group(1)), name) for name in os.listdir(directory) if (m := _NAME.match(name))]
    return os.path.join(directory, max(steps)[1]) if steps else None


def _write_error(path: str, error: BaseException) -> RunError:
    """A failed checkpoint write, said plainly (torch's zip writer reports a full disk as an enforce failure)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    code = getattr(error, "errno", None)
    try:
        full = shutil.disk_usage(os.path.dirname(path) or ".").free < 1 << 20
    except OSError:
        full = False
    if code == errno.ENOSPC or "No space left" in text or full:
        return RunError(f"cannot write checkpoint {path}: no space left on device ({text})")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return RunError(f"cannot write checkpoint {path}: the folder is not writable ({text})")
    return RunError(f"cannot write checkpoint {path}: {text}")


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
    failed = _agree(_try(lambda: _fresh_folder(tmp)) if rank == 0 else None)
    if failed is None:  # every rank writes its shards and RNG state (DCP reports any rank's failure to all)
        failed = _agree(
            _try(lambda: (dcp.save(state, checkpoint_id=tmp), torch.save(_rng_state(), _rng_path(tmp, rank))))
        )
    if failed is None:
        failed = _agree(
            _try(lambda: _finish(tmp, final, extra, {**progress, "world_size": world})) if rank == 0 else None
        )
    if failed is not None:
        error = _write_error(tmp, failed)
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)  # frees the space a full disk needs
        raise error
    if rank == 0:
        _prune(directory, keep)
    dist.barrier()
    return final


def _fresh_folder(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)


def _rng_path(path: str, rank: int) -> str:
    return os.path.join(path, f"rng-rank{rank}.pt")


def _finish(tmp: str, final: str, extra: Dict[str, Any], progress: Dict[str, Any]) -> None:
    """Rank 0, once every rank has written its shards: the small files, the manifest, the rename."""
    torch.save(extra, os.path.join(tmp, "extra.pt"))
    with open(os.path.join(tmp, "progress.json"), "w") as f:
        json.dump(progress, f)
    write_manifest(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)


def _try(fn) -> Optional[BaseException]:
    try:
        fn()
    except (OSError, RuntimeError) as e:  # torch's writers raise RuntimeError for I/O errors
        return e
    except CheckpointException as e:  # a BaseException whose text is a traceback: keep the cause
        return next((exc for exc, _ in e.failures.values()), RuntimeError("DCP failed"))
    return None


def _agree(error: Optional[BaseException]) -> Optional[BaseException]:
    """Collective: the first rank's error (as seen by every rank), or None if no rank failed."""
    errors: list = [None] * dist.get_world_size()
    dist.all_gather_object(
        errors, None if error is None else (type(error).__name__, str(error), getattr(error, "errno", None))
    )
    for found in errors:
        if found is not None:
            name, text, code = found
            return error if error is not None else OSError(code, text) if code else RuntimeError(f"{name}: {text}")
    return None


def load_checkpoint(
    path: str, state: Dict[str, Any], weights_only: bool = False
) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Loads ``path`` into ``state`` in place (collective); returns ``(extra, progress)``.

    ``weights_only`` (evaluation: ``state`` holds the model alone): no data position nor RNG
    state is read, so any number of processes may load it (DCP reshards the tables).
    """
    with open(os.path.join(path, "progress.json")) as f:
        progress = json.load(f)
    world = dist.get_world_size()
    if progress["world_size"] != world and not weights_only:
        raise RunError(
            f"{path} was written by {progress['world_size']} processes and this run has {world}: the data "
            f"position and RNG states are per rank, so resume with {progress['world_size']} processes "
            f"(the sharded weights alone would reshard, but the run would not continue exactly)"
        )
    try:
        safe_load(state, path)
    except CheckpointException as e:
        cause = next((exc for exc, _ in e.failures.values()), e)
        raise RunError(f"cannot load checkpoint {path}: {type(cause).__name__}: {str(cause).splitlines()[0]}") from None
    if weights_only:
        return {}, progress
    _set_rng_state(_load_plain(_rng_path(path, dist.get_rank())))
    return _load_plain(os.path.join(path, "extra.pt")), progress


def _load_plain(path: str) -> Any:
    """A small ``torch.save`` file of tensors and plain values, loaded without unpickling code."""
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpoint(f"{path}: refused to load: {str(e).splitlines()[0]} (nothing from it was run)") from None


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
