"""``logreg``: a logistic regression on smoothed target encodings, the floor a tabular baseline sets.

Per sample (a history interaction in training, a candidate in scoring) and per task ``t`` it reads
four features, then one linear layer maps the ``4 * num_tasks`` of them to the ``num_tasks`` logits
(fitted in closed form on the training rows when the data is handed over, then trained further by
the recipe like any model, the checkpoint selected on validation):

- the target item's rate of ``t`` in the training split, smoothed towards the global training
  rate ``g_t`` with ``model.rate_prior`` pseudo-rows, ``(positives + prior * g_t) / (rows + prior)``,
  as a logit minus ``logit(g_t)`` (0 for an item the training split never saw);
- the user's rate of ``t`` over the history the sample may see (the user's own earlier labels:
  interactions before it, its session excluded in session mode; the whole history for a candidate),
  smoothed and centred the same way;
- ``log(1 + rows)`` of the item in the training split, and ``log(1 + n)`` of the visible history.

**The statistics hand-off.** The item rates come from the training split only: the model cannot
compute them from a batch, so :func:`dfgr_torchrec.models.build_model` takes the prepared data
(``data=``) and calls the model's ``fit_training_data(data)`` hook. The hook counts the training
rows (``PreparedData.item_train_counts``, ``item_train_label_sums``, ``train_label_means``), then
fits the weights in closed form on ``PreparedData.whole_training_histories()``: the data layer does
the reading, this module never imports it. The recipe builds its model that way before sharding,
on every rank, from the same prepared folder, so the statistics are identical on every rank (and
DDP starts every replica from rank 0's weights); ``dfgr eval`` and resumed runs build them again
from the prepared data the run recorded. They are plain tensors, not parameters or buffers: no
optimizer, checkpoint or data-parallel broadcast sees them.

A training sample's own row is in those counts, so in ``forward`` (whose samples are training rows:
the train split yields nothing else) it is left out of its item's statistics (leave-one-out); a
candidate (a validation or test row) is never in them. The user rates need no such care: they only
read earlier labels, which every sequence model sees too (as its history's actions).

The embedding tables of ``bias`` are built (so the recipes' ``sharding:`` sections apply unchanged)
but never read. Serving exports ``dfgr`` and ``metagr`` only, like the other baselines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec.batch import SequenceBatch
from dfgr_torchrec.config import RankingModelConfig
from dfgr_torchrec.features import ITEM_FEATURE, candidate_feature
from dfgr_torchrec.models.output import RankingOutput
from dfgr_torchrec.models.pointwise import PointwiseRankingModel
from dfgr_torchrec.modules.bias_terms import bias_table_config
from dfgr_torchrec.modules.pointwise import candidate_layout, prefix_sum, training_layout

FEATURES_PER_TASK = 4  # item rate, user rate, log item rows, log history length
FIT_L2 = 1e-6  # keeps the closed-form fit finite on a task without positives
RATE_EPS = 1e-4  # the global rate is kept inside [eps, 1 - eps], so every logit is finite


@dataclass
class TrainingRates:
    """Per-item label counts of the training split.

    Attributes:
        rows: ``[item rows]`` float64, training rows of each item.
        positives: ``[item rows, num_tasks]`` float64, the sum of each task's label over them.
        global_rate: ``[num_tasks]`` float64, the mean label of the training rows.
    """

    rows: torch.Tensor
    positives: torch.Tensor
    global_rate: torch.Tensor

    @classmethod
    def of(cls, data) -> "TrainingRates":
        """The counts of a :class:`~dfgr_torchrec.data.dataset.PreparedData`'s training split."""
        return cls(
            rows=torch.from_numpy(data.item_train_counts().astype(np.float64)),
            positives=torch.from_numpy(data.item_train_label_sums()),
            global_rate=torch.from_numpy(np.clip(data.train_label_means(), RATE_EPS, 1 - RATE_EPS)),
        )

    def to(self, device: torch.device) -> "TrainingRates":
        return TrainingRates(self.rows.to(device), self.positives.to(device), self.global_rate.to(device))


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p) - torch.log1p(-p)


class RateFeatures(nn.Module):
    """``[S, 4 * num_tasks]`` features of the samples of a batch (the module docstring's list, grouped
    by feature: the item rates of every task, then the user rates, ``log(1 + rows)`` and ``log(1 + n)``
    repeated per task). A module without sharded tables: a leaf for TorchRec's pipeline tracer.

    Args:
        prior: pseudo-rows of the global rate in every smoothed rate.
        session: session mode (what history a sample sees).
    """

    def __init__(self, prior: float, session: bool) -> None:
        super().__init__()
        self.prior, self.session = float(prior), session
        self.rates: Optional[TrainingRates] = None

    def fit(self, rates: TrainingRates) -> None:
        self.rates = rates

    def _rates(self, device: torch.device) -> TrainingRates:
        if self.rates is None:
            raise RuntimeError(
                "logreg has no training statistics: build it with build_model(config, schema, data=prepared_data)"
            )
        if self.rates.rows.device != device:
            self.rates = self.rates.to(device)
        return self.rates

    def forward(self, batch: SequenceBatch, candidates: bool = False) -> torch.Tensor:
        """Features of every candidate (``candidates``) or of every history interaction, whose own
        row is then left out of its item's training counts."""
        rates = self._rates(batch.labels.device)
        h_lengths = batch.history_lengths
        if candidates:
            items = batch.features[candidate_feature(ITEM_FEATURE)].values()
            layout = candidate_layout(
                h_lengths,
                batch.candidate_lengths,
                batch.timestamps,
                batch.candidate_timestamps,
                self.session,
                len(items),
            )
        else:
            items = batch.features[ITEM_FEATURE].values()
            layout = training_layout(h_lengths, batch.timestamps, self.session, len(items))
        starts, visible, _ = layout
        rows, positives = rates.rows[items], rates.positives[items]
        if not candidates:  # leave-one-out: the sample's own label is not a feature of it
            rows, positives = (rows - 1).clamp(min=0), (positives - batch.labels.double()).clamp(min=0)
        user_rows = visible.double()
        user_positives = prefix_sum(batch.labels, starts, visible)
        return self.combine(rows, positives, user_rows, user_positives, rates.global_rate)

    def combine(
        self,
        rows: torch.Tensor,
        positives: torch.Tensor,
        user_rows: torch.Tensor,
        user_positives: torch.Tensor,
        global_rate: torch.Tensor,
    ) -> torch.Tensor:
        """The features from the counts: ``rows``, ``user_rows`` ``[S]``; ``positives``,
        ``user_positives`` ``[S, num_tasks]``; ``global_rate`` ``[num_tasks]``."""
        a, g, tasks = self.prior, global_rate, global_rate.shape[0]
        item_rate = (positives + a * g) / (rows.unsqueeze(1) + a)
        user_rate = (user_positives + a * g) / (user_rows.unsqueeze(1) + a)
        centred = _logit(g)
        counts = [torch.log1p(x).unsqueeze(1).expand(-1, tasks) for x in (rows, user_rows)]
        out = torch.cat([_logit(item_rate) - centred, _logit(user_rate) - centred, *counts], dim=1)
        return out.float()


