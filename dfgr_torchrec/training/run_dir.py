"""The run directory ``<output_dir>/<name>``: what a new run, a resume and an evaluation expect to find
there, checked on every rank before anything is set up (no torch, no data), so a mistake costs
well under a second and names the folder.

* a new run needs an unused directory (or ``train.overwrite=true``, which clears it);
* ``--resume`` needs an intact checkpoint, and a config that agrees with the run's saved
  ``config.yaml`` on what the checkpoint depends on (:data:`RESUME_KEYS`);
* ``checkpoint.resume=auto`` resumes when there is a checkpoint, else starts afresh;
* ``dfgr eval`` needs a checkpoint: ``--checkpoint PATH``, else the best, else the latest;
* one job at a time: rank 0 locks the directory first (:mod:`dfgr_torchrec.training.run_lock`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import yaml

from dfgr_torchrec.errors import RunError
from dfgr_torchrec.training.manifest import checkpoint_problem, newest_intact_checkpoint
from dfgr_torchrec.training.run_lock import lock_run

# What a run leaves in its directory (a directory holding any of them is used).
RUN_FILES = (
    "checkpoints",
    "best",
    "train_log.jsonl",
    "tensorboard",
    "metrics_final.json",
    "metrics_eval.json",
    "config.yaml",
)
# Config keys a checkpoint depends on: its tensors' shapes (model, the data's tables) and its data
# position (batch size and seed order the batches; the position counts batches).
RESUME_KEYS = ("model", "data.config", "data.user_id", "data.batch_size", "train.seed")


class RunDirectory:
    def __init__(self, run_dir: str, say: Callable[[str], None] = print) -> None:
        self.path, self.say = run_dir, say
        self.checkpoints = os.path.join(run_dir, "checkpoints")
        self.best = os.path.join(run_dir, "best")
        self.config_path = os.path.join(run_dir, "config.yaml")

    def used(self) -> List[str]:
        return [name for name in RUN_FILES if os.path.exists(os.path.join(self.path, name))]

    def start(self, mode: str, config: Dict[str, Any], overwrite: bool = False) -> Optional[str]:
        """``mode`` fresh | resume | auto: the checkpoint to resume from (None: start afresh)."""
        if mode in ("resume", "auto"):
            found = newest_intact_checkpoint(self.checkpoints, self.say)
            if found:
                self.check_same_config(config)
                return found
            if mode == "resume":
                where = self.checkpoints if os.path.isdir(self.path) else f"{self.path} (no such run directory)"
                raise RunError(
                    f"--resume: no checkpoint in {where}; check name= and output_dir=, "
                    f"or start the run without --resume"
                )
            return None
        used = self.used()
        if used and not overwrite:
            raise RunError(
                f"{self.path} already holds a run ({', '.join(used)}): continue it with --resume, "
                f"replace it with train.overwrite=true, or choose another name="
            )
        return None

    def evaluation_checkpoint(self, checkpoint: Optional[str] = None) -> str:
        """``dfgr eval``: ``checkpoint`` if given and intact, else the run's best, else its latest."""
        if checkpoint:
            if not os.path.isdir(checkpoint):
                raise RunError(f"--checkpoint {checkpoint}: no such checkpoint folder")
            problem = checkpoint_problem(checkpoint)
            if problem:
                raise RunError(f"--checkpoint {checkpoint} is damaged: {problem}")
            return checkpoint
        found = newest_intact_checkpoint(self.best, self.say) or newest_intact_checkpoint(self.checkpoints, self.say)
        if not found:
            raise RunError(
                f"nothing to evaluate: no checkpoint in {self.best} nor {self.checkpoints}; "
                f"train the run first (check name= and output_dir=) or pass --checkpoint PATH"
            )
        return found

    def check_same_config(self, config: Dict[str, Any]) -> None:
        """Raises naming the first :data:`RESUME_KEYS` value that differs from the saved config."""
        if not os.path.exists(self.config_path):
            return
        with open(self.config_path) as f:
            saved = yaml.safe_load(f) or {}
        for key in RESUME_KEYS:
            for path, old, new in _differences(_get(saved, key), _get(config, key), key):
                raise RunError(
                    f"cannot resume {self.path}: {path} is {new!r} here but {old!r} in {self.config_path}, "
                    f"and its checkpoint depends on it; set it back, or start a new run "
                    f"(another name=, or train.overwrite=true)"
                )

    def prepare(self, clear: bool) -> None:
        """Every rank, before the process group: creates the directory and checks it is writable;
        ``clear`` (a new run that may replace a used directory) removes what a run leaves there (rank 0)."""
        if clear and int(os.environ.get("RANK", 0)) == 0:
            for name in self.used():
                target = os.path.join(self.path, name)
                shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)
        probe = os.path.join(self.path, f".write-test-{os.getpid()}")
        try:
            os.makedirs(self.path, exist_ok=True)
            with open(probe, "w") as f:
                f.write("ok")
            os.remove(probe)
        except OSError as e:
            raise RunError(
                f"the run directory {self.path} is not writable ({e.strerror or e}): "
                f"choose another output_dir= or fix its permissions"
            ) from None


def _get(tree: Any, key: str) -> Any:
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _differences(old: Any, new: Any, path: str):
    """The keys of ``new`` whose value differs in ``old`` (a key only ``old`` has is one this version
    no longer reads for the run's model type, so its checkpoint cannot depend on it)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(new):
            yield from _differences(old.get(key), new.get(key), f"{path}.{key}")
    elif old != new:
        yield path, old, new


@dataclass
class OpenedRun:
    """What :func:`open_run` found: the mode, and the checkpoint to load (None: a new run)."""

    mode: str
    checkpoint: Optional[str]


def open_run(
    run_dir: str, mode: str, config: Dict[str, Any], overwrite: bool = False, checkpoint: Optional[str] = None
) -> OpenedRun:
    """Every rank, before the process group and any set-up. ``mode``: fresh | resume | auto | eval.
    Raises :class:`RunError` when the directory does not hold what the mode needs."""
    rank0 = int(os.environ.get("RANK", 0)) == 0
    say = print if rank0 else (lambda message: None)
    run = RunDirectory(run_dir, lambda message: say(message) or None)
    if rank0:  # before any check, so two jobs cannot both find the directory unused
        _lock(run_dir, mode)
    start = run.evaluation_checkpoint(checkpoint) if mode == "eval" else run.start(mode, config, overwrite)
    run.prepare(clear=mode != "eval" and start is None)
    return OpenedRun(mode, start)


def _lock(run_dir: str, mode: str) -> None:
    """Rank 0's lock of the run directory; a directory it cannot write (a read-only copy to
    evaluate) is not locked, and :meth:`RunDirectory.prepare` names any problem that matters."""
    try:
        if mode in ("fresh", "auto"):
            os.makedirs(run_dir, exist_ok=True)
        if os.path.isdir(run_dir):
            lock_run(run_dir, "evaluation" if mode == "eval" else "training run")
    except OSError:
        return
