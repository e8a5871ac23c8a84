"""The pure side of ``dfgr bench gpu``: what a run does (:class:`Plan`), the batches that keep the
token count fixed across N, the analytic FLOPs, and the targets with their verdicts. No device
work here, so all of it is tested on CPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

SCHEMA = "dfgr-bench-gpu/1"
MODELS = ("dfgr", "metagr")
KERNELS = ("triton", "tiled", "padded")  # timed; correctness checks the same three against the reference
TRAINING_FACTOR = 3.0  # forward + backward = 3 x forward, as models/flops.py's BACKWARD_FACTOR
TARGET_SEQ_LEN = 4096
TARGETS = {"vs_padded": 5.0, "vs_tiled": 1.5, "memory_growth": 1.5, "matmul_fraction": 0.30, "flop_ratio": 0.95}


@dataclass(frozen=True)
class Dims:
    """The timed stack's widths: ``d_model``, layers, heads, query/key and value width per head."""

    d_model: int
    num_layers: int
    num_heads: int
    qk_dim: int
    v_dim: int


@dataclass(frozen=True)
class Plan:
    """Everything a run does; :func:`dfgr_torchrec.bench.gpu.plan_from_args` fills it from a preset and the flags."""

    seq_lens: Tuple[int, ...]
    tokens: int
    ragged: bool
    dims: Dims
    form: str
    warmup: int
    repeats: int
    max_cell_s: float
    matmul_size: int
    check_lengths: Tuple[int, ...]
    correctness_budget_s: float
    timing_budget_s: float
    kernels: Tuple[str, ...] = KERNELS
    models: Tuple[str, ...] = MODELS
    quick: bool = False
    seed: int = 0


# 65,536 history tokens per batch: 64 users at N = 1024, 16 at 4096, 4 at 16384.
FULL = dict(
    seq_lens=(1024, 4096, 16384),
    tokens=65536,
    dims=Dims(256, 2, 4, 64, 64),
    warmup=3,
    repeats=10,
    max_cell_s=20.0,
    matmul_size=8192,
    check_lengths=(300, 1, 0, 129, 64, 65, 200, 17),
    correctness_budget_s=120.0,
    timing_budget_s=240.0,
)
QUICK = dict(
    seq_lens=(64, 128, 256),
    tokens=1024,
    dims=Dims(64, 2, 2, 32, 32),
    warmup=1,
    repeats=3,
    max_cell_s=5.0,
    matmul_size=2048,
    check_lengths=(70, 1, 0, 33, 64, 9),
    correctness_budget_s=60.0,
    timing_budget_s=60.0,
)


