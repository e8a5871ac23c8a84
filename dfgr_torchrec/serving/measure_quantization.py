"""What int8 tables cost: test AUC / GAUC of a trained run with fp32 and with int8 embedding tables.

Loads ``<run>/best`` unsharded on CPU, scores the test split the recipe's final evaluation
scores (``SequenceDataset`` split ``test`` with the run's config), quantizes the tables and
scores it again; prints and writes JSON ``{auc_fp32, auc_int8, gauc_fp32, gauc_int8,
table_bytes_fp32, table_bytes_int8}`` (AUC / GAUC: the mean over tasks).

Example::

    python -m dfgr_torchrec.serving.measure_quantization --run runs/demo-movielens --root . \\
        --out runs/demo-movielens/quantization.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from dfgr_torchrec.data.dataset import PreparedData, SequenceDataset
from dfgr_torchrec.metrics import ranking_metrics
from dfgr_torchrec.recipes.config import load_train_config
from dfgr_torchrec.serving.loading import load_model_for_inference, prepared_data_of, resolve_model_config
from dfgr_torchrec.serving.quantize import quantize_tables, table_bytes


@torch.no_grad()
def split_metrics(model: nn.Module, dataset: SequenceDataset, tasks: List[str]) -> Dict[str, Any]:
    """Per-task metrics of ``model.score_candidates`` over every candidate of ``dataset``."""
    logits, labels, users = [], [], []
    for batch in dataset:
        logits.append(model.score_candidates(batch).values().float())
        labels.append(batch.candidate_labels)
        users.append(batch.candidate_user_ids)
    return ranking_metrics(torch.cat(logits), torch.cat(labels), torch.cat(users), tasks)


def _mean(metrics: Dict[str, Any], name: str) -> float:
    return sum(m[name] for m in metrics.values()) / len(metrics)


def measure(
    run_dir: str, root: str = ".", data: Optional[PreparedData] = None, batch_size: int = 256
) -> Dict[str, Any]:
    """The fp32 and int8 test metrics and table sizes of ``run_dir``'s best checkpoint."""
    config = load_train_config(os.path.join(run_dir, "config.yaml"), recorded=True)
    data = data or prepared_data_of(config, root)
    model = load_model_for_inference(resolve_model_config(config, data), os.path.join(run_dir, "best"), data=data)
    dataset = SequenceDataset(data, "test", batch_size, config.data.max_seq_len, user_id=config.data.user_id)
    fp32, fp32_bytes = split_metrics(model, dataset, data.tasks), table_bytes(model)
    quantize_tables(model, torch.qint8)
    int8 = split_metrics(model, dataset, data.tasks)
    return {
        "auc_fp32": _mean(fp32, "auc"),
        "auc_int8": _mean(int8, "auc"),
        "gauc_fp32": _mean(fp32, "gauc"),
        "gauc_int8": _mean(int8, "gauc"),
        "table_bytes_fp32": fp32_bytes,
        "table_bytes_int8": table_bytes(model),
        "candidates": int(next(iter(fp32.values()))["count"]),
        "tasks": {"fp32": fp32, "int8": int8},
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="the run directory (config.yaml, best/)")
    parser.add_argument(
        "--root", default=".", help="where the run was launched (its data config paths are relative to it)"
    )
    parser.add_argument(
        "--data", default=None, help="the prepared data set folder (default: found from the run's data config)"
    )
    parser.add_argument("--out", default=None, help="write the JSON here")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)
    result = measure(args.run, args.root, PreparedData(args.data) if args.data else None, args.batch_size)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
