"""``dfgr bench attention``: DFGR vs MetaGR cost, side by side in one run.

Both models share dims, layers, heads, embeddings and heads; they differ only in the sequence
layout (DFGR: two N x N attentions per layer; MetaGR: one 2N x 2N). For each history length
N it times a training step (forward + backward) and inference (N history + M candidates) on a
ragged batch, alternating the two models so machine noise hits both alike, and reports the
median times, the MetaGR/DFGR ratios and the peak memory of each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import asdict, replace
from typing import Any, Callable, Dict, List

import torch
from tabulate import tabulate

from dfgr_torchrec.batch import SequenceBatch
from dfgr_torchrec.bench.memory import measure_peak
from dfgr_torchrec.bench.output import write_json
from dfgr_torchrec.config import InteractionConfig, RankingModelConfig, SequenceEmbeddingConfig, TaskConfig
from dfgr_torchrec.data.synthetic import SyntheticSequences
from dfgr_torchrec.features import ACTION_FEATURE
from dfgr_torchrec.models import build_model

MODEL_TYPES = ("dfgr", "metagr")  # the pair compared, from the model registry


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[256, 512, 1024], help="history lengths N")
    parser.add_argument("--num-candidates", type=int, default=64, help="candidates M per user at inference")
    parser.add_argument("--batch-size", type=int, default=4, help="users per batch (lengths ragged in [N/2, N])")
    parser.add_argument("--repeats", type=int, default=9, help="timed repetitions per measurement (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--num-heads", type=int, default=2)
    parser.add_argument("--attention-form", default="pointwise", choices=["pointwise", "softmax"])
    parser.add_argument("--mask-mode", default="position", choices=["position", "session"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", dest="json_path", default=None, help="write the results here")


def _config(args: argparse.Namespace, max_len: int) -> RankingModelConfig:
    head_dim = args.d_model // args.num_heads
    return RankingModelConfig(
        embeddings=SequenceEmbeddingConfig(
            item_vocab_size=100_000, action_vocab_sizes={ACTION_FEATURE: 4}, embedding_dim=args.d_model
        ),
        interaction=InteractionConfig(
            d_model=args.d_model,
            num_layers=args.num_layers,
            num_heads=args.num_heads,
            attention_dim=head_dim,
            linear_dim=head_dim,
            attention_form=args.attention_form,
            mask_mode=args.mask_mode,
            max_seq_len=max_len,
        ),
        tasks=[TaskConfig("task0"), TaskConfig("task1")],
    )


def ragged_batch(seq_len: int, args: argparse.Namespace) -> SequenceBatch:
    """A batch whose longest history is exactly ``seq_len``, the others drawn in ``[seq_len/2, seq_len]``."""
    world = SyntheticSequences(num_items=100_000, num_tasks=2, seed=args.seed)
    g = torch.Generator().manual_seed(args.seed + seq_len)
    lengths = torch.randint(seq_len // 2, seq_len + 1, (args.batch_size,), generator=g)
    lengths[0] = seq_len  # so both models pad to N
    return world.batch(args.batch_size, 0, 0, args.num_candidates, g, lengths=lengths)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def bench_one_length(seq_len: int, args: argparse.Namespace) -> Dict[str, Any]:
    device = torch.device(args.device)
    batch = ragged_batch(seq_len, args).to(device)
    models = {}
    for name in MODEL_TYPES:
        torch.manual_seed(args.seed)
        models[name] = build_model(replace(_config(args, seq_len), type=name), device=device)

    def train_step(model: torch.nn.Module) -> None:
        model.train()
        model.zero_grad(set_to_none=True)
        model(batch).loss.backward()

    def infer(model: torch.nn.Module) -> None:
        model.eval()
        with torch.inference_mode():
            model.score_candidates(batch)

    row: Dict[str, Any] = {
        "seq_len": seq_len,
        "num_candidates": args.num_candidates,
        "batch_size": args.batch_size,
        "history_tokens": int(batch.history_lengths.sum()),
    }
    for phase, step in (("train", train_step), ("infer", infer)):
        for _ in range(args.warmup):
            for model in models.values():
                step(model)
        times: Dict[str, List[float]] = {name: [] for name in models}
        for _ in range(args.repeats):
            for name, model in models.items():  # alternate, so noise hits both
                times[name].append(_timed(lambda: step(model), device))
        for name, model in models.items():
            row[f"{name}_{phase}_ms"] = 1000 * statistics.median(times[name])
            _, peak = measure_peak(lambda: step(model), device)
            row[f"{name}_{phase}_peak_mb"] = None if peak is None else peak / 2**20
        row[f"{phase}_speedup"] = row[f"metagr_{phase}_ms"] / row[f"dfgr_{phase}_ms"]
    return row


def run(args: argparse.Namespace) -> Dict[str, Any]:
    rows = []
    for seq_len in args.seq_lens:
        row = bench_one_length(seq_len, args)
        rows.append(row)
        print(
            f"N={seq_len}: train {row['train_speedup']:.2f}x, infer {row['infer_speedup']:.2f}x",
            flush=True,
        )
    result = {
        "benchmark": "attention",
        "device": str(args.device),
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else os.uname().machine,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "config": {k: v for k, v in vars(args).items() if k != "json_path"},
        "model_config": asdict(_config(args, max(args.seq_lens))),
        "memory_note": "peak_mb: CUDA max_memory_allocated, or on CPU the rise of the process RSS high-water mark",
        "rows": rows,
    }
    print(format_table(rows))
    write_json(result, args.json_path)
    return result


def format_table(rows: List[Dict[str, Any]]) -> str:
    headers = [
        "N", "M", "DFGR train ms", "MetaGR train ms", "train x", "DFGR infer ms", "MetaGR infer ms", "infer x",
        "DFGR train MB", "MetaGR train MB",
    ]
    table = [
        [
            r["seq_len"], r["num_candidates"], r["dfgr_train_ms"], r["metagr_train_ms"], r["train_speedup"],
            r["dfgr_infer_ms"], r["metagr_infer_ms"], r["infer_speedup"], r["dfgr_train_peak_mb"],
            r["metagr_train_peak_mb"],
        ]
        for r in rows
    ]
    return tabulate(table, headers=headers, floatfmt=".2f")
