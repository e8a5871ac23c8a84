"""The analytic training FLOPs of a finished run (see :mod:`dfgr_torchrec.models.flops`).

An epoch is one training pass over every training user's window (``min(N_u, max_seq_len)``
interactions); a run that stopped after ``S`` steps of an ``E``-step epoch spent ``S / E``
epochs' worth.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Optional

import numpy as np
import torch

from dfgr_torchrec.config import fill_from_data
from dfgr_torchrec.data.config import load_data_config
from dfgr_torchrec.data.dataset import TRAIN, PreparedData, SequenceDataset
from dfgr_torchrec.data.prepare import ensure_prepared
from dfgr_torchrec.models.flops import epoch_tokens, training_flops
from dfgr_torchrec.recipes.config import load_train_config


def steps_run(run_dir: str) -> Optional[int]:
    """The last step a finished run trained (its final weights are always validated)."""
    with open(os.path.join(run_dir, "metrics_final.json")) as f:
        history = json.load(f).get("selection", {}).get("history") or []
    return max((h["step"] for h in history), default=None)


def run_train_cost(run_dir: str, world_size: int) -> Dict[str, Optional[float]]:
    """What a finished run's training cost: ``train_flops`` (analytic), ``epochs`` (fractional),
    and per epoch ``epoch_tokens`` (through the sequence blocks) and ``epoch_labels`` (positions
    with a loss); None where a model type has no counter."""
    config = load_train_config(os.path.join(run_dir, "config.yaml"), recorded=True)
    data = PreparedData(ensure_prepared(load_data_config(config.data.config), progress=False))
    model = fill_from_data(config.model, data.schema(config.data.user_id))
    lengths = np.minimum(data.counts[TRAIN], config.data.max_seq_len)
    lengths = torch.from_numpy(lengths[lengths > 0])
    per_epoch, tokens = training_flops(model, lengths), epoch_tokens(model, lengths)
    steps = steps_run(run_dir)
    steps_per_epoch = len(
        SequenceDataset(data, "train", config.data.batch_size, config.data.max_seq_len, 0, world_size)
    )
    epochs = None if steps is None else steps / steps_per_epoch
    return {
        "train_flops": None if per_epoch is None or epochs is None else per_epoch * epochs,
        "epochs": epochs,
        "epoch_tokens": None if tokens is None else tokens["tokens"],
        "epoch_labels": None if tokens is None else tokens["labels"],
    }
