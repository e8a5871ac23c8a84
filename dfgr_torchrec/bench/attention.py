"""``dfgr bench attention``: DFGR vs MetaGR cost, side by side in one run.

Both models share dims, layers, heads, embeddings and heads; they differ only in the sequence
layout (DFGR: two N x N attentions per layer; MetaGR: one 2N x 2N). For each history length
N it times a training step (forward + backward) and inference (N history + M candidates) on a
ragged batch, alternating the two models so machine noise hits both alike, and reports the
median times, the MetaGR/DFGR ratios and the peak memory of each.

``--kernels`` runs each model once per attention backend (default ``padded`` and ``tiled``), all
in the same alternation, so backends are compared under the same noise. Each training path also
reports its achieved GFLOP/s from the analytic FLOPs (:func:`dfgr_torchrec.models.flops.training_flops`),
next to a matmul-peak GFLOP/s measured in the same run; the row's flat ``dfgr_*``/``metagr_*``
fields are the first kernel's, ``kernels`` holds every kernel's.
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
from dfgr_torchrec.data.synthetic_batches import SyntheticSequences
from dfgr_torchrec.features import ACTION_FEATURE
from dfgr_torchrec.models import build_model
from dfgr_torchrec.models.flops import training_flops
from dfgr_torchrec.ops.kinds import AttentionKernel

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
    parser.add_argument(
        "--kernels",
        nargs="+",
        default=["padded", "tiled"],
        choices=[k.value for k in AttentionKernel],
        help="attention backends compared in the same run (the first fills the flat fields)",
    )
    parser.add_argument("--models", nargs="+", default=list(MODEL_TYPES), choices=list(MODEL_TYPES))
    parser.add_argument("--json", dest="json_path", default=None, help="write the results here")
    parser.add_argument(
        "--isolate", action="store_true", help="each kernel/model path in its own process (the stable protocol)"
    )
    parser.add_argument("--runs", type=int, default=3, help="with --isolate: how many times each path runs")
    parser.add_argument(
        "--contend", action="store_true", help="with --isolate: a matmul loop in another process throughout"
    )


def _config(args: argparse.Namespace, max_len: int, kernel: str = "padded") -> RankingModelConfig:
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
            kernel=kernel,
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


def matmul_peak_gflops(device: torch.device, size: int = 1024, repeats: int = 5) -> float:
    """GFLOP/s of a square fp32 matmul, the best of ``repeats``: the machine's attainable peak now."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    torch.matmul(a, b)
    best = min(_timed(lambda: torch.matmul(a, b), device) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _steps(batch: SequenceBatch) -> Dict[str, Callable[[torch.nn.Module], None]]:
    def train_step(model: torch.nn.Module) -> None:
        model.train()
        model.zero_grad(set_to_none=True)
        model(batch).loss.backward()

    def infer(model: torch.nn.Module) -> None:
        model.eval()
        with torch.inference_mode():
            model.score_candidates(batch)

    return {"train": train_step, "infer": infer}


def _measure(models: Dict[tuple, torch.nn.Module], batch: SequenceBatch, args, device) -> Dict[tuple, float]:
    """``{(kernel, model, phase, "ms" | "peak_mb"): value}``, every path alternated with the others."""
    out: Dict[tuple, float] = {}
    for phase, step in _steps(batch).items():
        for _ in range(args.warmup):
            for model in models.values():
                step(model)
        times: Dict[tuple, List[float]] = {key: [] for key in models}
        for _ in range(args.repeats):
            for key, model in models.items():  # alternate, so noise hits all alike
                times[key].append(_timed(lambda: step(model), device))  # noqa: B023 (timed now, in this iteration)
        for key, model in models.items():
            out[(*key, phase, "ms")] = 1000 * statistics.median(times[key])
            _, peak = measure_peak(lambda: step(model), device)  # noqa: B023 (run now)
            out[(*key, phase, "peak_mb")] = None if peak is None else peak / 2**20
    return out


def _kernel_fields(kernel: str, measured, flops: Dict[str, float], args) -> Dict[str, Any]:
    fields: Dict[str, Any] = {}
    for name in args.models:
        for phase in ("train", "infer"):
            for unit in ("ms", "peak_mb"):
                fields[f"{name}_{phase}_{unit}"] = measured[(kernel, name, phase, unit)]
        fields[f"{name}_train_gflops"] = flops[name] / (fields[f"{name}_train_ms"] / 1000) / 1e9
    if set(MODEL_TYPES) <= set(args.models):
        for phase in ("train", "infer"):
            fields[f"{phase}_speedup"] = fields[f"metagr_{phase}_ms"] / fields[f"dfgr_{phase}_ms"]
    return fields


def bench_one_length(seq_len: int, args: argparse.Namespace) -> Dict[str, Any]:
    device = torch.device(args.device)
    batch = ragged_batch(seq_len, args).to(device)
    models, flops = {}, {}
    for kernel in args.kernels:
        for name in args.models:
            torch.manual_seed(args.seed)
            config = replace(_config(args, seq_len, kernel), type=name)
            models[(kernel, name)] = build_model(config, device=device)
            flops[name] = training_flops(config, batch.history_lengths.cpu())
    row: Dict[str, Any] = {
        "seq_len": seq_len,
        "num_candidates": args.num_candidates,
        "batch_size": args.batch_size,
        "history_tokens": int(batch.history_lengths.sum()),
        "kernel": args.kernels[0],
        "matmul_peak_gflops": matmul_peak_gflops(device),
    }
    if set(MODEL_TYPES) <= set(args.models):
        row["analytic_flop_ratio"] = flops["metagr"] / flops["dfgr"]  # MetaGR / DFGR training FLOPs
    measured = _measure(models, batch, args, device)
    row["kernels"] = {k: _kernel_fields(k, measured, flops, args) for k in args.kernels}
    if "analytic_flop_ratio" in row:  # how much of the FLOP saving each backend turns into time
        for fields in row["kernels"].values():
            fields["train_speedup_of_analytic"] = fields["train_speedup"] / row["analytic_flop_ratio"]
    row.update(row["kernels"][args.kernels[0]])
    row["matmul_peak_gflops_after"] = matmul_peak_gflops(device)
    for kernel in args.kernels[1:]:  # each other backend against the first: time and memory ratios
        for name in args.models:
            for phase in ("train", "infer"):
                this, first = row["kernels"][kernel], row["kernels"][args.kernels[0]]
                row[f"{kernel}_over_{args.kernels[0]}_{name}_{phase}_time"] = (
                    this[f"{name}_{phase}_ms"] / first[f"{name}_{phase}_ms"]
                )
    return row


def run(args: argparse.Namespace) -> Dict[str, Any]:
    if getattr(args, "isolate", False):
        from dfgr_torchrec.bench.isolated import run_isolated

        return run_isolated(args)
    rows = []
    for seq_len in args.seq_lens:
        row = bench_one_length(seq_len, args)
        rows.append(row)
        for kernel, fields in row["kernels"].items():
            if "train_speedup" in fields:
                print(
                    f"N={seq_len} {kernel}: train {fields['train_speedup']:.2f}x, infer {fields['infer_speedup']:.2f}x "
                    f"(analytic {row['analytic_flop_ratio']:.2f}x: train at {100 * fields['train_speedup_of_analytic']:.0f}% of it)",
                    flush=True,
                )
        print(format_table([row]), flush=True)  # each length as it finishes; the whole table at the end
    result = {
        "benchmark": "attention",
        "device": str(args.device),
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else os.uname().machine,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),  # other work on the machine skews times
        "config": {k: v for k, v in vars(args).items() if k not in ("json_path", "run", "isolate", "runs", "contend")},
        "model_config": asdict(_config(args, max(args.seq_lens), args.kernels[0])),
        "memory_note": "peak_mb: CUDA max_memory_allocated, or on CPU the rise of the process RSS high-water mark",
        "flops_note": "train_gflops: analytic training FLOPs (models/flops.training_flops) / median train time; "
        "matmul_peak_gflops: best square fp32 1024 matmul, measured before (and _after) the row",
        "rows": rows,
    }
    print(format_table(rows))
    write_json(result, args.json_path)
    return result


def format_table(rows: List[Dict[str, Any]]) -> str:
    headers = [
        "N",
        "kernel",
        "DFGR train ms",
        "MetaGR train ms",
        "train x",
        "FLOP x",
        "DFGR infer ms",
        "MetaGR infer ms",
        "infer x",
        "DFGR train MB",
        "MetaGR train MB",
        "DFGR GF/s",
        "MetaGR GF/s",
        "matmul GF/s",
    ]
    table = []
    for r in rows:
        for kernel, k in r["kernels"].items():
            table.append(
                [
                    r["seq_len"],
                    kernel,
                    k.get("dfgr_train_ms"),
                    k.get("metagr_train_ms"),
                    k.get("train_speedup"),
                    r.get("analytic_flop_ratio"),
                    k.get("dfgr_infer_ms"),
                    k.get("metagr_infer_ms"),
                    k.get("infer_speedup"),
                    k.get("dfgr_train_peak_mb"),
                    k.get("metagr_train_peak_mb"),
                    k.get("dfgr_train_gflops"),
                    k.get("metagr_train_gflops"),
                    r["matmul_peak_gflops"],
                ]
            )
    return tabulate(table, headers=headers, floatfmt=".2f")
