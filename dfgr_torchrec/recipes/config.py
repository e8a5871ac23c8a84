"""Training configs: YAML composed from smaller files, ``key=value`` overrides, validated dataclasses.

A config may list ``defaults:`` (paths relative to it) that are merged first, in order; its own
keys then override them, and command-line ``a.b=value`` overrides (values parsed as YAML) come
last. Unknown keys anywhere are errors that name the key's full path.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Sequence

import yaml

from dfgr_torchrec.config import InteractionConfig, MergeOp, from_dict

MODEL_TYPES = ("dfgr", "metagr")


@dataclass
class ModelSection:
    """The model, sized from the data: tables come from the data set's vocabularies."""

    type: str = "dfgr"
    embedding_dim: int = 64
    merge: MergeOp = MergeOp.CONCAT
    interaction: InteractionConfig = field(default_factory=InteractionConfig)
    head_hidden_dims: List[int] = field(default_factory=lambda: [64])
    task_weights: Dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in MODEL_TYPES:
            raise ValueError(f"model.type: expected one of {MODEL_TYPES}, got {self.type!r}")
        if isinstance(self.interaction, Mapping):
            self.interaction = from_dict(InteractionConfig, self.interaction, "model.interaction")


@dataclass
class DataSection:
    config: str = "configs/data/movielens-1m.yaml"
    max_seq_len: int = 200
    batch_size: int = 64
    eval_batch_size: int = 128
    num_workers: int = 1
    eval_split: str = "test"
    random_window: bool = True  # training: a random max_seq_len window of each history per epoch

    def __post_init__(self) -> None:
        for key in ("max_seq_len", "batch_size", "eval_batch_size"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) <= 0:
                raise ValueError(f"data.{key}: expected a positive integer, got {getattr(self, key)!r}")
        if self.eval_split not in ("valid", "test"):
            raise ValueError(f"data.eval_split: expected 'valid' or 'test', got {self.eval_split!r}")


@dataclass
class OptimSection:
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    decay: str = "cosine"
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    sparse_optimizer: str = "row_wise_adagrad"
    sparse_lr: float = 0.05

    def __post_init__(self) -> None:
        if self.decay not in ("cosine", "linear", "none"):
            raise ValueError(f"optim.decay: expected 'cosine', 'linear' or 'none', got {self.decay!r}")
        if self.lr <= 0 or self.sparse_lr <= 0:
            raise ValueError(f"optim.lr and optim.sparse_lr must be positive, got {self.lr}, {self.sparse_lr}")


@dataclass
class TrainSection:
    epochs: int = 10
    max_steps: int = 0  # 0: run all epochs
    seed: int = 0
    log_every: int = 50
    eval_every_epochs: int = 1
    pipeline: str = "auto"  # auto | sparse_dist | base
    bf16: bool = True  # autocast on GPU only

    def __post_init__(self) -> None:
        if self.pipeline not in ("auto", "sparse_dist", "base"):
            raise ValueError(f"train.pipeline: expected 'auto', 'sparse_dist' or 'base', got {self.pipeline!r}")


@dataclass
class CheckpointSection:
    every_steps: int = 0  # 0: at the end of each epoch
    keep: int = 2
    resume: bool = False


@dataclass
class TrainConfig:
    name: str = "run"
    output_dir: str = "runs"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    sharding: Dict[str, str] = field(default_factory=lambda: {"item": "row_wise", "action": "table_wise"})

    def __post_init__(self) -> None:
        sections = {
            "model": ModelSection, "data": DataSection, "optim": OptimSection,
            "train": TrainSection, "checkpoint": CheckpointSection,
        }
        for key, cls in sections.items():
            value = getattr(self, key)
            if isinstance(value, Mapping):
                setattr(self, key, from_dict(cls, value, key))

    @property
    def run_dir(self) -> str:
        return os.path.join(self.output_dir, self.name)


def _merge(base: Dict[str, Any], top: Mapping[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_raw(path: str, seen: Sequence[str] = ()) -> Dict[str, Any]:
    """One YAML file with its ``defaults`` merged in (recursively)."""
    path = os.path.normpath(path)
    if path in seen:
        raise ValueError(f"{path}: defaults form a cycle: {' -> '.join([*seen, path])}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such config file" + (f" (a default of {seen[-1]})" if seen else ""))
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: expected a mapping at the top level")
    merged: Dict[str, Any] = {}
    for default in raw.get("defaults", []) or []:
        merged = _merge(merged, load_raw(os.path.join(os.path.dirname(path), default), [*seen, path]))
    return _merge(merged, {k: v for k, v in raw.items() if k != "defaults"})


def apply_overrides(raw: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Applies ``a.b.c=value`` overrides; the value is parsed as YAML (``3``, ``true``, ``[1, 2]``)."""
    out = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r}: expected key=value")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = yaml.safe_load(value)
    return out


def load_train_config(path: str, overrides: Sequence[str] = ()) -> TrainConfig:
    """Reads, composes, overrides and validates a training config; errors name the file and key."""
    raw = apply_overrides(load_raw(path), overrides)
    try:
        return from_dict(TrainConfig, raw)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def dump_config(config: TrainConfig) -> str:
    import dataclasses
    import enum

    def plain(x: Any) -> Any:
        if isinstance(x, enum.Enum):
            return x.value
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, list):
            return [plain(v) for v in x]
        return x

    return yaml.safe_dump(plain(dataclasses.asdict(config)), sort_keys=False)


__all__ = ["TrainConfig", "load_train_config", "apply_overrides", "dump_config"]
