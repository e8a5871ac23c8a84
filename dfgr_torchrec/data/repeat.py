"""The repeat heuristic: score a candidate 1 when its item occurs earlier in the user's history, else 0.

A one-line rule that no model is trained for; on logs where people buy what they viewed or carted
before it is a strong bar (issue 28). :func:`repeat_heuristic` computes its AUC per task on a
split of a prepared data set, over exactly the candidates and history windows the models are
evaluated on (``SequenceDataset`` batches, the most recent ``max_seq_len`` interactions).

Example::

    python -m dfgr_torchrec.data.repeat --config configs/data/synth-repeat.yaml --max-seq-len 128
    # {"split": "test", "candidates": 10000, "repeat_rate": 0.43, "auc": {"view": 0.54, ..., "buy": 0.78}}
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Dict, Union

import torch

from dfgr_torchrec.batch import SequenceBatch
from dfgr_torchrec.data.dataset import PreparedData, SequenceDataset
from dfgr_torchrec.features import ITEM_FEATURE, candidate_feature
from dfgr_torchrec.metrics import auc
from dfgr_torchrec.ops.repeat import previous_occurrence


def candidate_repeats(batch: SequenceBatch) -> torch.Tensor:
    """``[M]`` bool: whether each candidate's item occurs in its user's history in ``batch``."""
    history, candidates = batch.features[ITEM_FEATURE], batch.features[candidate_feature(ITEM_FEATURE)]
    h_lengths, c_lengths = history.lengths(), candidates.lengths()
    users = torch.arange(h_lengths.numel())
    h_users, c_users = torch.repeat_interleave(users, h_lengths), torch.repeat_interleave(users, c_lengths)
    # every history interaction is earlier than every candidate: keys 0 and 1
    h_keys, c_keys = torch.zeros_like(h_users), torch.ones_like(c_users)
    return previous_occurrence(history.values(), h_users, h_keys, candidates.values(), c_users, c_keys) >= 0


def repeat_heuristic(data: Union[PreparedData, str], split: str = "test", max_seq_len: int = 1024) -> Dict[str, Any]:
    """The heuristic's AUC per task on ``split`` (``"valid"`` or ``"test"``), its candidates scored
    against the most recent ``max_seq_len`` interactions before them, as the models see them.

    Returns ``{"split", "max_seq_len", "candidates", "repeat_rate", "auc": {task: AUC}}``.
    """
    dataset = SequenceDataset(data, split, batch_size=512, max_seq_len=max_seq_len)
    flags, labels = [], []
    for batch in dataset:
        flags.append(candidate_repeats(batch))
        labels.append(batch.candidate_labels)
    scores = torch.cat(flags).double()
    targets = torch.cat(labels)
    tasks = dataset.data.tasks
    return {
        "split": split,
        "max_seq_len": max_seq_len,
        "candidates": int(scores.numel()),
        "repeat_rate": round(float(scores.mean()), 4) if scores.numel() else None,
        "auc": {task: round(auc(scores, targets[:, k]), 4) for k, task in enumerate(tasks)},
    }


def main(argv=None) -> None:
    from dfgr_torchrec.data.config import load_data_config
    from dfgr_torchrec.data.prepare import ensure_prepared

    parser = argparse.ArgumentParser(description="the repeat heuristic's AUC per task on a prepared data set")
    parser.add_argument("--config", required=True, help="the data YAML (prepared on first use)")
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    parser.add_argument("--max-seq-len", type=int, default=1024, help="the history window the models see")
    args = parser.parse_args(argv)
    path = ensure_prepared(load_data_config(args.config), progress=False)
    print(json.dumps(repeat_heuristic(path, args.split, args.max_seq_len)))


if __name__ == "__main__":
    main()
