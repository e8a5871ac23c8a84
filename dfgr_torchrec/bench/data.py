"""``dfgr bench data``: prepare time and loader throughput, against the training step's appetite.

Prepares a data set from scratch (timed; the download is not), streams one epoch of its
training split through the DataLoader (sequences/s, tokens/s), then times training steps of
the demo's model (``configs/train/dfgr_movielens.yaml``) on the same batches and reports how
many times faster the loader produces batches than one training process consumes them.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Dict, List, Tuple

import torch

from dfgr_torchrec.batch import SequenceBatch
from dfgr_torchrec.bench.output import write_json
from dfgr_torchrec.data.config import load_data_config
from dfgr_torchrec.data.dataset import PreparedData, SequenceDataset, make_dataloader
from dfgr_torchrec.data.prepare import load_report, prepare
from dfgr_torchrec.data.sources import ensure_source
from dfgr_torchrec.models import build_model
from dfgr_torchrec.recipes.config import load_train_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="configs/data/movielens-1m.yaml", help="data YAML")
    parser.add_argument(
        "--train-config",
        default="configs/train/dfgr_movielens.yaml",
        help="training YAML whose model trains on the batches (the demo's by default)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-len", type=int, default=200)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--json", dest="json_path", default=None)


def run(args: argparse.Namespace) -> Dict[str, Any]:
    config = load_data_config(args.config)
    ensure_source(config)
    start = time.perf_counter()
    path = prepare(config, force=True, progress=False)
    prepare_seconds = time.perf_counter() - start
    report = load_report(path)
    data = PreparedData(path)
    loader, batches = _time_loader(data, args)
    train_sequences_per_s = _time_training(data, batches, args.train_config)
    result = {
        "benchmark": "data",
        "data_config": args.config,
        "train_config": args.train_config,
        "prepared": path,
        "interactions": report["interactions"],
        "users": report["users"],
        "items": report["items"],
        "prepare_seconds": round(prepare_seconds, 3),
        "loader": loader,
        "train_step_sequences_per_s": train_sequences_per_s,
        "loader_over_train": loader["sequences_per_s"] / train_sequences_per_s,
    }
    print(
        f"prepare {result['prepare_seconds']:.1f} s for {result['interactions']:,} interactions; loader "
        f"{loader['sequences_per_s']:,.0f} seq/s, {loader['tokens_per_s']:,.0f} tok/s; "
        f"training consumes {train_sequences_per_s:,.0f} seq/s: loader is {result['loader_over_train']:.1f}x faster"
    )
    write_json(result, args.json_path)
    return result


def _time_loader(data: PreparedData, args: argparse.Namespace) -> Tuple[Dict[str, Any], List[SequenceBatch]]:
    """One epoch of the training split through the DataLoader; keeps the first batches to train on."""
    dataset = SequenceDataset(data, "train", args.batch_size, args.max_seq_len, seed=0)
    start, sequences, tokens, batches = time.perf_counter(), 0, 0, []
    for batch in make_dataloader(dataset, num_workers=args.num_workers):
        sequences += batch.history_lengths.numel()
        tokens += int(batch.history_lengths.sum())
        if len(batches) < args.train_steps:
            batches.append(batch)
    seconds = time.perf_counter() - start
    loader = {
        "num_workers": args.num_workers,
        "batch_size": args.batch_size,
        "max_seq_len": args.max_seq_len,
        "sequences_per_s": sequences / seconds,
        "tokens_per_s": tokens / seconds,
    }
    return loader, batches


def _time_training(data: PreparedData, batches: List[SequenceBatch], train_config_path: str) -> float:
    """Sequences per second of one process training the config's model (unsharded) on ``batches``."""
    train_config = load_train_config(train_config_path)
    torch.manual_seed(0)
    model = build_model(train_config.model, data.schema())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(batches[0]).loss.backward()  # warm-up
    start, sequences = time.perf_counter(), 0
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        model(batch).loss.backward()
        optimizer.step()
        sequences += batch.history_lengths.numel()
    return sequences / (time.perf_counter() - start)