def batch_lengths(seq_len: int, tokens: int, ragged: bool, seed: int = 0) -> List[int]:
    """One batch of exactly ``tokens`` history tokens at history length N = ``seq_len``.

    Fixed: ``tokens / N`` users of N each. Ragged: lengths drawn uniformly in ``[N/2, N]`` until the
    batch is full, the last user trimmed to what is left (so it may be shorter than N/2).
    """
    if seq_len <= 0 or tokens < seq_len or (not ragged and tokens % seq_len):
        raise ValueError(f"tokens ({tokens}) must be a positive multiple of every N (got N = {seq_len})")
    if not ragged:
        return [seq_len] * (tokens // seq_len)
    g = torch.Generator().manual_seed(seed + seq_len)
    lengths: List[int] = []
    while sum(lengths) < tokens:
        lengths.append(min(int(torch.randint(seq_len // 2, seq_len + 1, (1,), generator=g)), tokens - sum(lengths)))
    return lengths


def stack_forward_flops(model: str, lengths: Sequence[int], dims: Dims) -> float:
    """Forward FLOPs of one model's interaction stack over users of history ``lengths``.

    :mod:`dfgr_torchrec.models.flops`'s formulas without the head and the merge (outside the
    stack; that module is not imported because its package imports torchrec): ``P = 2 d (2 H v + 2 H a)``,
    ``O = 2 H v d``, ``A = 2 H (a + v)`` per visible pair; DFGR per layer ``2N P + 2N O + A N(N+1)``,
    its last layer ``2N P + N O + A N(N+1)/2``; MetaGR per layer ``2N P + 2N O + A N(2N+1)``, last
    ``2N P + N O + A N^2``. The work the model needs, not what a padded kernel computes.
    """
    d, h, a, v = dims.d_model, dims.num_heads, dims.qk_dim, dims.v_dim
    p, o, pair = 2 * d * (2 * h * v + 2 * h * a), 2 * h * v * d, 2 * h * (a + v)
    total = 0.0
    for n in map(float, lengths):
        if model == "dfgr":
            inner, last = 2 * n * p + 2 * n * o + pair * n * (n + 1), 2 * n * p + n * o + pair * n * (n + 1) / 2
        else:
            inner, last = 2 * n * p + 2 * n * o + pair * n * (2 * n + 1), 2 * n * p + n * o + pair * n * n
        total += (dims.num_layers - 1) * inner + last
    return total


def flop_ratio(lengths: Sequence[int], dims: Dims) -> float:
    """MetaGR's stack FLOPs over DFGR's: the speedup DFGR should show if both ran at the same rate."""
    return stack_forward_flops("metagr", lengths, dims) / stack_forward_flops("dfgr", lengths, dims)


def annotate(row: Dict, plan: Plan, lengths: Sequence[int]) -> Dict:
    """Adds a timed row's analytic training FLOPs and achieved TFLOP/s (in place; returns the row)."""
    if "median_ms" in row:
        row["train_flops"] = TRAINING_FACTOR * stack_forward_flops(row["model"], lengths, plan.dims)
        row["tflops"] = row["train_flops"] / (row["median_ms"] * 1e-3) / 1e12
    return row


def _find(rows: List[Dict], model: str, kernel: str, n: int) -> Optional[Dict]:
    return next((r for r in rows if (r["model"], r["kernel"], r["seq_len"]) == (model, kernel, n)), None)


def _ms(rows, model, kernel, n) -> Optional[float]:
    row = _find(rows, model, kernel, n)
    return row.get("median_ms") if row else None


def speedups(rows: List[Dict], plan: Plan) -> List[Dict]:
    """MetaGR time / DFGR time per (backend, N), against the analytic FLOP ratio."""
    out = []
    for n in plan.seq_lens:
        ratio = flop_ratio(batch_lengths(n, plan.tokens, plan.ragged, plan.seed), plan.dims)
        for kernel in plan.kernels:
            dfgr, metagr = _ms(rows, "dfgr", kernel, n), _ms(rows, "metagr", kernel, n)
            speedup = metagr / dfgr if dfgr and metagr else None
            out.append(
                {
                    "kernel": kernel,
                    "seq_len": n,
                    "speedup": speedup,
                    "flop_ratio": ratio,
                    "fraction_of_flop_ratio": speedup / ratio if speedup else None,
                }
            )
    return out


def _target(description: str, value, threshold, higher_is_better: bool = True, why: str = "") -> Dict:
    if value is None or threshold is None:
        return {
            "description": description,
            "value": None,
            "threshold": threshold,
            "pass": None,
            "why": why or "not measured",
        }
    ok = bool(value) if isinstance(value, bool) else (value >= threshold if higher_is_better else value <= threshold)
    return {"description": description, "value": value, "threshold": threshold, "pass": ok}


def target_seq_len(plan: Plan) -> int:
    """N = 4096 when timed, else the middle length (``--quick``)."""
    return TARGET_SEQ_LEN if TARGET_SEQ_LEN in plan.seq_lens else sorted(plan.seq_lens)[len(plan.seq_lens) // 2]


def kernel_verdicts(checks: List[Dict], kernels: Sequence[str]) -> Dict[str, Optional[bool]]:
    """Per backend: True if it passed every check, False if it failed one, None if checks were skipped."""
    verdicts: Dict[str, Optional[bool]] = {}
    for kernel in kernels:
        results = [c["kernels"].get(kernel, {}).get("pass") for c in checks if "kernels" in c]
        skipped = any("skipped" in c for c in checks) or not results
        verdicts[kernel] = False if False in results or None in results else (None if skipped else True)
    return verdicts


def worst_errors(checks: List[Dict], kernels: Sequence[str]) -> Dict[str, Dict[str, Optional[float]]]:
    """Per backend and dtype, the largest relative L2 error of any output or gradient (None: none measured)."""
    worst: Dict[str, Dict[str, Optional[float]]] = {}
    for kernel in kernels:
        for check in checks:
            errors = check.get("kernels", {}).get(kernel, {}).get("errors", {})
            values = [e["rel_l2"] for e in errors.values()]
            dtypes = worst.setdefault(kernel, {})
            known = dtypes.get(check["dtype"])
            dtypes[check["dtype"]] = max(values + ([known] if known is not None else []), default=None)
    return worst


def evaluate_targets(
    plan: Plan, rows: List[Dict], ratios: List[Dict], matmul_tflops: Optional[float], triton_correct: Optional[bool]
) -> Dict[str, Dict]:
    """The check's targets at N = :func:`target_seq_len`, each with its value and pass (None: not measured)."""
    n = target_seq_len(plan)
    tri, pad, til = (_ms(rows, "dfgr", k, n) for k in ("triton", "padded", "tiled"))
    ratio = next((r["fraction_of_flop_ratio"] for r in ratios if (r["kernel"], r["seq_len"]) == ("triton", n)), None)
    peaks = [(_find(rows, "dfgr", "triton", m) or {}).get("peak_mb") for m in (min(plan.seq_lens), max(plan.seq_lens))]
    tri_row = _find(rows, "dfgr", "triton", n) or {}
    fraction = tri_row["tflops"] / matmul_tflops if "tflops" in tri_row and matmul_tflops else None
    lo, hi = min(plan.seq_lens), max(plan.seq_lens)
    targets = {
        "triton_correct": _target(
            "triton equals the reference backend (fp32 and bf16, forward and gradients)", triton_correct, True
        ),
        "dfgr_triton_vs_padded": _target(
            f"DFGR fwd+bwd at N = {n}: padded time / triton time",
            pad / tri if pad and tri else None,
            TARGETS["vs_padded"],
        ),
        "dfgr_triton_vs_tiled": _target(
            f"DFGR fwd+bwd at N = {n}: tiled time / triton time",
            til / tri if til and tri else None,
            TARGETS["vs_tiled"],
        ),
        "triton_memory_linear": _target(
            f"memory linear in N: triton DFGR peak at N = {hi} / at N = {lo}, tokens per batch fixed "
            f"(linear: about 1; quadratic: {hi // lo})",
            peaks[1] / peaks[0] if None not in peaks else None,
            TARGETS["memory_growth"],
            higher_is_better=False,
        ),
        "triton_matmul_fraction": _target(
            f"triton DFGR at N = {n}: achieved TFLOP/s / measured bf16 matmul TFLOP/s",
            fraction,
            TARGETS["matmul_fraction"],
        ),
        "dfgr_metagr_speedup_vs_flops": _target(
            f"triton at N = {n}: (MetaGR time / DFGR time) / analytic FLOP ratio", ratio, TARGETS["flop_ratio"]
        ),
    }
    if plan.quick:
        for target in targets.values():
            target["note"] = "--quick: toy shapes; the thresholds are meant for the full run"
    return targets


def settings(plan: Plan) -> Dict:
    return {
        **{k: v for k, v in dataclasses.asdict(plan).items() if k != "dims"},
        "dims": dataclasses.asdict(plan.dims),
        "lengths": "ragged in [N/2, N], the last user trimmed to fill the batch"
        if plan.ragged
        else "fixed: every user N",
        "timing_dtype": "bfloat16 autocast over fp32 parameters (as recipes/train.py with train.bf16)",
        "timed": "forward + backward of the interaction stack: specs, encodings, blocks (dense layers "
        "included), final LayerNorm; no embeddings, head or optimizer step",
        "timer": "CUDA events around each step, after warm-up; median over repeats",
        "flops": "analytic stack FLOPs (models/flops.py formulas without head and merge) x 3 for training",
        "targets_at_seq_len": target_seq_len(plan),
    }
