"""Dual-Flow Generative Ranking (DFGR) as TorchRec modules.

The public names below are imported on first use, so ``import dfgr_torchrec.<light module>``
(e.g. printing a metrics file) does not pay for importing torch and TorchRec.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "SequenceBatch": "dfgr_torchrec.batch",
    "make_sequence_batch": "dfgr_torchrec.batch",
    "AttentionForm": "dfgr_torchrec.config",
    "AttentionKernel": "dfgr_torchrec.config",
    "InteractionConfig": "dfgr_torchrec.config",
    "MaskMode": "dfgr_torchrec.config",
    "MergeOp": "dfgr_torchrec.config",
    "ModelConfig": "dfgr_torchrec.config",
    "RankingModelConfig": "dfgr_torchrec.config",
    "model_config": "dfgr_torchrec.config",
    "retype": "dfgr_torchrec.config",
    "SequenceEmbeddingConfig": "dfgr_torchrec.config",
    "TaskConfig": "dfgr_torchrec.config",
    "fill_from_data": "dfgr_torchrec.config",
    "DataSchema": "dfgr_torchrec.features",
    "build_model": "dfgr_torchrec.models",
    "register_model": "dfgr_torchrec.models",
    "DFGRRankingModel": "dfgr_torchrec.models.ranking",
    "MetaGRRankingModel": "dfgr_torchrec.models.ranking",
    "RankingOutput": "dfgr_torchrec.models.ranking",
    "DualFlowInteraction": "dfgr_torchrec.modules.dual_flow",
    "SequenceEmbedding": "dfgr_torchrec.modules.embeddings",
    "DualFlowTokens": "dfgr_torchrec.modules.tokens",
    "MultiTaskHead": "dfgr_torchrec.modules.heads",
    "multitask_bce_loss": "dfgr_torchrec.modules.heads",
    "MetaGRInteraction": "dfgr_torchrec.modules.metagr",
    "AttentionSpec": "dfgr_torchrec.ops.attention",
    "jagged_attention": "dfgr_torchrec.ops.attention",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dfgr_torchrec' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