def training_features(features: RateFeatures, data) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(x [rows, 4 * tasks], labels [rows, tasks])`` of every training row of ``data`` (a
    ``PreparedData``) as ``forward`` sees it (leave-one-out), each user's whole training history
    visible."""
    dataset = data.whole_training_histories()
    xs, ys = [], []
    for users in dataset.batch_users():
        batch = dataset.make_batch(users)
        xs.append(features(batch))
        ys.append(batch.labels)
    return torch.cat(xs), torch.cat(ys)


def fit_logistic(
    x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, max_iter: int = 100
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(weight, bias)`` minimising the mean log loss of ``x @ weight.T + bias -> y`` on the full
    batch, by L-BFGS in float64 from the given start (deterministic: the same data, the same weights)."""
    weight = weight.detach().double().clone().requires_grad_(True)
    bias = bias.detach().double().clone().requires_grad_(True)
    x, y = x.double(), y.double()
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x @ weight.T + bias, y) + FIT_L2 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach().float(), bias.detach().float()


class LogRegModel(PointwiseRankingModel):
    """``logits = features @ weight.T + bias``, fitted in closed form on the training rows when the
    data is handed over (:meth:`fit_training_data`: L-BFGS from the naive-Bayes start, the sum of the
    item's and the user's centred rate logits of each task plus the global rate's logit); the recipe
    then trains them further like any dense parameters (AdamW) and selects the checkpoint on validation.
    ``weight`` and ``bias`` are the model's own parameters, so the ``reset_parameters`` DMP calls
    when it allocates the meta model is this class's.

    Example::

        model = build_model(config, data.schema(), data=data)   # fit_training_data(data) is called
        logits = model.score_candidates(batch).values()           # [M, num_tasks]
    """

    def __init__(self, config: RankingModelConfig, device: Optional[torch.device] = None) -> None:
        config.require_complete()
        t = self.num_tasks = len(config.tasks)
        super().__init__(config, device=device, embeddings=bias_table_config(config.embeddings, t))
        self.features = RateFeatures(config.rate_prior, self.session)
        self.weight = nn.Parameter(torch.zeros(t, FEATURES_PER_TASK * t, device=device))
        self.bias = nn.Parameter(torch.zeros(t, device=device))
        self.fitted: Optional[Tuple[torch.Tensor, torch.Tensor]] = None  # (weight, bias) fitted on the training rows
        self.reset_parameters()

    def fit_training_data(self, data) -> None:
        """The statistics hand-off (module docstring): counts ``data``'s training split, then fits
        the weights on its rows; on a meta model they wait for :meth:`reset_parameters`."""
        self.features.fit(TrainingRates.of(data))
        x, y = training_features(self.features, data)
        start = self.naive_bayes()
        self.fitted = fit_logistic(x, y, *start) if len(x) else start
        self.reset_parameters()

    def naive_bayes(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(weight, bias)``: each task's item and user rate logits summed, the global rate's logit as bias."""
        t = self.num_tasks
        weight = torch.zeros(t, FEATURES_PER_TASK * t)
        own = torch.arange(t)
        weight[own, own] = 1.0  # the item rate of the task
        weight[own, own + t] = 1.0  # the user rate of the task
        rates = self.features.rates
        return weight, _logit(rates.global_rate).float() if rates is not None else torch.zeros(t)

    def reset_parameters(self) -> None:  # DistributedModelParallel calls it when it allocates a meta model
        if self.weight.is_meta:
            return
        weight, bias = self.fitted if self.fitted is not None else self.naive_bayes()
        with torch.no_grad():
            self.weight.copy_(weight)
            self.bias.copy_(bias)

    def forward(self, batch: SequenceBatch) -> RankingOutput:
        logits = F.linear(self.features(batch), self.weight, self.bias)
        loss, task_losses = self.loss(logits, batch.labels)
        return RankingOutput(loss=loss, task_losses=task_losses, logits=logits, labels=batch.labels)

    def score_candidates(self, batch: SequenceBatch) -> JaggedTensor:
        """Logits ``[M, num_tasks]`` for every candidate, jagged per user."""
        logits = F.linear(self.features(batch, candidates=True), self.weight, self.bias)
        return JaggedTensor(values=logits, lengths=batch.candidate_lengths)
