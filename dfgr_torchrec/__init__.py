"""Dual-Flow Generative Ranking (DFGR) as TorchRec modules."""

from dfgr_torchrec.batch import SequenceBatch, make_sequence_batch
from dfgr_torchrec.config import (
    AttentionForm,
    AttentionKernel,
    InteractionConfig,
    MaskMode,
    MergeOp,
    RankingModelConfig,
    SequenceEmbeddingConfig,
    TaskConfig,
)
from dfgr_torchrec.models.ranking import DFGRRankingModel, MetaGRRankingModel, RankingOutput
from dfgr_torchrec.modules.dual_flow import DualFlowInteraction
from dfgr_torchrec.modules.embeddings import SequenceEmbedding
from dfgr_torchrec.modules.heads import MultiTaskHead, multitask_bce_loss
from dfgr_torchrec.modules.metagr import MetaGRInteraction
from dfgr_torchrec.ops.attention import AttentionSpec, jagged_attention

__all__ = [
    "AttentionForm",
    "AttentionKernel",
    "DFGRRankingModel",
    "DualFlowInteraction",
    "InteractionConfig",
    "MaskMode",
    "MergeOp",
    "MetaGRInteraction",
    "MetaGRRankingModel",
    "MultiTaskHead",
    "RankingModelConfig",
    "RankingOutput",
    "SequenceBatch",
    "SequenceEmbedding",
    "SequenceEmbeddingConfig",
    "TaskConfig",
    "AttentionSpec",
    "jagged_attention",
    "make_sequence_batch",
    "multitask_bce_loss",
]
