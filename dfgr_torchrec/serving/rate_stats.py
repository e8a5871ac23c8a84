"""What ``model.rate_terms`` and ``model.rate_offset`` read at serving time, in the artifact's ``rates.pt``.

The rate features (:mod:`dfgr_torchrec.models.rates`) count the training split's rows and
positives of each item and the labels of the user's own history. The counts and the offset's
closed-form fit are recomputed from the prepared data in training, never checkpointed; export
writes them here, with the labels of every action row, since a request gives each history
interaction's actions, not its labels. ``rates.pt`` holds plain tensors only and is read with
``weights_only=True``, its size and digest verified against ``artifact.json`` like every file.

Example::

    torch.save(rate_state(model, prepared_data, vocabs), "artifact/rates.pt")
    labels_of = load_rate_state(model, "artifact/rates.pt")     # [action rows, tasks], NaN: never seen
    labels = history_labels(labels_of, encoded.history_actions)  # [N, tasks]
"""

from __future__ import annotations

from typing import Dict

import numpy as np
import torch
from torch import nn

from dfgr_torchrec.models.rates import FEATURES_PER_TASK, TrainingRates

RATES_FILE = "rates.pt"
COUNT_KEYS = ("rows", "positives", "global_rate")


def has_rates(model: nn.Module) -> bool:
    """Whether ``model`` reads the rate features (``model.rate_terms`` or ``model.rate_offset``)."""
    return bool(getattr(model, "rate_modules", list)())


def action_labels(data, action_vocabulary: bool) -> torch.Tensor:
    """``[action rows, tasks]`` float32: the labels every action row of ``data`` (a ``PreparedData``)
    stands for; NaN for a row no interaction has. Without an action feature an action row is the
    bitmask of its labels (bit ``k`` for task ``k``); with one (``action_vocabulary``) the labels
    are read off the data, and a row seen with two different label vectors is a ``ValueError``:
    the history's labels would not follow from its actions."""
    tasks, size = len(data.tasks), int(data.meta["action_rows"])
    if not action_vocabulary:
        rows = torch.arange(size).unsqueeze(1)
        return ((rows >> torch.arange(tasks)) & 1).float()
    actions = np.asarray(data.action).astype(np.int64)
    labels = np.asarray(data.labels).astype(np.float32).reshape(len(actions), tasks)
    table = np.full((size, tasks), np.nan, dtype=np.float32)
    table[actions] = labels  # one of each row's label vectors; checked against all of them next
    differ = np.nonzero((table[actions] != labels).any(axis=1))[0]
    if len(differ):
        row = int(actions[differ[0]])
        raise ValueError(
            f"{data.path}: action row {row} occurs with labels {table[row].tolist()} and "
            f"{labels[differ[0]].tolist()}: with model.rate_terms or model.rate_offset export needs each "
            "history label to follow from its action (define the tasks from the action_feature's column)"
        )
    return torch.from_numpy(table)


def rate_state(model: nn.Module, data, action_vocabulary: bool) -> Dict[str, torch.Tensor]:
    """The tensors of ``rates.pt`` for a fitted ``model``: the training counts (every rate module of
    a model shares them: one data set), the offset's fit, and :func:`action_labels`."""
    modules = model.rate_modules()
    rates: TrainingRates = modules[0].features.rates
    if rates is None:
        raise RuntimeError("the model's rate features have no training counts: build it with build_model(..., data=)")
    state = {key: getattr(rates, key) for key in COUNT_KEYS}
    if model.rate_offset is not None:
        state["offset_weight"], state["offset_bias"] = model.rate_offset.fitted
    state["action_labels"] = action_labels(data, action_vocabulary)
    return state


def _expected_shapes(model: nn.Module) -> Dict[str, tuple]:
    embeddings, tasks = model.config.embeddings, len(model.config.tasks)
    shapes = {"rows": (embeddings.item_vocab_size,), "positives": (embeddings.item_vocab_size, tasks)}
    shapes["global_rate"] = (tasks,)
    shapes["action_labels"] = (sum(embeddings.action_vocab_sizes.values()), tasks)
    if model.rate_offset is not None:
        shapes["offset_weight"], shapes["offset_bias"] = (tasks, FEATURES_PER_TASK * tasks), (tasks,)
    return shapes


def load_rate_state(model: nn.Module, path: str) -> torch.Tensor:
    """Hands ``rates.pt`` to ``model``'s rate modules; returns :func:`action_labels`' table. A file
    that is not plain tensors, or not of the model's shapes, is a one-line ``ValueError``."""
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # a truncated zip, an unpickling refusal: one line, the file named
        raise ValueError(f"{path}: not readable as plain tensors ({type(e).__name__}); export again") from None
    expected = _expected_shapes(model)
    if not isinstance(state, dict) or set(state) != set(expected):
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: expected the tensors {sorted(expected)}, got {keys}; export again")
    for key, shape in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(shape):
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{path}: {key!r} is {got}, the model of artifact.json needs {tuple(shape)}; export again")
    counts = TrainingRates(*(state[key].double() for key in COUNT_KEYS))
    for module in model.rate_modules():
        module.features.fit(counts)
    if model.rate_offset is not None:
        model.rate_offset.fitted = (state["offset_weight"].float(), state["offset_bias"].float())
    return state["action_labels"].float()


def history_labels(table: torch.Tensor, actions: torch.Tensor, first: int = 0) -> torch.Tensor:
    """``[N, tasks]`` the labels of history action rows ``actions`` ``[N]`` (the request's history
    from interaction ``first`` on); a ``ValueError`` naming the first interaction whose action row
    stands for no label (an action no row of the data set had)."""
    labels = table[actions]
    unknown = torch.nonzero(labels.isnan().any(dim=1)).flatten()
    if len(unknown):
        i = first + int(unknown[0])
        raise ValueError(
            f"history[{i}].action: a value no row of the training data had, so its labels are unknown "
            "(model.rate_terms / model.rate_offset count the history's labels); expected one of the trained actions"
        )
    return labels
