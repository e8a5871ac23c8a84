"""``din``: the Deep Interest Network baseline (Zhou et al., KDD 2018).

The candidate attends over the user's behaviour history with DIN's *activation unit*: an MLP
over ``[e_target, e_hist, e_target - e_hist, e_target * e_hist]`` gives one weight per history
item, and the weighted sum of the history tokens is the user's interest in that target. A
history token is the item embedding plus the action embedding of that interaction, so the
model knows what the user did with each item. An MLP over
``[interest, target, user (if any), mean history item, mean history action]`` gives
``num_tasks`` logits.

As in the paper, the weights are **not** softmax-normalised: their sum is free to grow with
the number of relevant behaviours, which keeps the *intensity* of the interest (a user with
twenty related clicks scores higher than one with two); a softmax would erase it. Hidden
layers use PReLU (the paper's baseline activation; its Dice is a data-adaptive variant).

Which history a sample sees is the frame's (:mod:`dfgr_torchrec.modules.pointwise`): always a
prefix of its user's history (``j < i``, or ``t_j < t_i`` in session mode). Attention over
it costs an MLP per (sample, history item) pair, O(N^2) per user if every interaction were a
target, so:

* training scores only the last ``targets_per_user`` (default :data:`TARGETS_PER_USER`)
  interactions of each user's window, and the loss is on those rows of ``batch.labels``;
* a sample attends to at most the ``max_history`` (default :data:`MAX_HISTORY`) most recent
  interactions of its prefix, in training and at inference (mean-pooled history features
  still cover the whole prefix).

Pairs are built as one jagged gather and pooled with ``index_add_``: no loop over users.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec.batch import SequenceBatch
from dfgr_torchrec.config import DINModelConfig
from dfgr_torchrec.models.output import RankingOutput
from dfgr_torchrec.models.pointwise import PointwiseRankingModel
from dfgr_torchrec.modules.embeddings import SequenceEmbeddings
from dfgr_torchrec.modules.pointwise import PointwiseSamples, candidate_samples, training_samples
from dfgr_torchrec.ops.jagged import lengths_to_offsets, repeat_per_element

TARGETS_PER_USER: Optional[int] = 16
"""Training targets per user: the last K interactions of the window (None: every interaction)."""

MAX_HISTORY = 64
"""At most this many most recent interactions of a sample's visible prefix are attended to."""

ATTENTION_HIDDEN_DIMS: Tuple[int, ...] = (36,)
"""Hidden widths of the activation unit (the paper's figure: 36, PReLU, then 1)."""


