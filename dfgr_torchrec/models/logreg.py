"""``logreg``: a logistic regression on smoothed target encodings, the floor a tabular baseline sets.

Per sample (a history interaction in training, a candidate in scoring) and per task ``t`` it reads
four features (:mod:`dfgr_torchrec.models.rates`, shared with DFGR's ``model.rate_terms``), then one linear layer maps the ``4 * num_tasks`` of them to the ``num_tasks`` logits
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

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec.batch import SequenceBatch
from dfgr_torchrec.config import LogRegModelConfig
from dfgr_torchrec.models.output import RankingOutput
from dfgr_torchrec.models.pointwise import PointwiseRankingModel
from dfgr_torchrec.models.rates import (  # noqa: F401  (re-exported: logreg's features)
    FEATURES_PER_TASK,
    RateFeatures,
    TrainingRates,
    fit_logistic,
    fit_rates,
    naive_bayes_start,
    training_features,
)
from dfgr_torchrec.modules.bias_terms import bias_table_config


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

    def __init__(self, config: LogRegModelConfig, device: Optional[torch.device] = None) -> None:
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
        self.fitted = fit_rates(self.features, data, self.num_tasks)
        self.reset_parameters()

    def naive_bayes(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(weight, bias)``: each task's item and user rate logits summed, the global rate's logit as bias."""
        return naive_bayes_start(self.features.rates, self.num_tasks)

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
