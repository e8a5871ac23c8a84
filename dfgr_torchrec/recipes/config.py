"""Training configs: YAML composed from smaller files, ``key=value`` overrides, validated dataclasses.

Read by :mod:`dfgr_torchrec.yaml_config`, the loader of data and study files too: a config may list
``defaults:`` (paths relative to it) that are merged first, in order; its own keys then override
them, and command-line ``a.b=value`` overrides (values parsed as YAML) come last. Unknown keys
anywhere are errors that name the key's full path. The ``model:`` node is a
:class:`~dfgr_torchrec.config.RankingModelConfig` (the same dataclass a Python user builds), its
table sizes and tasks left to the data.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Literal, Mapping, Sequence, Union

import yaml

from dfgr_torchrec.config import (
    ModelConfig,
    RankingModelConfig,
    check,
    check_model_type,
    from_dict,
    model_config_from_dict,
    model_type_of,
    retarget,
    to_plain,
)
from dfgr_torchrec.training.config import PIPELINES, CheckpointConfig, OptimConfig
from dfgr_torchrec.training.length import RunLength, plan_length
from dfgr_torchrec.training.selection import EvalConfig
from dfgr_torchrec.yaml_config import apply_overrides, check_types, config_from_tree, load_raw


@dataclass
class DataSection:
    """Args: ``config`` the data YAML; ``max_seq_len`` history kept (most recent); batch sizes in
    users; loader ``num_workers``; ``random_window`` a random ``max_seq_len`` window of each
    training history per epoch; ``user_id`` feeds the user's id to the model (a per-user feature)."""

    config: str = "configs/data/movielens-1m.yaml"
    max_seq_len: int = 200
    batch_size: int = 64
    eval_batch_size: int = 128
    num_workers: int = 1
    random_window: bool = True
    user_id: bool = False

    def __post_init__(self) -> None:
        for key in ("max_seq_len", "batch_size", "eval_batch_size"):
            value = getattr(self, key)
            check(isinstance(value, int) and value > 0, key, "a positive integer", value)


@dataclass
class TrainSection:
    """Args: the run's length (:func:`~dfgr_torchrec.training.length.plan_length`): ``steps`` a
    budget of optimizer steps, as many epochs as they take (0: sized by ``epochs``); ``epochs``, raised
    on a small data set until the run has ``min_steps`` steps; ``max_steps`` caps either (0: no cap);
    validation may stop it earlier. ``seed``; ``log_every`` steps; ``pipeline`` (auto | sparse_dist | base); ``bf16``: the training step under bf16 autocast
    (``auto``: on CUDA only; ``true``: on every device, CPU included; ``false``: fp32);
    ``overwrite``: a new run may replace a used run directory (else it is an error);
    ``collective_timeout_s``: a collective that waits longer (a rank stopped or stuck) ends the job;
    ``preempt_grace_s``: after SIGTERM / SIGUSR1 the ranks finish the step, save a checkpoint and exit
    143; a rank still running this long after the signal exits at once (keep it within the scheduler's
    grace: Slurm's KillWait, Kubernetes' terminationGracePeriodSeconds, torchrun's --shutdown-timeout)."""

    epochs: int = 10
    steps: int = 0
    min_steps: int = 300
    max_steps: int = 0
    seed: int = 0
    log_every: int = 50
    pipeline: str = "auto"
    bf16: Union[bool, Literal["auto"]] = "auto"
    overwrite: bool = False
    collective_timeout_s: float = 300.0
    preempt_grace_s: float = 30.0

    def __post_init__(self) -> None:
        check(self.pipeline in PIPELINES, "pipeline", f"one of {PIPELINES}", self.pipeline)
        check(isinstance(self.bf16, bool) or self.bf16 == "auto", "bf16", "true, false or auto", self.bf16)
        for key in ("epochs", "log_every"):
            check(getattr(self, key) > 0, key, "a positive integer", getattr(self, key))
        for key in ("steps", "min_steps", "max_steps", "seed"):
            check(getattr(self, key) >= 0, key, "an integer >= 0", getattr(self, key))
        for key in ("collective_timeout_s", "preempt_grace_s"):
            value = getattr(self, key)
            check(math.isfinite(value) and value > 0, key, "a positive number of seconds", value)

    def autocast_on(self, device_type: str) -> bool:
        """Whether the training step runs under bf16 autocast on this device type."""
        return self.bf16 is True or (self.bf16 == "auto" and device_type == "cuda")


@dataclass(frozen=True)
class FaultHooks:
    """Fault injection for the crash, stall and preemption tests; not a key of a run's config (not in
    :class:`TrainConfig`, its error messages or ``config.yaml``): set only by ``testing.<hook>=N``
    overrides (or a ``testing:`` node). 0: off. ``crash_at_step``: every rank raises right after this
    global step; ``stall_at_step``: the last rank sleeps for an hour right after it (the others then
    time out); both only in a run that started fresh, so a restarted (resumed) job goes past them;
    ``wait_for_signal_at_step``: every rank waits (up to 2 minutes) after this step for a signal."""

    crash_at_step: int = 0
    stall_at_step: int = 0
    wait_for_signal_at_step: int = 0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check(getattr(self, f.name) >= 0, f.name, "an integer >= 0", getattr(self, f.name))


