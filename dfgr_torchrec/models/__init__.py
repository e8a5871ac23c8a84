"""The model registry: ``model.type`` in a config -> the class that builds it.

A built-in model type is one module plus one entry in :data:`dfgr_torchrec.config.BUILTIN_MODELS`
(``name: "module:Class"``, so configs are checked without importing torch); user code adds
types with :func:`register_model`. A registered class takes
``(config, device)`` (``config``: its type's :class:`~dfgr_torchrec.config.ModelConfig`) and provides ``forward(batch) -> RankingOutput``
(the training loss) and ``score_candidates(batch) -> JaggedTensor`` (``[M, num_tasks]``
logits); its EmbeddingCollections are sharded by the recipe like any other.

Example::

    model = build_model(config.model, data.schema(), device=torch.device("meta"))
    register_model("my_ranker", MyRanker)   # then `model: {type: my_ranker}` in a YAML
    register_model("my_mlp", MyMLP, config=ArchModelConfig)   # configured by the keys DCN reads
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, Optional, Type

import torch
from torch import nn

from dfgr_torchrec.config import (
    BUILTIN_MODELS,
    MODEL_CONFIGS,
    MODEL_TYPES,
    ModelConfig,
    RankingModelConfig,
    check_model_type,
    fill_from_data,
)
from dfgr_torchrec.features import DataSchema
from dfgr_torchrec.models.output import RankingOutput


def _load(path: str) -> Type[nn.Module]:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


MODELS: Dict[str, Type[nn.Module]] = {name: _load(path) for name, path in BUILTIN_MODELS.items()}


def register_model(name: str, cls: Type[nn.Module], config: Type[ModelConfig] = RankingModelConfig) -> None:
    """Makes ``cls`` buildable as ``model.type: <name>``, configured by ``config`` (a
    :class:`~dfgr_torchrec.config.ModelConfig` holding the keys ``cls`` reads; DFGR's by default)."""
    if name in MODELS and MODELS[name] is not cls:
        raise ValueError(f"model type {name!r} is already registered to {MODELS[name].__name__}")
    MODELS[name] = MODEL_TYPES[name] = cls
    MODEL_CONFIGS.setdefault(name, config)


def build_model(
    config: ModelConfig,
    schema: Optional[DataSchema] = None,
    device: Optional[torch.device] = None,
    data: Optional[Any] = None,
) -> nn.Module:
    """Builds ``config.type``, sized from ``schema`` when given (else the config must be complete).

    ``data``: the :class:`~dfgr_torchrec.data.dataset.PreparedData` the model trains on. A model that
    needs statistics of its training split (``logreg``'s smoothed item rates) defines
    ``fit_training_data(data)``, called here before the recipe shards the model; the others ignore it.
    """
    check_model_type(config.type)
    if config.type not in MODELS:  # registered, then removed from this table
        raise ValueError(f"model.type: {config.type!r} is registered but has no class here")
    if schema is not None:
        config = fill_from_data(config, schema)
    model = MODELS[config.type](config, device=device)
    fit = getattr(model, "fit_training_data", None)
    if data is not None and fit is not None:
        fit(data)
    return model


__all__ = ["MODELS", "RankingOutput", "build_model", "check_model_type", "register_model"]
