"""Which of ``logreg``'s features carries its lead: the closed-form fit, refitted without one group.

``python -m dfgr_torchrec.bench.logreg_ablation --config configs/train/dfgr_kuairand.yaml`` fits
the logistic regression of :mod:`dfgr_torchrec.models.logreg` on the training rows (as
``fit_training_data`` does), once with every feature and once with each feature group zeroed
(``-item_rate``, ``-user_rate``, ``-item_rows``, ``-history_rows``) or kept alone (``only_...``),
and prints the validation AUC / GAUC per task and their means over tasks. Validation only: the
test split is never read. The closed-form fit is what the study's ``logreg`` starts from (the
recipe then trains it further and selects on validation), so its numbers are a close, cheap proxy.
"""

from __future__ import annotations

import argparse
import json
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F

from dfgr_torchrec.data.config import load_data_config
from dfgr_torchrec.data.dataset import PreparedData, SequenceDataset
from dfgr_torchrec.data.prepare import ensure_prepared
from dfgr_torchrec.metrics import ranking_metrics
from dfgr_torchrec.models import build_model
from dfgr_torchrec.models.logreg import FEATURES_PER_TASK, fit_logistic, training_features
from dfgr_torchrec.recipes.config import load_train_config

GROUPS = ("item_rate", "user_rate", "item_rows", "history_rows")  # the column groups, in RateFeatures' order


def group_mask(num_tasks: int, keep: List[str]) -> torch.Tensor:
    """``[4 * num_tasks]`` 1 for the columns of the kept groups, 0 elsewhere."""
    mask = torch.zeros(FEATURES_PER_TASK, num_tasks)
    for name in keep:
        mask[GROUPS.index(name)] = 1.0
    return mask.reshape(-1)


def validation_metrics(model, data: PreparedData, mask: torch.Tensor, weight, bias, max_seq_len: int) -> Dict:
    """Per-task validation metrics of ``features * mask @ weight.T + bias`` on the candidates."""
    dataset = SequenceDataset(data, "valid", batch_size=256, max_seq_len=max_seq_len)
    logits, labels, users = [], [], []
    for batch in dataset:
        x = model.features(batch, candidates=True) * mask
        logits.append(F.linear(x, weight, bias))
        labels.append(batch.candidate_labels)
        users.append(batch.candidate_user_ids)
    return ranking_metrics(torch.cat(logits), torch.cat(labels), torch.cat(users), data.tasks)


def ablations(num_tasks: int) -> Dict[str, torch.Tensor]:
    """The masks: every feature, each group dropped, each group alone."""
    masks = {"all": group_mask(num_tasks, list(GROUPS))}
    for name in GROUPS:
        masks[f"-{name}"] = group_mask(num_tasks, [g for g in GROUPS if g != name])
    for name in GROUPS[:2]:
        masks[f"only_{name}"] = group_mask(num_tasks, [name])
    return masks


def run(config_path: str, overrides: List[str], out: Optional[str] = None) -> Dict[str, Dict]:
    config = load_train_config(config_path, ["model.type=logreg", "model.bias_terms=false", *overrides])
    data = PreparedData(ensure_prepared(load_data_config(config.data.config), progress=False))
    model = build_model(config.model, data.schema(config.data.user_id), data=data)
    x, y = training_features(model.features, data)
    results = {}
    for name, mask in ablations(len(data.tasks)).items():
        start = model.naive_bayes()
        weight, bias = fit_logistic(x * mask, y, start[0] * mask, start[1])
        results[name] = validation_metrics(model, data, mask, weight, bias, config.data.max_seq_len)
        print(_line(name, results[name]), flush=True)
    if out:
        with open(out, "w") as f:
            json.dump(results, f, indent=1)
    return results


def _line(name: str, metrics: Dict) -> str:
    tasks = list(metrics)
    mean = {k: sum(metrics[t][k] for t in tasks) / len(tasks) for k in ("auc", "gauc")}
    per_task = " ".join(f"{t}={metrics[t]['auc']:.3f}/{metrics[t]['gauc']:.3f}" for t in tasks)
    return f"{name:>16}  AUC {mean['auc']:.4f}  GAUC {mean['gauc']:.4f}  | {per_task}"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/train/dfgr_kuairand.yaml")
    parser.add_argument("--out", help="write the per-task metrics as JSON here")
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = parser.parse_args(argv)
    run(args.config, args.overrides, args.out)


if __name__ == "__main__":
    main()