FAULT_HOOKS_NODE = "testing"


def fault_hooks_of(raw: Dict[str, Any]) -> FaultHooks:
    """Takes the ``testing:`` node out of a raw config (and the hooks an older run's ``config.yaml``
    recorded under ``train:``) and returns them as :class:`FaultHooks`."""
    hooks = raw.pop(FAULT_HOOKS_NODE, None) or {}
    if not isinstance(hooks, Mapping):
        raise ValueError(f"{FAULT_HOOKS_NODE}: expected a mapping of test hooks, got {hooks!r}")
    hooks = dict(hooks)
    train = raw.get("train")
    for key in [f.name for f in dataclasses.fields(FaultHooks)] if isinstance(train, dict) else []:
        if key in train:
            hooks.setdefault(key, train.pop(key))
    check_types(FaultHooks, hooks, FAULT_HOOKS_NODE)
    return from_dict(FaultHooks, hooks, FAULT_HOOKS_NODE)


@dataclass
class TrainConfig:
    """A training run: the model (sized from the data), the data and loader, optimizers, the
    loop, validation (model selection, early stopping), checkpoints and table sharding."""

    name: str = "run"
    output_dir: str = "runs"
    model: ModelConfig = field(default_factory=RankingModelConfig)  # the type's config (MODEL_CONFIGS)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    sharding: Dict[str, str] = field(default_factory=lambda: {"item": "row_wise", "action": "table_wise"})
    testing: ClassVar[FaultHooks] = FaultHooks()  # not a config key: load_train_config sets it from testing.*
    # not a config key: the keys a model.type override left out (load_train_config)
    left_out: ClassVar[List[str]] = []

    def __post_init__(self) -> None:
        if isinstance(self.model, Mapping):
            self.model = model_config_from_dict(self.model)
        sections = {
            "data": DataSection,
            "optim": OptimConfig,
            "train": TrainSection,
            "eval": EvalConfig,
            "checkpoint": CheckpointConfig,
        }
        for key, cls in sections.items():
            value = getattr(self, key)
            if isinstance(value, Mapping):
                setattr(self, key, from_dict(cls, value, key))
        check_model_type(self.model.type)  # built-in or registered: one answer whatever is imported
        positions = getattr(getattr(self.model, "interaction", None), "max_seq_len", self.data.max_seq_len)
        check(
            positions >= self.data.max_seq_len,
            "model.interaction.max_seq_len",
            f"at least data.max_seq_len ({self.data.max_seq_len}): positions past it would share one row",
            positions,
        )

    def length(self, steps_per_epoch: int) -> RunLength:
        """How long the run trains and how often it validates on data of ``steps_per_epoch``."""
        t = self.train
        return plan_length(steps_per_epoch, t.epochs, t.steps, t.min_steps, t.max_steps, self.eval.every_steps)

    @property
    def run_dir(self) -> str:
        return os.path.join(self.output_dir, self.name)


def load_train_config(path: str, overrides: Sequence[str] = (), recorded: bool = False) -> TrainConfig:
    """Reads, composes, overrides and validates a training config (through
    :mod:`dfgr_torchrec.yaml_config`, the loader of every config file); errors name the file and key.

    A ``model:`` key its type does not read is an error, except where the model is re-targeted:
    an override that changes ``model.type`` (``model.type=dcn`` on a DFGR file), or ``recorded``
    (a run directory's ``config.yaml``, which an older version wrote with every type's keys). Then
    those keys are left out, and listed in ``config.left_out``."""
    raw = load_raw(path)
    written_for = model_type_of(raw.get("model"))
    raw = apply_overrides(raw, overrides)
    model, left_out = raw.get("model"), []
    if isinstance(model, Mapping) and (recorded or model_type_of(model) != written_for):
        raw["model"], left_out = retarget(model)
    try:
        hooks = fault_hooks_of(raw)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    config = config_from_tree(TrainConfig, raw, path)
    config.testing = hooks
    config.left_out = [f"model.{k}" for k in left_out]
    return config


def dump_config(config: TrainConfig) -> str:
    return yaml.safe_dump(to_plain(config), sort_keys=False)


def config_dict(config: TrainConfig) -> Dict[str, Any]:
    """The resolved config as plain data (what ``config.yaml`` holds)."""
    return yaml.safe_load(dump_config(config))


def save_config(config: TrainConfig) -> str:
    """Writes the resolved config to ``<run_dir>/config.yaml``; returns the path."""
    os.makedirs(config.run_dir, exist_ok=True)
    from dfgr_torchrec.recipes.args import RUN_CONFIG

    path = os.path.join(config.run_dir, RUN_CONFIG)
    with open(path, "w") as f:
        f.write(dump_config(config))
    return path


__all__ = ["TrainConfig", "load_train_config", "apply_overrides", "load_raw", "dump_config"]
