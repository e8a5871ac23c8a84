"""The model registry: ``model.type`` in a config -> the class that builds it.

A model type is one module plus one entry here. A registered class takes
``(config: RankingModelConfig, device)`` and provides ``forward(batch) -> RankingOutput``
(the training loss) and ``score_candidates(batch) -> JaggedTensor`` (``[M, num_tasks]``
logits); its EmbeddingCollections are sharded by the recipe like any other.

Example::

    model = build_model(config.model, data.schema(), device=torch.device("meta"))
    register_model("my_ranker", MyRanker)   # then `model: {type: my_ranker}` in a YAML
"""

from __future__ import annotations

from typing import Dict, Optional, Type

import torch
from torch import nn

from dfgr_torchrec.config import RankingModelConfig, fill_from_data
from dfgr_torchrec.features import DataSchema
from dfgr_torchrec.models.bias import BiasModel
from dfgr_torchrec.models.deepfm import DeepFMModel
from dfgr_torchrec.models.din import DINModel
from dfgr_torchrec.models.dlrm import DCNModel, DLRMModel
from dfgr_torchrec.models.hstu import HSTUModel
from dfgr_torchrec.models.ranking import DFGRRankingModel, MetaGRRankingModel, RankingOutput

MODELS: Dict[str, Type[nn.Module]] = {
    "dfgr": DFGRRankingModel,
    "metagr": MetaGRRankingModel,
    "bias": BiasModel,
    "dlrm": DLRMModel,
    "dcn": DCNModel,
    "deepfm": DeepFMModel,
    "hstu": HSTUModel,
    "din": DINModel,
}


def register_model(name: str, cls: Type[nn.Module]) -> None:
    """Makes ``cls`` buildable as ``model.type: <name>``."""
    if name in MODELS and MODELS[name] is not cls:
        raise ValueError(f"model type {name!r} is already registered to {MODELS[name].__name__}")
    MODELS[name] = cls


def check_model_type(name: str) -> None:
    if name not in MODELS:
        raise ValueError(f"model.type: expected one of {sorted(MODELS)}, got {name!r}")


def build_model(
    config: RankingModelConfig, schema: Optional[DataSchema] = None, device: Optional[torch.device] = None
) -> nn.Module:
    """Builds ``config.type``, sized from ``schema`` when given (else the config must be complete)."""
    check_model_type(config.type)
    if schema is not None:
        config = fill_from_data(config, schema)
    return MODELS[config.type](config, device=device)


__all__ = ["MODELS", "RankingOutput", "build_model", "check_model_type", "register_model"]
