"""``dfgr bench serving``: the cost of scoring one request, full recompute vs the history cache.

For every history length ``N`` and candidate count ``M`` it builds one user's request (``N``
interactions with timestamps, ``M`` candidates after them) and times, on this machine, in eval
mode under ``torch.inference_mode``:

- ``metagr_full`` / ``dfgr_full``: ``model.score_candidates(batch)``, history and candidates
  recomputed on every request;
- ``dfgr_cached`` / ``metagr_cached``: ``CachedScorer.score([state], candidates)`` against a
  state encoded beforehand (the candidate embedding lookup included);
- ``dfgr_append``: ``CachedScorer.append(state, one new interaction)`` then the cached score
  (the state holds ``N - 1`` interactions, so the scored history has ``N``; ``append`` returns a
  new state, so every repeat starts from the same one);
- ``hstu_full`` / ``hstu_cached``: the same two for ``hstu`` (Meta's ranker, one token per
  interaction, with a constant normaliser: the batch-max one cannot be cached);
- ``exported``: DFGR's candidate graph compiled once with AOTInductor (dynamic in ``M`` and the
  cached length, so one package serves every row), the lookup and ``graph_inputs`` included;

and, for ``B`` users per call, the requests/s of ``metagr_full``, ``dfgr_full`` and ``dfgr_cached``.
The paths of one measurement are timed in rounds, each round running every path once in a
rotating order, so machine noise hits them alike; a path leaves the rounds once it has at least
``--min-repeats`` samples and either ``--target-seconds`` of them or ``--max-repeats``. Each row
also holds the cache bytes per user and the largest logit difference of every cached or
compiled path from the path it stands in for.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional

import torch
from tabulate import tabulate

from dfgr_torchrec.batch import SequenceBatch, make_sequence_batch
from dfgr_torchrec.bench.output import write_json
from dfgr_torchrec.config import (
    InteractionConfig,
    ModelConfig,
    RankingModelConfig,
    SequenceEmbeddingConfig,
    TaskConfig,
    retype,
)
from dfgr_torchrec.features import ACTION_FEATURE, ITEM_FEATURE
from dfgr_torchrec.models import build_model
from dfgr_torchrec.serving.compile import compile_package, export_candidate_graph
from dfgr_torchrec.serving.graph import graph_inputs
from dfgr_torchrec.serving.scorer import CachedScorer

NUM_ITEMS, NUM_TASKS = 100_000, 2
ONE_REQUEST = (
    "metagr_full",
    "dfgr_full",
    "dfgr_cached",
    "metagr_cached",
    "dfgr_append",
    "exported",
    "hstu_full",
    "hstu_cached",
)
SERVED = ("dfgr", "metagr", "hstu")  # hstu with a constant normaliser (model_config), as serving needs
BATCHED = ("metagr_full", "dfgr_full", "dfgr_cached")
# The targets, checked at this (N, M) when it is measured.
TARGET_SHAPE = (1024, 64)
TARGETS = {"cached_vs_metagr_full": 20.0, "cached_vs_dfgr_full": 5.0, "max_abs_diff": 1e-5, "exported_over_cached": 1.2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[256, 1024, 4096], help="history lengths N")
    parser.add_argument("--num-candidates", type=int, nargs="+", default=[16, 64, 256], help="candidates M per request")
    parser.add_argument(
        "--batch-users", type=int, default=8, help="users per call in the batched measurement (0: skip)"
    )
    parser.add_argument(
        "--batched-max-seq-len",
        type=int,
        default=4096,
        help="skip the batched measurement above this N (MetaGR's padded 2N x 2N masks of B users need memory)",
    )
    parser.add_argument("--min-repeats", type=int, default=5, help="timed samples per path, at least")
    parser.add_argument("--max-repeats", type=int, default=50, help="timed samples per path, at most")
    parser.add_argument("--target-seconds", type=float, default=1.5, help="a path stops once its samples sum to this")
    parser.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="untimed runs of every path before the rounds, besides the one that checks the logits",
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the AOTInductor path (exported_ms null)")
    parser.add_argument("--package-dir", default=None, help="where the compiled package goes (default: a temp dir)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads; 1 (a request per core) by default: on a busy CPU more threads wait on each other",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="the whole bench this many times, each in a fresh process: per field the median and spread "
        "(the stable protocol; 1: once, in this process)",
    )
    parser.add_argument("--json", dest="json_path", default=None, help="write the results here")


def model_config(model_type: str, max_seq_len: int) -> ModelConfig:
    """configs/model/dfgr_small.yaml's dims, a 100k item table and 2 tasks (action = bitmask id)."""
    config = RankingModelConfig(
        embeddings=SequenceEmbeddingConfig(
            item_vocab_size=NUM_ITEMS,
            action_vocab_sizes={ACTION_FEATURE: 2**NUM_TASKS},
            embedding_dim=64,
            merge="concat",
        ),
        interaction=InteractionConfig(
            d_model=64,
            num_layers=2,
            num_heads=2,
            attention_dim=32,
            linear_dim=32,
            attention_form="pointwise",
            mask_mode="position",
            max_seq_len=max_seq_len,
            num_time_buckets=32,
            dropout=0.0,
            # DFGR's and MetaGR's normaliser; hstu's default (the batch's longest) cannot be cached
            attention_scale_len=max_seq_len if model_type == "hstu" else None,
        ),
        tasks=[TaskConfig(f"task{i}") for i in range(NUM_TASKS)],
        head_hidden_dims=[64],
    )
    return retype(config, model_type)


