"""How long a run trains and how often it validates, from its config and the data set's size.

A length given in epochs is a trap on a small log (959 users, 5 epochs: 20 optimizer steps), so
the plan is at least ``min_steps`` steps: a small data set gets more epochs, a large one is left
as configured. ``eval.every_steps: auto`` then validates about :data:`EVALUATIONS` times a run,
often enough for early stopping, rarely enough not to dominate a long run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Union

EVALUATIONS = 10  # validations in a run under ``eval.every_steps: auto``
MIN_EVAL_INTERVAL = 20  # steps between them at least (a validation costs more than a step)


@dataclass(frozen=True)
class RunLength:
    """``steps`` planned (early stopping may end sooner; the learning-rate schedule spans them),
    ``epochs`` the loop may start, ``eval_every`` steps between validations (0: at each epoch's end)."""

    steps: int
    epochs: int
    eval_every: int

    def describe(self, steps_per_epoch: int) -> str:
        every = f"every {self.eval_every} steps" if self.eval_every else "at each epoch's end"
        return f"{self.steps} steps ({self.epochs} epochs of {steps_per_epoch}), validated {every}"


def plan_length(
    steps_per_epoch: int,
    epochs: int,
    steps: int = 0,
    min_steps: int = 0,
    max_steps: int = 0,
    eval_every: Union[int, Literal["auto"]] = 0,
) -> RunLength:
    """``steps`` (a budget: as many epochs as it takes) if set, else ``epochs`` epochs but at least
    ``min_steps`` steps; ``max_steps`` (if set) caps either. ``eval_every``: an int is kept, ``auto``
    is :func:`auto_eval_every`."""
    per_epoch = max(1, steps_per_epoch)
    total = steps if steps else max(epochs * per_epoch, min_steps)
    if max_steps:
        total = min(total, max_steps)
    interval = auto_eval_every(total, per_epoch) if eval_every == "auto" else int(eval_every)
    return RunLength(steps=total, epochs=max(1, math.ceil(total / per_epoch)), eval_every=interval)


def auto_eval_every(steps: int, steps_per_epoch: int) -> int:
    """At each epoch's end (0) when epochs are long enough and few enough for that to be about
    :data:`EVALUATIONS` validations; else every ``steps / EVALUATIONS`` steps (at least
    :data:`MIN_EVAL_INTERVAL`)."""
    interval = max(MIN_EVAL_INTERVAL, math.ceil(steps / EVALUATIONS))
    epochs = math.ceil(steps / steps_per_epoch)
    return 0 if steps_per_epoch <= interval and epochs <= 2 * EVALUATIONS else interval
