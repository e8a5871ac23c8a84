"""The shared frame of the pointwise baselines: embeddings, one sample per scored interaction, a head.

A subclass says how a :class:`~dfgr_torchrec.modules.pointwise.PointwiseSamples` becomes
``[S, num_tasks]`` logits (:meth:`PointwiseRankingModel.logits`); training, scoring, the loss and
the sharded tables are the same as DFGR's, so every model sees the same inputs and candidates.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.fx
from torch import nn
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec.batch import SequenceBatch
from dfgr_torchrec.config import MaskMode, ModelConfig, SequenceEmbeddingConfig
from dfgr_torchrec.models.output import RankingOutput
from dfgr_torchrec.modules.embeddings import SequenceEmbedding
from dfgr_torchrec.modules.heads import MultiTaskBCELoss
from dfgr_torchrec.modules.pointwise import PointwiseSamples, TrainingSampler, candidate_samples
from dfgr_torchrec.modules.repeat import RepeatFeature


@torch.fx.wrap  # a leaf for TorchRec's pipeline tracer: the samples are a leaf module's output
def with_target_added(samples: PointwiseSamples, extra: torch.Tensor) -> PointwiseSamples:
    """``samples`` with ``extra`` (``[S, D]``) added to every target embedding."""
    return dataclasses.replace(samples, target=samples.target + extra)


class PointwiseRankingModel(nn.Module):
    """Base class: ``forward`` trains on every history interaction, ``score_candidates`` scores candidates.

    Args:
        config: embeddings, tasks, ``interaction.mask_mode`` (what history a target sees).
        device: ``"meta"`` to let DistributedModelParallel allocate and shard.
        embeddings: the tables to build, if not ``config.embeddings`` (e.g. narrower ones).
    """

    def __init__(
        self,
        config: ModelConfig,
        device: Optional[torch.device] = None,
        embeddings: Optional[SequenceEmbeddingConfig] = None,
    ) -> None:
        super().__init__()
        config.require_complete()
        self.config = config
        tables = embeddings or config.embeddings
        self.embedding = SequenceEmbedding(tables, device=device, add_user_context=False)
        self.session = config.interaction.mask_mode == MaskMode.SESSION
        self.sampler = TrainingSampler(self.session)
        self.loss = MultiTaskBCELoss([t.weight for t in config.tasks])
        # embeddings.repeat_feature (dlrm, dcn, deepfm): added to the target's embedding
        self.repeat = RepeatFeature(tables, self.session, device) if tables.repeat_feature else None

    def logits(self, samples: PointwiseSamples) -> torch.Tensor:
        """``[S, num_tasks]`` logits of the samples."""
        raise NotImplementedError

    def forward(self, batch: SequenceBatch) -> RankingOutput:
        emb = self.embedding(batch.features)
        samples = self.sampler(emb, batch.timestamps)
        if self.repeat is not None:
            samples = with_target_added(samples, self.repeat.history(batch.features, batch.timestamps))
        logits = self.logits(samples)
        loss, task_losses = self.loss(logits, batch.labels)
        return RankingOutput(loss=loss, task_losses=task_losses, logits=logits, labels=batch.labels)

    def score_candidates(self, batch: SequenceBatch) -> JaggedTensor:
        """Logits ``[M, num_tasks]`` for every candidate, jagged per user."""
        emb = self.embedding(batch.features)
        samples = candidate_samples(emb, batch.timestamps, batch.candidate_timestamps, self.session)
        if self.repeat is not None:
            extra = self.repeat.candidates(batch.features, batch.timestamps, batch.candidate_timestamps)
            samples = with_target_added(samples, extra)
        return JaggedTensor(values=self.logits(samples), lengths=emb.candidates.lengths())