def history_pairs(starts: torch.Tensor, visible: torch.Tensor, max_history: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The (sample, history row) pairs of the attention, grouped by sample.

    Sample ``s`` sees rows ``[starts[s], e_s)`` with ``e_s = starts[s] + visible[s]`` and
    attends to the last ``max_history`` of them: ``[max(starts[s], e_s - max_history), e_s)``.

    Returns:
        ``(pair_sample, pair_row)``, both ``[P]`` int64: the sample and the history row.
    """
    ends = starts + visible
    first = torch.maximum(starts, ends - max_history)
    counts = ends - first
    offsets = lengths_to_offsets(counts)
    total = int(offsets[-1].item())
    pair_sample = repeat_per_element(torch.arange(counts.numel(), device=counts.device), counts, total)
    within = torch.arange(total, device=counts.device) - offsets[:-1][pair_sample]
    return pair_sample, first[pair_sample] + within


def last_interactions(owner: torch.Tensor, lengths: torch.Tensor, count: Optional[int]) -> torch.Tensor:
    """``[S']`` indices of the last ``count`` history interactions of every user (all if None).

    ``owner``: ``[T]`` the user of each history interaction (grouped by user, in order).
    """
    if count is None:
        return torch.arange(owner.numel(), device=owner.device)
    starts = lengths_to_offsets(lengths)[:-1]
    position = torch.arange(owner.numel(), device=owner.device) - starts[owner]
    return torch.nonzero(position >= lengths[owner] - count).squeeze(1)


def select_samples(samples: PointwiseSamples, index: torch.Tensor) -> PointwiseSamples:
    """The samples at ``index``."""
    return PointwiseSamples(
        target=samples.target[index],
        history_items=samples.history_items[index],
        history_actions=samples.history_actions[index],
        visible=samples.visible[index],
        owner=samples.owner[index],
        user=None if samples.user is None else samples.user[index],
    )


def history_tokens(emb: SequenceEmbeddings) -> JaggedTensor:
    """DIN's history token: item (+ side features) plus the action embedding of the interaction."""
    return JaggedTensor(values=emb.items.values() + emb.actions.values(), lengths=emb.items.lengths())


def _mlp(width: int, hidden_dims: Sequence[int], out: int, device: Optional[torch.device]) -> nn.Sequential:
    layers: List[nn.Module] = []
    for hidden in hidden_dims:
        layers += [nn.Linear(width, hidden, device=device), nn.PReLU(hidden, device=device)]
        width = hidden
    layers.append(nn.Linear(width, out, device=device))
    return nn.Sequential(*layers)


class DINInteraction(nn.Module):
    """The activation unit, the attention pooling and the output MLP.

    A module of its own (no sharded table inside), so TorchRec's pipeline tracer keeps it a
    leaf and never traces its data-dependent shapes.

    Args:
        dim: embedding width ``D``.
        num_tasks: logits per sample.
        head_hidden_dims: hidden widths of the output MLP (PReLU).
        has_user: whether samples carry a user embedding (the model has user features).
        session: session mask mode (what history a training target sees).
        targets_per_user: training targets per user (None: all).
        max_history: attended interactions per sample.
        attention_hidden_dims: hidden widths of the activation unit (PReLU).
        device: where to allocate.
    """

    def __init__(
        self,
        dim: int,
        num_tasks: int,
        head_hidden_dims: Sequence[int],
        has_user: bool,
        session: bool,
        targets_per_user: Optional[int],
        max_history: int,
        attention_hidden_dims: Sequence[int],
        device: Optional[torch.device] = None,
    ) -> None:
        super().__init__()
        if targets_per_user is not None and targets_per_user < 1:
            raise ValueError(f"targets_per_user: expected a positive integer or None, got {targets_per_user}")
        if max_history < 1:
            raise ValueError(f"max_history: expected a positive integer, got {max_history}")
        self.session, self.targets_per_user, self.max_history = session, targets_per_user, max_history
        self.activation_unit = _mlp(4 * dim, attention_hidden_dims, 1, device)
        self.head = _mlp((5 if has_user else 4) * dim, head_hidden_dims, num_tasks, device)

    def forward(
        self, emb: SequenceEmbeddings, timestamps: torch.Tensor, labels: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Training: ``(logits, labels)`` of the last ``targets_per_user`` interactions of each user."""
        samples = training_samples(emb, timestamps, self.session)
        keep = last_interactions(samples.owner, emb.items.lengths(), self.targets_per_user)
        return self.score(select_samples(samples, keep), history_tokens(emb)), labels[keep]

    def score(self, samples: PointwiseSamples, history: JaggedTensor) -> torch.Tensor:
        """``[S, num_tasks]`` logits of the samples, attending over ``history`` (DIN tokens, per user)."""
        parts = [self.interest(samples, history), samples.target]
        if samples.user is not None:
            parts.append(samples.user)
        parts += [samples.history_items, samples.history_actions]
        return self.head(torch.cat(parts, dim=1))

    def interest(self, samples: PointwiseSamples, history: JaggedTensor) -> torch.Tensor:
        """``[S, D]``: the activation-weighted sum of each sample's attended history (0 if none)."""
        tokens = history.values()
        starts = lengths_to_offsets(history.lengths())[:-1][samples.owner]
        pair_sample, pair_row = history_pairs(starts, samples.visible, self.max_history)
        hist = tokens[pair_row]
        weighted = self.attention_weights(samples.target[pair_sample], hist) * hist
        pooled = weighted.new_zeros(samples.target.shape[0], tokens.shape[1])
        return pooled.index_add_(0, pair_sample, weighted)

    def attention_weights(self, target: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        """``[P, 1]`` unnormalised weights of the activation unit (no softmax, as in the paper)."""
        return self.activation_unit(torch.cat([target, hist, target - hist, target * hist], dim=1))


class DINModel(PointwiseRankingModel):
    """DIN: target attention of the candidate over the user's behaviour history.

    Args:
        config: embeddings (width ``D``), tasks, ``head_hidden_dims``, ``interaction.mask_mode``.
        device: ``"meta"`` to let DistributedModelParallel allocate and shard.
        targets_per_user: training targets per user, the last of each window (None: all).
        max_history: at most this many most recent visible interactions are attended to.
        attention_hidden_dims: hidden widths of the activation unit.

    Example::

        model = DINModel(config)              # config sized by fill_from_data
        out = model(batch)                    # RankingOutput on the last 16 interactions per user
        out.loss.backward()
        logits = model.score_candidates(batch).values()   # [M, num_tasks]
    """

    def __init__(
        self,
        config: DINModelConfig,
        device: Optional[torch.device] = None,
        targets_per_user: Optional[int] = TARGETS_PER_USER,
        max_history: int = MAX_HISTORY,
        attention_hidden_dims: Sequence[int] = ATTENTION_HIDDEN_DIMS,
    ) -> None:
        super().__init__(config, device=device)
        self.din = DINInteraction(
            config.embeddings.embedding_dim,
            len(config.tasks),
            config.head_hidden_dims,
            bool(config.embeddings.user_vocab_sizes),
            self.session,
            targets_per_user,
            max_history,
            attention_hidden_dims,
            device=device,
        )

    def logits(self, samples: PointwiseSamples) -> torch.Tensor:
        raise NotImplementedError("DIN attends over history rows, not pooled samples: use forward / score_candidates")

    def forward(self, batch: SequenceBatch) -> RankingOutput:
        emb = self.embedding(batch.features)
        logits, labels = self.din(emb, batch.timestamps, batch.labels)
        loss, task_losses = self.loss(logits, labels)
        return RankingOutput(loss=loss, task_losses=task_losses, logits=logits, labels=labels)

    def score_candidates(self, batch: SequenceBatch) -> JaggedTensor:
        """Logits ``[M, num_tasks]`` for every candidate, jagged per user."""
        emb = self.embedding(batch.features)
        samples = candidate_samples(emb, batch.timestamps, batch.candidate_timestamps, self.session)
        logits = self.din.score(samples, history_tokens(emb))
        return JaggedTensor(values=logits, lengths=emb.candidates.lengths())
