"""Study configs: which models on which data sets, the grid every model gets, the seeds.

Example (``configs/study/quick.yaml``)::

    name: quick
    nproc: 2                                  # processes per run (torchrun, gloo on CPU)
    seeds: [0, 1, 2]                          # the first runs the grid; the others repeat its best point
    common: [eval.every_steps=50]             # overrides for every run
    grid: {optim.lr: [0.001, 0.003]}          # crossed; the same points for every (data set, model)
    # or, instead of a grid, the points themselves:
    # points: [{optim.lr: 0.001}, {optim.lr: 0.003, model.embeddings.dropout: 0.2}]
    variants:                                 # optional: the grid runs the first; the others are tried
      user_id: {data.user_id: true}           # at each model's chosen point (first seed), and the best
      no_user_id: {data.user_id: false}       # of them on validation is the one the other seeds repeat
    datasets:
      kuairand:
        dfgr: configs/train/dfgr_kuairand.yaml
        bias: [configs/train/dfgr_kuairand.yaml, model.type=bias, model.bias_terms=false]

A study YAML may start from others (``defaults: [quick.yaml]``, relative to it, its own keys winning)
and take ``key=value`` overrides, as training YAMLs do (:mod:`dfgr_torchrec.yaml_config`).
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

from dfgr_torchrec.config import check
from dfgr_torchrec.yaml_config import load_config

ModelEntry = Union[str, List[str]]


@dataclass
class ModelRun:
    """One model on one data set: its training config and the overrides that make it this model."""

    data: str
    model: str
    config: str
    overrides: List[str]


@dataclass
class StudyConfig:
    name: str
    datasets: Dict[str, Dict[str, ModelEntry]]
    seeds: List[int] = field(default_factory=lambda: [0])
    grid: Dict[str, List[Any]] = field(default_factory=dict)
    points: List[Dict[str, Any]] = field(default_factory=list)
    common: List[str] = field(default_factory=list)
    variants: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    nproc: int = 2

    def __post_init__(self) -> None:
        check(isinstance(self.seeds, list) and len(self.seeds) > 0, "seeds", "a non-empty list of integers", self.seeds)
        check(isinstance(self.nproc, int) and self.nproc > 0, "nproc", "a positive integer", self.nproc)
        check(not (self.grid and self.points), "points", "either grid or points, not both", self.points)
        for i, point in enumerate(self.points):
            ok = isinstance(point, Mapping) and all(isinstance(k, str) for k in point)
            check(ok, f"points[{i}]", "a mapping of key: value overrides", point)
        check(isinstance(self.variants, Mapping), "variants", "a mapping of name: {key: value, ...}", self.variants)
        for name, overrides in self.variants.items():
            check(
                re.fullmatch(r"[A-Za-z0-9_]+", str(name)) is not None,
                f"variants.{name}",
                "a name of letters, digits and _ (it becomes part of run names)",
                name,
            )
            ok = isinstance(overrides, Mapping) and len(overrides) > 0 and all(isinstance(k, str) for k in overrides)
            check(ok, f"variants.{name}", "a non-empty mapping of key: value overrides", overrides)
        for key, values in self.grid.items():
            check(isinstance(values, list) and len(values) > 0, f"grid.{key}", "a non-empty list of values", values)
        check(
            isinstance(self.datasets, Mapping) and len(self.datasets) > 0,
            "datasets",
            "at least one data set",
            self.datasets,
        )
        for data, models in self.datasets.items():
            check(isinstance(models, Mapping) and len(models) > 0, f"datasets.{data}", "a mapping of models", models)
            for model, entry in models.items():
                ok = isinstance(entry, str) or (
                    isinstance(entry, list) and entry and all(isinstance(e, str) for e in entry)
                )
                check(ok, f"datasets.{data}.{model}", "a config path, or [config path, key=value, ...]", entry)
                path = entry if isinstance(entry, str) else entry[0]
                check(os.path.exists(path), f"datasets.{data}.{model}", "an existing training config", path)

    def model_runs(self) -> List[ModelRun]:
        runs = []
        for data, models in self.datasets.items():
            for model, entry in models.items():
                config, *overrides = [entry] if isinstance(entry, str) else entry
                runs.append(ModelRun(data, model, config, [*self.common, *overrides]))
        return runs

    def grid_points(self) -> List[Dict[str, Any]]:
        """The listed points, or every combination of the grid's values (one empty point without either)."""
        if self.points:
            return [dict(p) for p in self.points]
        keys = list(self.grid)
        return [dict(zip(keys, values)) for values in itertools.product(*(self.grid[k] for k in keys))]

    def variant_list(self) -> List[Tuple[str, Dict[str, Any]]]:
        """``(name, overrides)`` of each variant, the grid's own first; one unnamed, empty one without any."""
        return [(name, dict(o)) for name, o in self.variants.items()] or [("", {})]


def load_study_config(path: str, overrides: Sequence[str] = ()) -> StudyConfig:
    """Reads, composes (``defaults:``), overrides (``seeds=[0]``) and validates a study YAML through
    :func:`dfgr_torchrec.yaml_config.load_config`; errors name the file and the key."""
    return load_config(StudyConfig, path, overrides)