@dataclass
class Request:
    """One user's request, as Python lists (a history, its times, candidates after it)."""

    items: List[int]
    actions: List[int]
    times: List[int]
    candidates: List[int]
    candidate_times: List[int]


def make_requests(num_users: int, seq_len: int, num_candidates: int, seed: int) -> List[Request]:
    g = torch.Generator().manual_seed(seed)
    requests = []
    for _ in range(num_users):
        gaps = torch.randint(0, 3600, (seq_len,), generator=g)
        times = (1_600_000_000 + torch.cumsum(gaps, 0)).tolist()
        requests.append(
            Request(
                items=torch.randint(1, NUM_ITEMS, (seq_len,), generator=g).tolist(),
                actions=torch.randint(0, 2**NUM_TASKS, (seq_len,), generator=g).tolist(),
                times=times,
                candidates=torch.randint(1, NUM_ITEMS, (num_candidates,), generator=g).tolist(),
                candidate_times=[times[-1] + 60] * num_candidates,
            )
        )
    return requests


def to_batch(requests: List[Request], history: slice = slice(None), candidates: bool = True) -> SequenceBatch:
    """The requests as one batch: their histories cut to ``history``, with or without candidates."""
    cands = [r.candidates if candidates else [] for r in requests]
    return make_sequence_batch(
        history={
            ITEM_FEATURE: [r.items[history] for r in requests],
            ACTION_FEATURE: [r.actions[history] for r in requests],
        },
        timestamps=[r.times[history] for r in requests],
        labels=[[[0.0] * NUM_TASKS for _ in r.items[history]] for r in requests],
        candidates={ITEM_FEATURE: cands},
        candidate_timestamps=[r.candidate_times if candidates else [] for r in requests],
        candidate_labels=[[[0.0] * NUM_TASKS for _ in c] for c in cands],
        num_tasks=NUM_TASKS,
    )


