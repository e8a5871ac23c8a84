"""``dfgr bench data``: prepare time and loader throughput, against the training step's appetite.

Prepares a data set from scratch (timed; the download is not), streams one epoch of its
training split through the DataLoader (sequences/s, tokens/s), then times training steps of
the demo's model (``configs/train/dfgr_movielens.yaml``) on the same batches and reports how
many times faster the loader produces batches than one training process consumes them.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Dict

import torch

from dfgr_torchrec.data.config import load_data_config
from dfgr_torchrec.data.dataset import PreparedData, SequenceDataset, make_dataloader
from dfgr_torchrec.data.prepare import load_report, prepare


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="configs/data/movielens-1m.yaml", help="data YAML")
    parser.add_argument("--train-config", default="configs/train/dfgr_movielens.yaml",
                        help="training YAML whose model trains on the batches (the demo's by default)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-len", type=int, default=200)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--json", dest="json_path", default=None)


def run(args: argparse.Namespace) -> Dict[str, Any]:
    from dfgr_torchrec.data.cli import run_download
    from dfgr_torchrec.recipes.config import load_train_config
    from dfgr_torchrec.recipes.train import MODELS, build_model_config

    config = load_data_config(args.config)
    if config.name == "movielens-1m" and not os.path.exists(config.source.path):
        run_download(argparse.Namespace(name="movielens-1m", out=os.path.dirname(config.source.path), force=False))
    start = time.perf_counter()
    path = prepare(config, force=True, progress=False)
    prepare_seconds = time.perf_counter() - start
    report = load_report(path)
    data = PreparedData(path)

    dataset = SequenceDataset(data, "train", args.batch_size, args.max_seq_len, seed=0)
    start, sequences, tokens, batches = time.perf_counter(), 0, 0, []
    for batch in make_dataloader(dataset, num_workers=args.num_workers):
        sequences += batch.history_lengths.numel()
        tokens += int(batch.history_lengths.sum())
        if len(batches) < args.train_steps:
            batches.append(batch)
    load_seconds = time.perf_counter() - start

    train_config = load_train_config(args.train_config)
    torch.manual_seed(0)
    model = MODELS[train_config.model.type](build_model_config(train_config, data))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train_sequences = 0
    model(batches[0]).loss.backward()  # warm-up
    start = time.perf_counter()
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        model(batch).loss.backward()
        optimizer.step()
        train_sequences += batch.history_lengths.numel()
    train_seconds = time.perf_counter() - start

    result = {
        "benchmark": "data",
        "data_config": args.config,
        "train_config": args.train_config,
        "prepared": path,
        "interactions": report["interactions"],
        "users": report["users"],
        "items": report["items"],
        "prepare_seconds": round(prepare_seconds, 3),
        "loader": {
            "num_workers": args.num_workers,
            "batch_size": args.batch_size,
            "max_seq_len": args.max_seq_len,
            "sequences_per_s": sequences / load_seconds,
            "tokens_per_s": tokens / load_seconds,
        },
        "train_step_sequences_per_s": train_sequences / train_seconds,
        "loader_over_train": (sequences / load_seconds) / (train_sequences / train_seconds),
    }
    print(
        f"prepare {result['prepare_seconds']:.1f} s for {result['interactions']:,} interactions; loader "
        f"{result['loader']['sequences_per_s']:,.0f} seq/s, {result['loader']['tokens_per_s']:,.0f} tok/s; "
        f"training consumes {result['train_step_sequences_per_s']:,.0f} seq/s: loader is "
        f"{result['loader_over_train']:.1f}x faster"
    )
    if args.json_path:
        os.makedirs(os.path.dirname(os.path.abspath(args.json_path)), exist_ok=True)
        with open(args.json_path, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json_path}")
    return result
