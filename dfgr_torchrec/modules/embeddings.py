"""Sequence embeddings from one TorchRec EmbeddingCollection: items, actions, candidates, users."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing
from torchrec import EmbeddingCollection, EmbeddingConfig, KeyedJaggedTensor
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec.config import SequenceEmbeddingConfig, UserContext, check
from dfgr_torchrec.features import ITEM_FEATURE, candidate_feature


@dataclass
class SequenceEmbeddings:
    """Per-interaction embeddings of one batch (values aligned with the KJT's lengths)."""

    items: JaggedTensor  # item (+ side features) of every history interaction
    actions: JaggedTensor  # summed action-feature embeddings of every history interaction
    candidates: JaggedTensor  # item (+ side features) of every candidate
    users: Optional[torch.Tensor] = None  # [B, dim] summed user-feature embeddings (None without user features)


class SequenceEmbedding(nn.Module):
    """Looks up items, actions and candidates in one :class:`torchrec.EmbeddingCollection`.

    Tables: ``item`` (features ``item_id`` and ``cand_item_id``, so history and candidates
    share rows), one per item side feature (``<name>`` and ``cand_<name>``), one per action
    feature. Built on ``device="meta"`` it lets DistributedModelParallel shard and allocate
    the tables; the item table is the one to shard row-wise for huge vocabularies.

    The lookup knows no interaction: the generative models merge its items and actions into
    tokens themselves (DFGR: :class:`~dfgr_torchrec.modules.tokens.DualFlowTokens`).

    Args:
        config: table sizes and width (and the embedding dropout).
        device: where to allocate.
        add_user_context: add the user embedding to every item and candidate token (the
            generative models, unless ``config.user_context`` is ``"token"``); False leaves it
            apart, in ``SequenceEmbeddings.users``.

    Example::

        emb = SequenceEmbedding(SequenceEmbeddingConfig(item_vocab_size=1000))
        out = emb(kjt)                      # kjt holds every key of emb.feature_names
        out.items, out.actions, out.candidates  # JaggedTensors [T, D], [T, D], [M, D]
    """

    def __init__(
        self,
        config: SequenceEmbeddingConfig,
        *,
        device: Optional[torch.device] = None,
        add_user_context: bool = True,
    ) -> None:
        super().__init__()
        check(config.item_vocab_size is not None, "embeddings.item_vocab_size", "a size", None)
        self.config = config
        self.add_user_context = add_user_context and config.user_context == UserContext.ADD
        dim = config.embedding_dim
        tables = [
            EmbeddingConfig(
                name="item",
                embedding_dim=dim,
                num_embeddings=config.item_vocab_size,
                feature_names=[ITEM_FEATURE, candidate_feature(ITEM_FEATURE)],
            )
        ]
        tables += [
            EmbeddingConfig(
                name=name, embedding_dim=dim, num_embeddings=rows, feature_names=[name, candidate_feature(name)]
            )
            for name, rows in config.item_side_vocab_sizes.items()
        ]
        tables += [
            EmbeddingConfig(name=name, embedding_dim=dim, num_embeddings=rows, feature_names=[name])
            for name, rows in {**config.action_vocab_sizes, **config.user_vocab_sizes}.items()
        ]
        self.collection = EmbeddingCollection(tables=tables, device=device)
        # no module at 0, so a model without dropout draws nothing from the RNG
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else None

    @property
    def feature_names(self) -> List[str]:
        return self.config.feature_names

    def forward(self, features: KeyedJaggedTensor) -> SequenceEmbeddings:
        if not is_fx_symbolic_tracing():  # TorchRec's train pipelines trace this forward
            missing = [k for k in self.feature_names if k not in features.keys()]
            if missing:
                raise KeyError(f"the KeyedJaggedTensor lacks feature(s) {missing}; expected keys {self.feature_names}")
        looked_up: Dict[str, JaggedTensor] = self.collection(features)
        items = _sum_values(looked_up, [ITEM_FEATURE, *self.config.item_side_vocab_sizes])
        candidates = _sum_values(
            looked_up, [candidate_feature(n) for n in (ITEM_FEATURE, *self.config.item_side_vocab_sizes)]
        )
        actions = _sum_values(looked_up, list(self.config.action_vocab_sizes))
        context = _user_context(looked_up, list(self.config.user_vocab_sizes)) if self.config.user_vocab_sizes else None
        if context is not None and self.add_user_context:  # [B, dim] onto every token of the user
            items = _add_per_user(items, context)
            candidates = _add_per_user(candidates, context)
        if self.dropout is not None:
            items, actions, candidates = (
                JaggedTensor(values=self.dropout(jt.values()), lengths=jt.lengths())
                for jt in (items, actions, candidates)
            )
        return SequenceEmbeddings(items=items, actions=actions, candidates=candidates, users=context)


def _sum_values(looked_up: Dict[str, JaggedTensor], names: List[str]) -> JaggedTensor:
    first = looked_up[names[0]]
    values = first.values()
    for name in names[1:]:
        values = values + looked_up[name].values()
    return JaggedTensor(values=values, lengths=first.lengths())


def _user_context(looked_up: Dict[str, JaggedTensor], names: List[str]) -> torch.Tensor:
    """Sum of every user feature's embeddings, one row per user: ``[B, dim]``."""
    context = None
    for name in names:
        jt = looked_up[name]
        lengths = jt.lengths()
        owner = torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device), lengths)
        pooled = jt.values().new_zeros(lengths.numel(), jt.values().shape[1]).index_add_(0, owner, jt.values())
        context = pooled if context is None else context + pooled
    return context


def _add_per_user(tokens: JaggedTensor, context: torch.Tensor) -> JaggedTensor:
    lengths = tokens.lengths()
    broadcast = torch.repeat_interleave(context, lengths, dim=0, output_size=tokens.values().shape[0])
    return JaggedTensor(values=tokens.values() + broadcast, lengths=lengths)
