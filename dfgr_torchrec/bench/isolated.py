"""``dfgr bench attention --isolate``: the stable protocol, each path in its own process, repeated.

Measured in one process, a backend that allocates multi-GB score tensors (the padded one at long
N) page-faults them every step, so its system time equals its user time, and it slows whatever
runs after it. Here every (kernel, model) path runs in a fresh child process (the in-process
bench, warm-up included), the whole set ``--runs`` times in turn; the result holds per path the
median over runs, the spread ``(max - min) / median``, and the child's user and system CPU
seconds (``wait4``'s rusage), beside the matmul peak each child measured. ``--contend`` runs a
matmul loop (as many threads as torch uses) in another process throughout: how a path degrades
when a second job shares the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Sequence

PASSED = ("seq_lens", "num_candidates", "batch_size", "repeats", "warmup", "d_model", "num_layers", "num_heads")
PASSED += ("attention_form", "mask_mode", "device", "seed")
# what --contend runs beside the measurements: another job's dense work, until it is stopped
CONTENDER = "import torch\na = torch.randn(512, 512)\nwhile True:\n    (a @ a).relu_().sum()"
PATH_FIELDS = ("train_ms", "infer_ms", "train_peak_mb", "infer_peak_mb", "train_gflops")


def flags_of(args: argparse.Namespace, names: Sequence[str]) -> List[str]:
    """``args``' values of ``names`` as command-line flags (a true bool alone, None and False left out)."""
    flags: List[str] = []
    for name in names:
        value, flag = getattr(args, name), f"--{name.replace('_', '-')}"
        if value is True:
            flags.append(flag)
        elif value is not None and value is not False:
            flags += [flag, *map(str, value if isinstance(value, list) else [value])]
    return flags


def child_command(args: argparse.Namespace, kernel: str, model: str) -> List[str]:
    """``dfgr bench attention`` for one path, with the parent's settings."""
    cmd = [sys.executable, "-m", "dfgr_torchrec.cli", "bench", "attention", "--kernels", kernel, "--models", model]
    return cmd + flags_of(args, PASSED)


def run_child(cmd: List[str]) -> Dict[str, Any]:
    """``cmd`` (a bench command, ``--json PATH`` appended here) in a fresh process: its JSON result,
    with its user and system CPU seconds (``wait4``'s rusage)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "out.json")
        cmd = [*cmd, "--json", path]
        child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise subprocess.CalledProcessError(os.waitstatus_to_exitcode(status), cmd)
        with open(path) as f:
            result = json.load(f)
    result["cpu"] = {"user_s": round(usage.ru_utime, 2), "sys_s": round(usage.ru_stime, 2)}
    return result


def run_path(args: argparse.Namespace, kernel: str, model: str) -> Dict[str, Any]:
    """One child for one path."""
    return run_child(child_command(args, kernel, model))


def summary(values: List[float]) -> Dict[str, Any]:
    """The median of ``values``, their spread ``(max - min) / median`` and the values."""
    median = statistics.median(values)
    return {"median": median, "spread": (max(values) - min(values)) / median if median else None, "runs": values}


def summarise(results: Dict[tuple, List[Dict[str, Any]]], seq_lens: List[int]) -> List[Dict[str, Any]]:
    """One row per N: per ``kernel/model`` path the median, spread and runs of each field, the CPU split."""
    rows = []
    for n_index, seq_len in enumerate(seq_lens):
        row: Dict[str, Any] = {"seq_len": seq_len, "paths": {}}
        for (kernel, model), runs in results.items():
            fields = [r["rows"][n_index] for r in runs]
            path = {
                f: summary([x[f"{model}_{f}"] for x in fields])
                for f in PATH_FIELDS
                if fields[0].get(f"{model}_{f}") is not None
            }
            path["matmul_peak_gflops"] = summary([x["matmul_peak_gflops"] for x in fields])
            path["train_share_of_peak"] = path["train_gflops"]["median"] / path["matmul_peak_gflops"]["median"]
            path["cpu"] = {k: [r["cpu"][k] for r in runs] for k in ("user_s", "sys_s")}
            row["paths"][f"{kernel}/{model}"] = path
            row["analytic_flop_ratio"] = fields[0].get("analytic_flop_ratio")
        rows.append(row)
    return rows


def run_isolated(args: argparse.Namespace) -> Dict[str, Any]:
    """Every path in its own process, ``args.runs`` times in turn; returns the summary (and writes it)."""
    from dfgr_torchrec.bench.output import write_json

    results: Dict[tuple, List[Dict[str, Any]]] = {(k, m): [] for k in args.kernels for m in args.models}
    contender = subprocess.Popen([sys.executable, "-c", CONTENDER]) if args.contend else None
    try:
        for run in range(args.runs):
            for kernel, model in results:
                print(f"run {run + 1}/{args.runs}: {kernel} {model}", flush=True)
                results[(kernel, model)].append(run_path(args, kernel, model))
    finally:
        if contender is not None:
            contender.kill()
            contender.wait()
    result = {
        "benchmark": "attention",
        "protocol": f"isolated: each kernel/model path in its own process, {args.runs} runs in turn"
        + (", a matmul loop in another process throughout (--contend)" if args.contend else ""),
        "environment": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")},
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "config": {k: v for k, v in vars(args).items() if k not in ("json_path", "run")},
        "rows": summarise(results, args.seq_lens),
    }
    for row in result["rows"]:
        for name, path in row["paths"].items():
            train = path["train_ms"]
            print(
                f"N={row['seq_len']} {name}: train {train['median']:.1f} ms (spread {100 * train['spread']:.0f}%), "
                f"{100 * path['train_share_of_peak']:.0f}% of the matmul peak, user/sys s {path['cpu']}",
                flush=True,
            )
    write_json(result, args.json_path)
    return result


def run_repeated(cmd: List[str], runs: int) -> List[Dict[str, Any]]:
    """``cmd`` ``runs`` times, each in a fresh process (see :func:`run_child`)."""
    results = []
    for run in range(runs):
        print(f"run {run + 1}/{runs} in a fresh process", flush=True)
        results.append(run_child(cmd))
    return results


def summarise_rows(results: List[Dict[str, Any]], key_fields: Sequence[str]) -> List[Dict[str, Any]]:
    """Row ``i`` of every result merged: ``key_fields`` as they are, every other number as its
    :func:`summary` over the results (bools and strings from the first result)."""
    rows = []
    for i, first in enumerate(results[0]["rows"]):
        row: Dict[str, Any] = {}
        for name, value in first.items():
            values = [r["rows"][i][name] for r in results]
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool) and None not in values
            row[name] = summary(values) if numeric and name not in key_fields else value
        rows.append(row)
    return rows


def medians(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """``rows`` of :func:`summarise_rows` with each summary replaced by its median."""
    return [{k: v["median"] if isinstance(v, dict) and "median" in v else v for k, v in row.items()} for row in rows]
