"""``dfgr bench gpu`` (or ``python -m dfgr_torchrec.bench.gpu``): the one GPU check, made for a person
with 15 minutes on a CUDA machine that has torch (+ triton) and nothing else of this project's
dependencies (no torchrec, fbgemm, duckdb, tabulate). It runs in under 8 minutes on an H200
(per-section time guards; ``--quick``: toy shapes, a smoke test) and writes one JSON:

1. ``correctness``: the ``triton`` backend (and ``tiled``, ``padded``) against the ``reference``
   backend in float64, forward and every input gradient, fp32 with TF32 off and bf16, both
   attention forms, with and without the self term, on a ragged batch.
2. ``timing``: forward + backward of DFGR's and MetaGR's interaction stacks (the models' training
   step minus embeddings, head and optimizer: see :mod:`.gpu_work`) under bf16 autocast, per
   backend and history length N, the batch's token count fixed; peak memory; ``"oom": true``.
3. ``matmul``: the bf16 matmul peak measured in the same run; ``speedups``: MetaGR time / DFGR
   time against the analytic FLOP ratio; ``targets``: each target with pass/fail.

Without CUDA it prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
from typing import Callable, Dict, List, Tuple

import torch

from dfgr_torchrec.bench.gpu_plan import (
    FULL,
    QUICK,
    SCHEMA,
    Plan,
    annotate,
    batch_lengths,
    evaluate_targets,
    kernel_verdicts,
    settings,
    speedups,
    worst_errors,
)
from dfgr_torchrec.bench.output import write_json

NO_GPU = (
    "dfgr bench gpu: needs a CUDA GPU, and torch {torch} sees none here "
    "(run it on a GPU machine: docs/benchmarks.md, 'Running the GPU check')"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", dest="json_path", default=None, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="toy shapes: a smoke test of the command (seconds)")
    parser.add_argument("--seq-lens", type=int, nargs="+", default=None, help="history lengths N (1024 4096 16384)")
    parser.add_argument(
        "--tokens", type=int, default=None, help="history tokens per batch, the same at every N (65536)"
    )
    parser.add_argument("--ragged", action="store_true", help="lengths drawn in [N/2, N] (default: every user N)")
    parser.add_argument("--attention-form", default="pointwise", choices=["pointwise", "softmax"], help="timed form")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per cell after warm-up (10)")
    parser.add_argument("--correctness-budget-s", type=float, default=None, help="time guard (120 s)")
    parser.add_argument("--timing-budget-s", type=float, default=None, help="time guard (240 s)")
    parser.add_argument("--seed", type=int, default=0)


def plan_from_args(args: argparse.Namespace) -> Plan:
    preset = dict(QUICK if args.quick else FULL)
    for key in ("seq_lens", "tokens", "repeats", "correctness_budget_s", "timing_budget_s"):
        if getattr(args, key, None) is not None:
            preset[key] = tuple(getattr(args, key)) if key == "seq_lens" else getattr(args, key)
    plan = Plan(**preset, ragged=args.ragged, form=args.attention_form, quick=args.quick, seed=args.seed)
    for n in plan.seq_lens:  # a bad shape is an argument error here, not a crash on the GPU
        batch_lengths(n, plan.tokens, plan.ragged, plan.seed)
    return plan


def run_cells(
    plan: Plan, measure: Callable[[str, str, List[int], int], Dict], deadline: float, log: Callable[[str], None] = print
) -> List[Dict]:
    """Every (N, backend, model) cell in order; after a backend's OOM at N its larger N are marked OOM too
    (at a fixed token count they need more memory), and cells left at ``deadline`` are marked skipped."""
    rows: List[Dict] = []
    oom_at: Dict[Tuple[str, str], int] = {}
    for n in plan.seq_lens:
        lengths = batch_lengths(n, plan.tokens, plan.ragged, plan.seed)
        for kernel in plan.kernels:
            for model in plan.models:
                row = {"model": model, "kernel": kernel, "seq_len": n, "users": len(lengths), "tokens": sum(lengths)}
                if (model, kernel) in oom_at:
                    row.update(oom=True, inferred=f"out of memory at N = {oom_at[(model, kernel)]} already")
                elif time.monotonic() > deadline:
                    row["skipped"] = "time guard"
                else:
                    row.update(measure(model, kernel, lengths, n))
                    if row.get("oom"):
                        oom_at[(model, kernel)] = n
                    annotate(row, plan, lengths)
                rows.append(row)
                log(row_line(row))
    return rows


def row_line(row: Dict) -> str:
    """One cell as a line of the progress log and the summary."""
    head = f"{row['model']:>6} {row['kernel']:>7} N={row['seq_len']:>6} x{row['users']:<4}"
    if "median_ms" in row:
        peak = f"{row['peak_mb']:9.0f} MB" if row.get("peak_mb") is not None else "        - MB"
        return f"{head} {row['median_ms']:10.2f} ms (spread {row.get('spread', 0):.0%}) {peak} {row['tflops']:7.1f} TFLOP/s"
    if row.get("oom"):
        return f"{head} out of memory" + (f" ({row['inferred']})" if "inferred" in row else "")
    return f"{head} {row.get('skipped') or row.get('error')}"


def _correctness(plan: Plan, device: torch.device, work) -> Dict:
    deadline = time.monotonic() + plan.correctness_budget_s
    d = plan.dims
    checks = work.correctness(plan.check_lengths, plan.kernels, d.num_heads, d.qk_dim, d.v_dim, device, deadline)
    return {
        "lengths": list(plan.check_lengths),
        "tf32": False,
        "heads": d.num_heads,
        "qk_dim": d.qk_dim,
        "v_dim": d.v_dim,
        "reference": "the reference backend in float64 on the same (rounded) inputs and output gradient",
        "tolerances": {
            "float32": f"|err| <= {work.FP32_TOL} + {work.FP32_TOL} |ref| and rel L2 <= {work.FP32_TOL}",
            "bfloat16": f"rel L2 <= {work.BF16_REL_TOL}",
        },
        "verdicts": kernel_verdicts(checks, plan.kernels),
        "worst_rel_l2": worst_errors(checks, plan.kernels),
        "checks": checks,
    }


def _timing(plan: Plan, device: torch.device, work, log: Callable[[str], None]) -> Dict:
    dims = {
        "d_model": plan.dims.d_model,
        "num_layers": plan.dims.num_layers,
        "num_heads": plan.dims.num_heads,
        "qk_dim": plan.dims.qk_dim,
        "v_dim": plan.dims.v_dim,
    }

    def measure(model: str, kernel: str, lengths: List[int], n: int) -> Dict:
        return work.time_cell(
            model, kernel, lengths, n, dims, plan.form, plan.warmup, plan.repeats, plan.max_cell_s, device, plan.seed
        )

    rows = run_cells(plan, measure, time.monotonic() + plan.timing_budget_s, log)
    return {"dtype": "bfloat16 autocast", "rows": rows, "speedups": speedups(rows, plan)}


def collect(
    plan: Plan,
    device: torch.device,
    save: Callable[[Dict], None] = lambda result: None,
    log: Callable[[str], None] = print,
) -> Dict:
    """Runs every section on ``device`` and returns the JSON; ``save`` gets the partial result after each."""
    from dfgr_torchrec.bench import gpu_work as work  # torch and this package only

    result: Dict = {
        "schema": SCHEMA,
        "complete": False,
        "quick": plan.quick,
        "settings": settings(plan),
        "section_seconds": {},
    }

    def section(name: str, fn: Callable[[], Dict]) -> Dict:
        began = time.monotonic()
        log(f"[{name}]")
        try:
            result[name] = fn()
        except Exception as e:  # noqa: BLE001  one broken section leaves the others
            result[name] = {"error": work.describe(e)}
        result["section_seconds"][name] = round(time.monotonic() - began, 2)
        save(result)
        return result[name]

    section("environment", lambda: work.environment(device))
    matmul = section("matmul", lambda: work.matmul_peak(plan.matmul_size, device))
    checks = section("correctness", lambda: _correctness(plan, device, work))
    timing = section("timing", lambda: _timing(plan, device, work, log))
    result["targets"] = evaluate_targets(
        plan,
        timing.get("rows", []),
        timing.get("speedups", []),
        matmul.get("tflops"),
        checks.get("verdicts", {}).get("triton"),
    )
    verdicts = [t["pass"] for t in result["targets"].values()]
    result["all_passed"] = False if False in verdicts else (None if None in verdicts else True)
    result["environment"]["load_average_end"] = list(os.getloadavg())
    result["section_seconds"]["total"] = round(sum(result["section_seconds"].values()), 2)
    result["complete"] = True
    return result


def summary(result: Dict) -> str:
    """The printed end of a run: the cells, the bf16 matmul peak, correctness and the targets."""
    lines = [row_line(row) for row in result.get("timing", {}).get("rows", [])]
    matmul = result.get("matmul", {})
    lines.append(f"bf16 matmul {matmul.get('size')}^3: {matmul.get('tflops', float('nan')):.0f} TFLOP/s")
    lines.append(f"correctness vs reference: {result.get('correctness', {}).get('verdicts')}")
    for name, target in result.get("targets", {}).items():
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[target["pass"]]
        value = target["value"]
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        lines.append(f"{verdict} {name}: {shown} (threshold {target['threshold']}) {target['description']}")
    lines.append(f"sections (s): {result.get('section_seconds')}")
    return "\n".join(lines)


def _save_quietly(result: Dict, path) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        write_json(result, path)


def run(args: argparse.Namespace) -> Dict:
    plan = plan_from_args(args)
    if not torch.cuda.is_available():
        print(NO_GPU.format(torch=torch.__version__), file=sys.stderr)
        raise SystemExit(2)
    result = collect(
        plan,
        torch.device("cuda"),
        save=lambda partial: _save_quietly(partial, args.json_path),
        log=lambda line: print(line, flush=True),
    )
    print(summary(result))
    write_json(result, args.json_path)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dfgr_torchrec.bench.gpu", description="the one GPU check")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run(args)
    except ValueError as e:
        print(f"dfgr bench gpu: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
