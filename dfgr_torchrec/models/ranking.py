"""Ranking models: embeddings + interaction + multi-task heads, for DFGR and MetaGR."""

from __future__ import annotations

import dataclasses
from typing import List, Optional

import torch
from torch import nn
from torchrec import KeyedJaggedTensor
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec.batch import SequenceBatch
from dfgr_torchrec.config import MaskMode, ModelConfig, RankingModelConfig
from dfgr_torchrec.models.output import RankingOutput  # noqa: F401 (re-exported)
from dfgr_torchrec.models.rates import RateOffset, RateTerms
from dfgr_torchrec.modules import context_token as context_ops
from dfgr_torchrec.modules.bias_terms import BiasTerms
from dfgr_torchrec.modules.dual_flow import DualFlowInteraction
from dfgr_torchrec.modules.embeddings import SequenceEmbedding
from dfgr_torchrec.modules.heads import MultiTaskBCELoss, MultiTaskHead
from dfgr_torchrec.modules.metagr import MetaGRInteraction
from dfgr_torchrec.modules.repeat import RepeatFeature
from dfgr_torchrec.modules.tokens import DualFlowTokens, PlaceholderMerge


class GenerativeRankingModel(nn.Module):
    """What DFGR, MetaGR and hstu share: the lookup, DFGR's token merge (``merge_tokens``), the
    multi-task head and loss, the optional bias, rate and repeat terms, and the serving protocol."""

    def __init__(self, config: ModelConfig, merge_tokens: bool, device: Optional[torch.device] = None) -> None:
        super().__init__()
        config.require_complete()
        self.config = config
        d_model, dim = config.interaction.d_model, config.embeddings.embedding_dim
        self.embedding = SequenceEmbedding(config.embeddings, device=device)
        # built right after the tables, so the dense parameters initialise in the order they always have
        self.tokens = DualFlowTokens(dim, config.embeddings.merge, d_model, device=device) if merge_tokens else None
        per_task, offset = getattr(config, "head_per_task", False), getattr(config, "rate_offset", False)  # not hstu's
        self.head = MultiTaskHead(
            d_model, len(config.tasks), config.head_hidden_dims, device=device, per_task=per_task, zero_output=offset
        )
        bias, rates = getattr(config, "bias_terms", False), getattr(config, "rate_terms", False)
        self.bias_terms = BiasTerms(config.embeddings, len(config.tasks), device=device) if bias else None
        session = config.interaction.mask_mode == MaskMode.SESSION
        self.rate_terms = RateTerms(len(config.tasks), config.rate_prior, session, device=device) if rates else None
        self.rate_offset = RateOffset(len(config.tasks), config.rate_prior, session) if offset else None
        self.loss = MultiTaskBCELoss([t.weight for t in config.tasks])
        self.repeat = RepeatFeature(config.embeddings, session, device) if config.embeddings.repeat_feature else None

    def history_repeat(self, batch: SequenceBatch) -> Optional[torch.Tensor]:
        """``[T, e]`` the repeat embedding of every history interaction as a fake-flow (item) token,
        None without ``embeddings.repeat_feature``."""
        return None if self.repeat is None else self.repeat.history(batch.features, batch.timestamps)

    def batch_candidate_repeat(self, batch: SequenceBatch) -> Optional[torch.Tensor]:
        """``[M, e]`` the repeat embedding of ``batch``'s candidates after its histories (None when off)."""
        if self.repeat is None:
            return None
        return self.repeat.candidates(batch.features, batch.timestamps, batch.candidate_timestamps)

    def fit_training_data(self, data) -> None:
        """The statistics hand-off of ``model.rate_terms`` and ``model.rate_offset``
        (:mod:`dfgr_torchrec.models.rates`), called by ``build_model(..., data=)``; nothing to fit
        without them."""
        for rates in (self.rate_terms, self.rate_offset):
            if rates is not None:
                rates.fit(data)

    def context_token(self, users: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """``[B, d]`` the users' context tokens when ``embeddings.user_context`` is ``"token"``
        and the model has user features, else None."""
        if not context_ops.uses_context_token(self.config.embeddings):
            return None
        return self.context_tokens_from(users)

    def context_tokens_from(self, users: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # The serving protocol: dfgr_torchrec.serving reads a generative model through these alone
    # (and ``embedding``, ``interaction``, ``head``, ``logits``, ``repeat``).
    cached_repeat = False  # whether the history cache serves this model's ``embeddings.repeat_feature``

    def history_tokens(self, items: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The history tokens the stack takes (``[N, d]``, or ``[N, 2, d]`` item and action) from
        the looked-up item and action embeddings ``[N, e]``."""
        return torch.stack([items, actions], dim=1)

    def context_history_token(self, users: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """``[B, ...]`` the users' context tokens laid out as a history interaction, or None."""
        context = self.context_token(users)
        return None if context is None else self.interaction.layout.context_token(context)

    def candidate_token_module(self) -> nn.Module:
        """What turns looked-up candidate embeddings ``[M, e]`` into the candidate tokens the stack
        takes: a module, so that the exported graph holds it (never the tables)."""
        return nn.Identity()

    def logits(self, states: torch.Tensor, features: KeyedJaggedTensor, candidates: bool) -> torch.Tensor:
        """``[n, num_tasks]``: the head on the final states of the history interactions
        (``candidates=False``) or of the candidates, plus the bias terms when configured."""
        return self.with_bias_terms(self.head(states), features, candidates)

    def with_bias_terms(self, logits: torch.Tensor, features: KeyedJaggedTensor, candidates: bool) -> torch.Tensor:
        """``logits`` plus the bias terms of the same rows, when the model has them."""
        return logits if self.bias_terms is None else logits + self.bias_terms(features, candidates)

    def rate_modules(self) -> List[nn.Module]:
        """The rate terms and offset the model has (each reads a ``RateFeatures`` as ``.features``)."""
        return [m for m in (self.rate_terms, self.rate_offset) if m is not None]

    def rate_logits(self, batch: SequenceBatch, candidates: bool) -> Optional[torch.Tensor]:
        """``[n, num_tasks]`` the rate terms and offset of ``batch``'s rows summed, None without them
        (they read the batch's labels and timestamps, not only its features)."""
        terms = [rates(batch, candidates) for rates in self.rate_modules()]
        return sum(terms[1:], terms[0]) if terms else None

    def batch_logits(self, states: torch.Tensor, batch: SequenceBatch, candidates: bool) -> torch.Tensor:
        """:meth:`logits` plus :meth:`rate_logits` of the same rows."""
        logits, rates = self.logits(states, batch.features, candidates), self.rate_logits(batch, candidates)
        return logits if rates is None else logits + rates

    def _output(self, states: torch.Tensor, batch: SequenceBatch) -> RankingOutput:
        logits = self.batch_logits(states, batch, candidates=False)
        loss, task_losses = self.loss(logits, batch.labels)
        return RankingOutput(loss=loss, task_losses=task_losses, logits=logits, labels=batch.labels)


class DFGRRankingModel(GenerativeRankingModel):
    """DFGR: one token per interaction, a real and a fake flow, loss on the fake flow.

    ``forward`` (training) predicts every history interaction's tasks from the fake flow;
    ``score_candidates`` (inference) scores each user's candidates after their history.

    Args:
        config: embeddings, interaction and tasks.
        device: ``"meta"`` to let DistributedModelParallel allocate and shard.

    Example::

        config = RankingModelConfig(
            embeddings=SequenceEmbeddingConfig(item_vocab_size=10_000), tasks=[TaskConfig("like")]
        )
        model = DFGRRankingModel(config)
        out = model(batch)                    # RankingOutput: loss, logits per interaction
        out.loss.backward()
        scores = model.score_candidates(batch)  # JaggedTensor of [M, num_tasks] logits
    """

    def __init__(self, config: RankingModelConfig, device: Optional[torch.device] = None) -> None:
        super().__init__(config, merge_tokens=True, device=device)
        self.interaction = DualFlowInteraction(config.interaction, device=device)

    cached_repeat = True

    def context_tokens_from(self, users: torch.Tensor) -> torch.Tensor:
        return self.tokens.merge_placeholder(users)

    def history_tokens(self, items: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.tokens.merge(items, actions)

    def candidate_token_module(self) -> nn.Module:
        return PlaceholderMerge(self.tokens)

    def forward(self, batch: SequenceBatch) -> RankingOutput:
        emb = self.embedding(batch.features)
        items, actions = emb.items.values(), emb.actions.values()
        lengths = emb.items.lengths()
        real = JaggedTensor(values=self.tokens.merge(items, actions), lengths=lengths)
        fake = JaggedTensor(
            values=self.tokens.merge_placeholder(_plus(items, self.history_repeat(batch))), lengths=lengths
        )
        times = batch.history_timestamps()
        context = self.context_token(emb.users)
        if context is None:
            return self._output(self.interaction(real, fake, times).values(), batch)
        context_times = context_ops.context_timestamps(times)
        real, real_times, kept = context_ops.with_context_token(real, context, times, context_times)
        fake = context_ops.with_context_token(fake, context, None, context_times)[0]
        states = self.interaction(real, fake, real_times)
        return self._output(states.values()[kept], batch)

    def score_candidates(self, batch: SequenceBatch) -> JaggedTensor:
        """Logits ``[M, num_tasks]`` for every candidate, jagged per user."""
        emb = self.embedding(batch.features)
        history = JaggedTensor(
            values=self.tokens.merge(emb.items.values(), emb.actions.values()), lengths=emb.items.lengths()
        )
        history_times, candidate_times = batch.history_timestamps(), batch.candidate_timestamps_jagged()
        context = self.context_token(emb.users)
        if context is not None:
            context_times = context_ops.context_timestamps(history_times, candidate_times)
            history, history_times, _ = context_ops.with_context_token(history, context, history_times, context_times)
        candidates = self.tokens.merge_placeholder(_plus(emb.candidates.values(), self.batch_candidate_repeat(batch)))
        states = self.interaction.score(
            history,
            JaggedTensor(values=candidates, lengths=emb.candidates.lengths()),
            history_times,
            candidate_times,
        )
        return JaggedTensor(values=self.batch_logits(states.values(), batch, candidates=True), lengths=states.lengths())


class MetaGRRankingModel(GenerativeRankingModel):
    """The MetaGR (HSTU) baseline: interleaved item and action tokens, 2N per history.

    Same embeddings, blocks, heads and loss as :class:`DFGRRankingModel`, so the two differ
    only in how the sequence is laid out. Needs ``embedding_dim == d_model`` (item and action
    tokens are the embeddings themselves); ``embeddings.merge`` is DFGR's and is ignored here.
    """

    def __init__(self, config: RankingModelConfig, device: Optional[torch.device] = None) -> None:
        if config.embeddings.embedding_dim != config.interaction.d_model:
            raise ValueError(
                f"interaction.d_model: MetaGR needs embedding_dim ({config.embeddings.embedding_dim}), "
                f"got {config.interaction.d_model}"
            )
        super().__init__(config, merge_tokens=False, device=device)
        self.interaction = MetaGRInteraction(config.interaction, device=device)

    def context_tokens_from(self, users: torch.Tensor) -> torch.Tensor:
        return users

    def _embed(self, batch: SequenceBatch, candidates: bool):
        """The looked-up embeddings, the repeat embedding added to the item tokens (and candidates)."""
        emb = self.embedding(batch.features)
        if self.repeat is None:
            return emb
        items = JaggedTensor(values=emb.items.values() + self.history_repeat(batch), lengths=emb.items.lengths())
        if not candidates:
            return dataclasses.replace(emb, items=items)
        cands = emb.candidates
        cands = JaggedTensor(values=cands.values() + self.batch_candidate_repeat(batch), lengths=cands.lengths())
        return dataclasses.replace(emb, items=items, candidates=cands)

    def forward(self, batch: SequenceBatch) -> RankingOutput:
        emb = self._embed(batch, candidates=False)
        items, actions, times, kept = context_ops.with_user_context(
            self.config.embeddings, emb, batch.history_timestamps(), None
        )
        states = self.interaction(items, actions, times).values()
        return self._output(states if kept is None else states[kept], batch)

    def score_candidates(self, batch: SequenceBatch) -> JaggedTensor:
        """Logits ``[M, num_tasks]`` for every candidate, jagged per user."""
        emb = self._embed(batch, candidates=True)
        candidate_times = batch.candidate_timestamps_jagged()
        items, actions, times, _ = context_ops.with_user_context(
            self.config.embeddings, emb, batch.history_timestamps(), candidate_times
        )
        states = self.interaction.score(items, actions, emb.candidates, times, candidate_times)
        return JaggedTensor(values=self.batch_logits(states.values(), batch, candidates=True), lengths=states.lengths())


def _plus(values: torch.Tensor, extra: Optional[torch.Tensor]) -> torch.Tensor:
    return values if extra is None else values + extra
