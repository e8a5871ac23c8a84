"""The rate features ``logreg`` is built on, shared with DFGR's ``model.rate_terms``.

Per sample (a history interaction in training, a candidate in scoring) and per task ``t``:

- the target item's rate of ``t`` in the training split, smoothed towards the global training
  rate ``g_t`` with ``model.rate_prior`` pseudo-rows, ``(positives + prior * g_t) / (rows + prior)``,
  as a logit minus ``logit(g_t)`` (0 for an item the training split never saw); a training sample's
  own row is left out of its item's counts (leave-one-out);
- the user's rate of ``t`` over the history the sample may see (the user's own earlier labels:
  interactions before it, its session excluded in session mode; the whole history for a candidate),
  smoothed and centred the same way;
- ``log(1 + rows)`` of the item in the training split, and ``log(1 + n)`` of the visible history.

The item counts come from the training split only (:class:`TrainingRates`, handed over by
``build_model(..., data=)`` through a model's ``fit_training_data`` hook); they are plain tensors,
not parameters or buffers, so no optimizer, checkpoint or data-parallel broadcast sees them.

:class:`RateTerms` is the learned per-task linear map of these features (``logreg`` is that map
alone; ``model.rate_terms: true`` adds it to DFGR's and MetaGR's logits), started from the
closed-form fit on the training rows. :class:`RateOffset` (``model.rate_offset: true``) adds
``logreg``'s closed-form logits instead, frozen: the sequence model learns the residual over the floor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dfgr_torchrec.batch import SequenceBatch
from dfgr_torchrec.features import ITEM_FEATURE, candidate_feature
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


def naive_bayes_start(rates: Optional[TrainingRates], num_tasks: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(weight, bias)``: each task's item and user rate logits summed, the global rate's logit as
    bias (zeros without the training statistics)."""
    t = num_tasks
    weight = torch.zeros(t, FEATURES_PER_TASK * t)
    own = torch.arange(t)
    weight[own, own] = 1.0  # the item rate of the task
    weight[own, own + t] = 1.0  # the user rate of the task
    return weight, _logit(rates.global_rate).float() if rates is not None else torch.zeros(t)


def fit_rates(features: RateFeatures, data, num_tasks: int, first: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Hands ``data``'s (a ``PreparedData``) training counts to ``features``, then ``(weight, bias)``
    fitted in closed form on its training rows from the naive-Bayes start, on the feature columns
    from ``first`` on."""
    features.fit(TrainingRates.of(data))
    x, y = training_features(features, data)
    weight, bias = naive_bayes_start(features.rates, num_tasks)
    start = weight[:, first:].contiguous(), bias
    return fit_logistic(x[:, first:], y, *start) if len(x) else start


class RateTerms(nn.Module):
    """``model.rate_terms``: ``[n, num_tasks]`` logits ``features @ weight.T + bias`` of the rate
    features but the item rates (the user's rates, ``log(1 + item rows)``, ``log(1 + n)``), added
    to a sequence model's logits. The item rates stay out: the model memorises them in its item
    rows already, and a training row's held-out item rate next to such a row gives the row's label
    away (on KuaiRand they changed nothing on validation: 0.8098 with them, 0.8100 without). The
    user's rate reads only labels the history's action tokens already show. :meth:`fit` (the
    model's ``fit_training_data``) fits them in closed form on the training rows; the recipe
    trains them further with the model.
    ``reset_parameters`` (which DistributedModelParallel calls when it allocates a meta model)
    copies the fit, so every rank starts from the same weights.

    Example::

        terms = RateTerms(num_tasks=3, prior=10.0, session=True)
        terms.fit(prepared_data)
        logits = head(states) + terms(batch, candidates=True)
    """

    def __init__(self, num_tasks: int, prior: float, session: bool, device: Optional[torch.device] = None) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        self.features = RateFeatures(prior, session)
        self.weight = nn.Parameter(torch.zeros(num_tasks, (FEATURES_PER_TASK - 1) * num_tasks, device=device))
        self.bias = nn.Parameter(torch.zeros(num_tasks, device=device))
        self.fitted: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
        self.reset_parameters()

    def fit(self, data) -> None:
        self.fitted = fit_rates(self.features, data, self.num_tasks, first=self.num_tasks)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight.is_meta:
            return
        weight, bias = self.fitted or naive_bayes_start(self.features.rates, self.num_tasks)
        with torch.no_grad():
            self.weight.copy_(weight[:, -self.weight.shape[1] :])
            self.bias.copy_(bias)

    def forward(self, batch: SequenceBatch, candidates: bool) -> torch.Tensor:
        x = self.features(batch, candidates=candidates)[:, self.num_tasks :]  # all but the item rates
        return F.linear(x, self.weight, self.bias)


class RateOffset(nn.Module):
    """``model.rate_offset``: ``[n, num_tasks]`` logits of ``logreg``'s closed-form fit (all four rate
    features, the item rates included, fitted on the training rows by :meth:`fit`), added to a sequence
    model's logits as a constant: no gradient reaches them, and no optimizer, checkpoint or broadcast
    sees them (they are recomputed from the prepared data, deterministically, like the counts). Frozen,
    a training row's held-out item rate cannot become a label detector next to the item's table row
    (a learned weight could turn negative and read the row's own label off the leave-one-out gap; the
    fit's weight is the one ``logreg`` uses without an item table). With the head's output layer
    started at zero the model starts as ``logreg`` (plus the bias terms' initial rows when
    ``model.bias_terms`` is on) and learns the residual.

    Example::

        offset = RateOffset(num_tasks=3, prior=10.0, session=True)
        offset.fit(prepared_data)
        logits = head(states) + offset(batch, candidates=True)
    """

    def __init__(self, num_tasks: int, prior: float, session: bool) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        self.features = RateFeatures(prior, session)
        self.fitted: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    def fit(self, data) -> None:
        self.fitted = fit_rates(self.features, data, self.num_tasks)

    def forward(self, batch: SequenceBatch, candidates: bool) -> torch.Tensor:
        if self.fitted is None:
            raise RuntimeError(
                "model.rate_offset has no fit: build the model with build_model(config, schema, data=prepared_data)"
            )
        x = self.features(batch, candidates=candidates)
        weight, bias = (t.to(x.device) for t in self.fitted)
        return F.linear(x, weight, bias)
