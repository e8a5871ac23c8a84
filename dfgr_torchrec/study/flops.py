"""The analytic training FLOPs of a finished run (see :mod:`dfgr_torchrec.models.flops`).

An epoch is one training pass over every training user's window (``min(N_u, max_seq_len)``
interactions); a run that stopped after ``S`` steps of an ``E``-step epoch spent ``S / E``
epochs' worth.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np
import torch

from dfgr_torchrec.config import fill_from_data
from dfgr_torchrec.data.config import load_data_config
from dfgr_torchrec.data.dataset import TRAIN, PreparedData, SequenceDataset
from dfgr_torchrec.data.prepare import ensure_prepared
from dfgr_torchrec.models.flops import training_flops
from dfgr_torchrec.recipes.config import load_train_config


def steps_run(run_dir: str) -> Optional[int]:
    """The last step a finished run trained (its final weights are always validated)."""
    with open(os.path.join(run_dir, "metrics_final.json")) as f:
        history = json.load(f).get("selection", {}).get("history") or []
    return max((h["step"] for h in history), default=None)


def run_train_flops(run_dir: str, world_size: int) -> Optional[float]:
    """Training FLOPs a finished run spent; None for a model type with no counter."""
    config = load_train_config(os.path.join(run_dir, "config.yaml"))
    data = PreparedData(ensure_prepared(load_data_config(config.data.config), progress=False))
    model = fill_from_data(config.model, data.schema(config.data.user_id))
    lengths = np.minimum(data.counts[TRAIN], config.data.max_seq_len)
    per_epoch = training_flops(model, torch.from_numpy(lengths[lengths > 0]))
    steps = steps_run(run_dir)
    if per_epoch is None or steps is None:
        return None
    steps_per_epoch = len(SequenceDataset(data, "train", config.data.batch_size, config.data.max_seq_len, 0, world_size))
    return per_epoch * steps / steps_per_epoch
