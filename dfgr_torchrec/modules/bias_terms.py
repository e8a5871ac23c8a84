"""Per-task bias terms of the item, its side features and the user: a logistic "wide" part.

The ``bias`` model is only these terms; ``model.bias_terms: true`` adds them to DFGR's and
MetaGR's logits, so an item's or a user's base rate is memorised in its own row instead of
through the sequence blocks (what the pointwise models' candidate embedding gives them).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
from torch import nn
from torchrec import KeyedJaggedTensor

from dfgr_torchrec.config import SequenceEmbeddingConfig, UserContext
from dfgr_torchrec.modules.embeddings import SequenceEmbedding


def bias_table_config(embeddings: SequenceEmbeddingConfig, num_tasks: int) -> SequenceEmbeddingConfig:
    """The same tables, one column per task, padded to a multiple of 4 (the width FBGEMM's sharded
    tables need; the extra columns are unused), without dropout, the user's row added to each token."""
    return dataclasses.replace(
        embeddings, embedding_dim=-(-num_tasks // 4) * 4, dropout=0.0, user_context=UserContext.ADD
    )


class BiasTerms(nn.Module):
    """``[T, num_tasks]`` item + side-feature + user biases for every history interaction, or
    ``[M, num_tasks]`` for every candidate; tables named like the model's, sharded by the recipe.

    Example::

        terms = BiasTerms(config.embeddings, num_tasks=3)
        logits = head(states) + terms(batch.features, candidates=True)
    """

    def __init__(
        self, embeddings: SequenceEmbeddingConfig, num_tasks: int, device: Optional[torch.device] = None
    ) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        tables = bias_table_config(embeddings, num_tasks)
        self.embedding = SequenceEmbedding(tables, device=device)

    def forward(self, features: KeyedJaggedTensor, candidates: bool) -> torch.Tensor:
        emb = self.embedding(features)  # the user's row is added to each of its tokens
        return (emb.candidates if candidates else emb.items).values()[:, : self.num_tasks]
