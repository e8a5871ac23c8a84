"""Model selection on the validation split: keep the best checkpoint, stop early.

The score of an evaluation is the mean over tasks of one metric (tasks where it is undefined,
e.g. an AUC with no positive candidate, are left out of the mean); higher is better (for
``logloss`` and ``ne`` the sign is flipped).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Literal, Optional, Union

from dfgr_torchrec.config import check

METRICS = {"auc": 1.0, "gauc": 1.0, "logloss": -1.0, "ne": -1.0}  # metric -> sign (higher score is better)


@dataclass
class EvalConfig:
    """Args: ``every_steps`` validate every N steps (0: at each epoch's end; ``auto``: about ten
    times a run, :func:`~dfgr_torchrec.training.length.auto_eval_every`; the best point is often
    inside the first epoch); ``metric`` the selection metric (mean over tasks); ``patience``
    stop after this many validations without an improvement of more than ``min_delta`` (0: never);
    ``test``: score the selected checkpoint on the test split at the end (a grid search turns it
    off for the points it does not choose: ``dfgr eval --split test`` scores the chosen one later)."""

    every_steps: Union[int, Literal["auto"]] = "auto"
    metric: str = "auc"
    patience: int = 0
    min_delta: float = 0.0
    test: bool = True

    def __post_init__(self) -> None:
        check(
            self.every_steps == "auto" or (isinstance(self.every_steps, int) and self.every_steps >= 0),
            "every_steps",
            "an integer >= 0 or auto",
            self.every_steps,
        )
        check(self.metric in METRICS, "metric", f"one of {sorted(METRICS)}", self.metric)
        check(isinstance(self.patience, int) and self.patience >= 0, "patience", "an integer >= 0", self.patience)
        check(self.min_delta >= 0, "min_delta", "a number >= 0", self.min_delta)


def selection_score(metrics: Dict[str, Any], metric: str) -> float:
    """The mean of ``metric`` over tasks, signed so that higher is better (NaN if none defined)."""
    values = [m[metric] for m in metrics["tasks"].values() if not math.isnan(m[metric])]
    return METRICS[metric] * sum(values) / len(values) if values else float("nan")


def shared_score(metrics: Dict[str, Any], metric: str) -> float:
    """Collective: the selection score computed on rank 0 (which holds the metrics), on every rank."""
    import torch.distributed as dist

    score = [selection_score(metrics, metric) if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(score, src=0)
    return score[0]


class Selector:
    """Tracks the validation history: the best score, its step and metrics, and when to stop.

    Every rank holds one and updates it with the same score (rank 0 computes it), so the
    decisions to save and to stop are the same everywhere.
    """

    def __init__(self, config: EvalConfig) -> None:
        self.config = config
        self.best_score: Optional[float] = None
        self.best_step: Optional[int] = None
        self.best_metrics: Optional[Dict[str, Any]] = None
        self.bad_evaluations = 0
        self.history: List[Dict[str, Any]] = []  # one {step, score} per validation

    @property
    def last_step(self) -> Optional[int]:
        return self.history[-1]["step"] if self.history else None

    @property
    def should_stop(self) -> bool:
        return self.config.patience > 0 and self.bad_evaluations >= self.config.patience

    def update(self, score: float, step: int, metrics: Optional[Dict[str, Any]] = None) -> bool:
        """Records one validation; returns True when it is the new best."""
        self.history.append({"step": step, "score": score})
        improved = not math.isnan(score) and (
            self.best_score is None or score > self.best_score + self.config.min_delta
        )
        if improved:
            self.best_score, self.best_step, self.best_metrics = score, step, metrics
            self.bad_evaluations = 0
        else:
            self.bad_evaluations += 1
        return improved

    def progress_line(self, step: int, score: float) -> str:
        """The line printed after a validation; an undefined score (every task of the split has one
        class) says so instead of formatting a number."""
        metric = self.config.metric
        if math.isnan(score):
            now = f"{metric} undefined (every task of the validation split has one class)"
        else:
            now = f"{metric} {score:.4f}"
        best = "none yet" if self.best_score is None else f"{self.best_score:.4f} at step {self.best_step}"
        return f"step {step} validation {now} (best {best})"

    def state_dict(self) -> Dict[str, Any]:
        keys = ("best_score", "best_step", "best_metrics", "bad_evaluations", "history")
        return {key: getattr(self, key) for key in keys}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    def summary(self) -> Dict[str, Any]:
        """What ``metrics_final.json`` records of the selection: step, score, history, valid metrics."""
        selection = {"metric": self.config.metric, "score": self.best_score, "history": self.history}
        return {"selected_step": self.best_step, "selection": selection, "valid": self.best_metrics}