def percentile(samples: List[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linearly interpolated between order statistics."""
    ordered = sorted(samples)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def time_interleaved(paths: Dict[str, Callable[[], Any]], args: argparse.Namespace) -> Dict[str, List[float]]:
    """Seconds per call of every path, sampled in rounds that run each still-active path once."""
    for _ in range(args.warmup):
        for fn in paths.values():
            fn()
    samples: Dict[str, List[float]] = {name: [] for name in paths}
    names = list(paths)
    for round_index in range(args.max_repeats):
        active = [n for n in names if len(samples[n]) < args.min_repeats or sum(samples[n]) < args.target_seconds]
        if not active:
            break
        shift = round_index % len(active)
        for name in active[shift:] + active[:shift]:  # rotate, so no path always runs first
            start = time.perf_counter()
            paths[name]()
            samples[name].append(time.perf_counter() - start)
    return samples


def summarize(samples: List[float], users: int = 1) -> Dict[str, float]:
    """p50 / p99 ms per call, and users served per second at the mean call time."""
    return {
        "ms": 1000 * percentile(samples, 50),
        "p99_ms": 1000 * percentile(samples, 99),
        "rps": users * len(samples) / sum(samples),
        "repeats": len(samples),
    }


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) if a.numel() else 0.0


class Models:
    """The served models (same seed, same dims), their cached scorers and DFGR's compiled graph."""

    def __init__(self, args: argparse.Namespace) -> None:
        max_len = max(args.seq_lens)
        self.models = {}
        for name in SERVED:
            torch.manual_seed(args.seed)
            self.models[name] = build_model(model_config(name, max_len)).eval()
        self.scorers = {name: CachedScorer(model) for name, model in self.models.items()}
        self.runner = None if args.no_compile else self._compile(args)

    def _compile(self, args: argparse.Namespace):
        directory = args.package_dir or tempfile.mkdtemp(prefix="dfgr-bench-serving-")
        os.makedirs(directory, exist_ok=True)
        start = time.perf_counter()
        path = compile_package(export_candidate_graph(self.models["dfgr"]), os.path.join(directory, "scoring_aoti.pt2"))
        self.compile_s = time.perf_counter() - start
        print(f"compiled the candidate graph in {self.compile_s:.0f} s: {path}", flush=True)
        return torch._inductor.aoti_load_package(path)

    def exported(self, state, candidates: SequenceBatch) -> torch.Tensor:
        model = self.models["dfgr"]
        embedded = model.embedding(candidates.features).candidates.values()
        return self.runner(*graph_inputs(model.interaction, state, embedded, candidates.candidate_timestamps))


def one_request_paths(models: Models, request: Request) -> Dict[str, Any]:
    """The one-user paths as zero-argument callables, with the states and check values they need."""
    full, cands = to_batch([request]), to_batch([request], history=slice(0, 0))
    prev, new = to_batch([request], slice(0, -1), False), to_batch([request], slice(-1, None), False)
    dfgr, metagr = models.scorers["dfgr"], models.scorers["metagr"]
    hstu = models.scorers["hstu"]
    d_state, m_state, h_state = dfgr.encode(full)[0], metagr.encode(full)[0], hstu.encode(full)[0]
    d_prev = dfgr.encode(prev)[0]
    paths = {
        "metagr_full": lambda: models.models["metagr"].score_candidates(full).values(),
        "dfgr_full": lambda: models.models["dfgr"].score_candidates(full).values(),
        "dfgr_cached": lambda: dfgr.score([d_state], cands).values(),
        "metagr_cached": lambda: metagr.score([m_state], cands).values(),
        "dfgr_append": lambda: dfgr.score([dfgr.append(d_prev, new)], cands).values(),
        "hstu_full": lambda: models.models["hstu"].score_candidates(full).values(),
        "hstu_cached": lambda: hstu.score([h_state], cands).values(),
    }
    if models.runner is not None:
        paths["exported"] = lambda: models.exported(d_state, cands)
    return {"paths": paths, "bytes": {"dfgr": d_state.nbytes, "metagr": m_state.nbytes, "hstu": h_state.nbytes}}


def measure_one_request(models: Models, request: Request, args: argparse.Namespace) -> Dict[str, Any]:
    built = one_request_paths(models, request)
    paths = built["paths"]
    out = {name: fn() for name, fn in paths.items()}
    row: Dict[str, Any] = {
        "dfgr_cache_bytes": built["bytes"]["dfgr"],
        "metagr_cache_bytes": built["bytes"]["metagr"],
        "max_abs_diff": max(
            max_abs_diff(out["dfgr_cached"], out["dfgr_full"]), max_abs_diff(out["dfgr_append"], out["dfgr_full"])
        ),
        "metagr_max_abs_diff": max_abs_diff(out["metagr_cached"], out["metagr_full"]),
        "hstu_cache_bytes": built["bytes"]["hstu"],
        "hstu_max_abs_diff": max_abs_diff(out["hstu_cached"], out["hstu_full"]),
        "exported_max_abs_diff": max_abs_diff(out["exported"], out["dfgr_cached"]) if "exported" in out else None,
        "cached_finite": bool(torch.isfinite(out["dfgr_cached"]).all()),
    }
    samples = time_interleaved(paths, args)
    for name in ONE_REQUEST:
        stats = summarize(samples[name]) if name in samples else dict.fromkeys(("ms", "p99_ms", "rps", "repeats"))
        row.update({f"{name}_{key}": value for key, value in stats.items()})
    return row


def measure_batched(models: Models, requests: List[Request], args: argparse.Namespace) -> Dict[str, Any]:
    full, cands = to_batch(requests), to_batch(requests, history=slice(0, 0))
    dfgr = models.scorers["dfgr"]
    states = dfgr.encode(full)
    paths = {
        "metagr_full": lambda: models.models["metagr"].score_candidates(full).values(),
        "dfgr_full": lambda: models.models["dfgr"].score_candidates(full).values(),
        "dfgr_cached": lambda: dfgr.score(states, cands).values(),
    }
    diff = max_abs_diff(paths["dfgr_cached"](), paths["dfgr_full"]())
    paths["metagr_full"]()  # warm, as the two above
    samples = time_interleaved(paths, args)
    row: Dict[str, Any] = {"batched_max_abs_diff": diff}
    for name in BATCHED:
        stats = summarize(samples[name], users=len(requests))
        row[f"batched_{name}_ms"] = stats["ms"]
        row[f"batched_{name}_rps"] = stats["rps"]
    return row


def bench_one(models: Models, seq_len: int, num_candidates: int, args: argparse.Namespace) -> Dict[str, Any]:
    users = max(args.batch_users, 1)
    requests = make_requests(users, seq_len, num_candidates, args.seed + 7919 * seq_len + num_candidates)
    row: Dict[str, Any] = {"seq_len": seq_len, "num_candidates": num_candidates, "batch_users": args.batch_users}
    row.update(measure_one_request(models, requests[0], args))
    if args.batch_users > 0 and seq_len <= args.batched_max_seq_len:
        row.update(measure_batched(models, requests, args))
    else:
        row.update({f"batched_{name}_{key}": None for name in BATCHED for key in ("ms", "rps")})
        row["batched_max_abs_diff"] = None
    row["cached_speedup_vs_metagr_full"] = row["metagr_full_ms"] / row["dfgr_cached_ms"]
    row["cached_speedup_vs_dfgr_full"] = row["dfgr_full_ms"] / row["dfgr_cached_ms"]
    row["exported_over_cached"] = None if row["exported_ms"] is None else row["exported_ms"] / row["dfgr_cached_ms"]
    return row


def check_targets(rows: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The issue's targets at ``TARGET_SHAPE``, each with its measured value and whether it is met."""
    row = next((r for r in rows if (r["seq_len"], r["num_candidates"]) == TARGET_SHAPE), None)
    if row is None:
        return None
    measured = {
        "cached_vs_metagr_full": row["cached_speedup_vs_metagr_full"],
        "cached_vs_dfgr_full": row["cached_speedup_vs_dfgr_full"],
        "max_abs_diff": row["max_abs_diff"],
        "exported_over_cached": row["exported_over_cached"],
    }
    met = {
        "cached_vs_metagr_full": measured["cached_vs_metagr_full"] >= TARGETS["cached_vs_metagr_full"],
        "cached_vs_dfgr_full": measured["cached_vs_dfgr_full"] >= TARGETS["cached_vs_dfgr_full"],
        "max_abs_diff": measured["max_abs_diff"] <= TARGETS["max_abs_diff"],
        "exported_over_cached": None
        if measured["exported_over_cached"] is None
        else measured["exported_over_cached"] <= TARGETS["exported_over_cached"],
    }
    shape = {"seq_len": TARGET_SHAPE[0], "num_candidates": TARGET_SHAPE[1]}
    return {**shape, "targets": TARGETS, "measured": measured, "met": met}


def run(args: argparse.Namespace) -> Dict[str, Any]:
    if args.runs > 1:
        return run_isolated(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    models = Models(args)  # outside inference mode: torch.export traces the parameters
    with torch.inference_mode():
        for seq_len in args.seq_lens:
            for num_candidates in args.num_candidates:
                row = bench_one(models, seq_len, num_candidates, args)
                rows.append(row)
                print(
                    f"N={seq_len} M={num_candidates}: cached {row['dfgr_cached_ms']:.2f} ms, "
                    f"{row['cached_speedup_vs_metagr_full']:.1f}x vs MetaGR full, "
                    f"{row['cached_speedup_vs_dfgr_full']:.1f}x vs DFGR full",
                    flush=True,
                )
    result = {
        "benchmark": "serving",
        "device": "cpu",
        "machine": {"arch": platform.machine(), "cpu": cpu_name(), "cpus": os.cpu_count(), "load_avg": os.getloadavg()},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "compile_s": getattr(models, "compile_s", None),
        "config": {k: v for k, v in vars(args).items() if k not in ("json_path", "run")},
        "model_config": {name: asdict(model_config(name, max(args.seq_lens))) for name in SERVED},
        "notes": NOTES,
        "targets": check_targets(rows),
        "rows": rows,
    }
    print(format_table(rows))
    write_json(result, args.json_path)
    return result


CHILD_FLAGS = ("seq_lens", "num_candidates", "batch_users", "batched_max_seq_len", "min_repeats", "max_repeats")
CHILD_FLAGS += ("target_seconds", "warmup", "no_compile", "threads", "seed")


def run_isolated(args: argparse.Namespace) -> Dict[str, Any]:
    """The bench ``args.runs`` times in fresh processes; each row's numbers as median, spread and runs."""
    from dfgr_torchrec.bench.isolated import flags_of, medians, run_repeated, summarise_rows

    load_at_start = os.getloadavg()
    cmd = [sys.executable, "-m", "dfgr_torchrec.cli", "bench", "serving", *flags_of(args, CHILD_FLAGS)]
    results = run_repeated(cmd, args.runs)
    rows = summarise_rows(results, ("seq_len", "num_candidates", "batch_users"))
    result = {
        **{k: results[0][k] for k in ("benchmark", "device", "torch", "threads", "model_config", "notes")},
        "protocol": f"isolated: the whole bench in a fresh process, {args.runs} runs in turn; "
        "each number is the median over runs, its spread (max - min) / median",
        "machine": {**results[0]["machine"], "load_avg_at_start": load_at_start, "load_avg": os.getloadavg()},
        "compile_s": [r["compile_s"] for r in results],
        "cpu": [r["cpu"] for r in results],
        "config": {k: v for k, v in vars(args).items() if k not in ("json_path", "run")},
        "targets": check_targets(medians(rows)),
        "rows": rows,
    }
    print(format_table(medians(rows)))
    write_json(result, args.json_path)
    return result


NOTES = {
    "ms": "p50 / p99 wall ms of one call (linear interpolation; with few samples p99 is near the max)",
    "rps": "users scored per second at the mean call time, one call at a time",
    "cache_bytes": "HistoryState.nbytes of one user: inputs, order keys, per-layer keys and values",
    "max_abs_diff": "largest |cached - full| DFGR logit, over the cached and the append-then-score paths",
    "exported_max_abs_diff": "largest |AOTInductor - eager cached| DFGR logit",
}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return platform.processor()


def format_table(rows: List[Dict[str, Any]]) -> str:
    columns = [
        ("N", "seq_len"),
        ("M", "num_candidates"),
        ("MetaGR full ms", "metagr_full_ms"),
        ("DFGR full ms", "dfgr_full_ms"),
        ("DFGR cached ms", "dfgr_cached_ms"),
        ("cached p99", "dfgr_cached_p99_ms"),
        ("MetaGR cached ms", "metagr_cached_ms"),
        ("append ms", "dfgr_append_ms"),
        ("AOTI ms", "exported_ms"),
        ("HSTU full ms", "hstu_full_ms"),
        ("HSTU cached ms", "hstu_cached_ms"),
        ("x MetaGR", "cached_speedup_vs_metagr_full"),
        ("x DFGR", "cached_speedup_vs_dfgr_full"),
        ("max diff", "max_abs_diff"),
        ("DFGR KiB", "dfgr_cache_bytes"),
        ("MetaGR KiB", "metagr_cache_bytes"),
        ("B rps MetaGR", "batched_metagr_full_rps"),
        ("B rps DFGR", "batched_dfgr_full_rps"),
        ("B rps cached", "batched_dfgr_cached_rps"),
    ]
    table = [[r[key] / 1024 if key.endswith("_bytes") else r[key] for _, key in columns] for r in rows]
    formats = [
        ".1e" if key == "max_abs_diff" else ".0f" if key.endswith(("_bytes", "_rps")) else ".2f" for _, key in columns
    ]
    return tabulate(table, headers=[h for h, _ in columns], floatfmt=formats, missingval="-")
