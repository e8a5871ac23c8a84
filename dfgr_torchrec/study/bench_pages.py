"""The docs' benchmark page, written from the committed benchmark JSON (``results/bench/``,
``results/serving/``) by ``dfgr report-docs``, like the study pages.

Each table names the file it was read from; what the machine was doing (threads, load average)
comes from the file too, so a number never loses what it was measured under.
"""

from __future__ import annotations

import glob
import json
import os
import statistics
from typing import Any, Dict, List, Optional

HEADER = (
    "<!-- written by `dfgr report-docs --out docs/results` from results/bench/ and results/serving/: do not edit -->"
)


def _load(path: str) -> Dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def _fmt(value: Optional[float], fmt: str) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else format(value, fmt)  # a note recorded instead of a number


def _attention_row(row: Dict[str, Any], kernel: str, numbers: Dict[str, Any]) -> str:
    old = row.get("tiled_over_pytorch_dfgr_train_time")  # the padded backend's name in older files
    ratio = row.get("tiled_over_padded_dfgr_train_time", old) if kernel == "tiled" else None
    cells = [
        str(row["seq_len"]),
        f"`{kernel}`",
        _fmt(numbers.get("dfgr_train_ms"), ",.0f"),
        _fmt(numbers.get("dfgr_train_peak_mb"), ",.0f"),
        _fmt(numbers.get("dfgr_infer_ms"), ",.1f"),
        _fmt(numbers.get("metagr_train_ms"), ",.0f"),
        _fmt(numbers.get("metagr_infer_ms"), ",.1f"),
        _fmt(numbers.get("train_speedup"), ".2f"),
        _fmt(row.get("analytic_flop_ratio"), ".2f"),
        _fmt(numbers.get("infer_speedup"), ".2f"),
        _fmt(ratio, ".2f"),
    ]
    return "| " + " | ".join(cells) + " |"


def attention_section(path: str, name: str) -> List[str]:
    """One file of ``dfgr bench attention``: a row per (N, kernel)."""
    data = _load(path)
    config = data.get("config", {})
    lines = [
        f"### `{name}`",
        "",
        f"{data.get('device_name') or data.get('device')}, threads: {data.get('threads')}, load average at the "
        f"end: {_fmt(data.get('load_average_1m_at_end'), '.2f')}; users per batch: {config.get('batch_size')} "
        f"(lengths ragged in [N/2, N]), repeats: {config.get('repeats')}, d_model {config.get('d_model')}, "
        f"{config.get('num_layers')} layers, {config.get('attention_form')} attention, "
        f"{config.get('num_candidates')} candidates per user at inference.",
        "",
        "| N | kernel | DFGR train ms | DFGR train peak MB | DFGR infer ms | MetaGR train ms | MetaGR infer ms "
        "| MetaGR / DFGR train | analytic FLOP ratio | MetaGR / DFGR infer | tiled / padded DFGR train |",
        "|" + "---|" * 11,
    ]
    for row in data["rows"]:
        for kernel, numbers in row.get("kernels", {row.get("kernel"): row}).items():
            lines.append(_attention_row(row, kernel, numbers))
    return lines + [""]


SERVING_COLUMNS = (
    ("N", "seq_len", "d"),
    ("M", "num_candidates", "d"),
    ("MetaGR full", "metagr_full_ms", ".1f"),
    ("DFGR full", "dfgr_full_ms", ".1f"),
    ("DFGR cached", "dfgr_cached_ms", ".1f"),
    ("append + score", "dfgr_append_ms", ".1f"),
    ("exported (AOTI)", "exported_ms", ".1f"),
    ("cached vs MetaGR", "cached_speedup_vs_metagr_full", ".1fx"),
    ("cached vs DFGR", "cached_speedup_vs_dfgr_full", ".1fx"),
    ("max abs diff", "max_abs_diff", ".1e"),
)
HSTU_COLUMNS = (("hstu full", "hstu_full_ms", ".1f"), ("hstu cached", "hstu_cached_ms", ".1f"))  # rows since 2026-12-06


def serving_section(path: str, name: str) -> List[str]:
    """``dfgr bench serving``: one request's p50 ms per path, the speed-ups, the targets."""
    data = _load(path)
    machine = data.get("machine") or {}
    load = ", ".join(f"{v:.1f}" for v in machine.get("load_avg", []))
    protocol = f" {data['protocol']}; the table shows the medians." if "protocol" in data else ""
    columns = SERVING_COLUMNS + (HSTU_COLUMNS if all("hstu_full_ms" in r for r in data["rows"]) else ())
    lines = [
        f"### `{name}`",
        "",
        f"{machine.get('cpu', data.get('device'))}, {machine.get('cpus')} CPUs, load average {load} (1, 5, 15 min) "
        f"at the end, threads: {data.get('threads')}; one request, p50 ms "
        f"(the paths interleaved so load hits them alike).{protocol}",
        "",
        "| " + " | ".join(h for h, _, _ in columns) + " | state KiB DFGR / MetaGR |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for row in data["rows"]:
        row = {k: v["median"] if isinstance(v, dict) and "median" in v else v for k, v in row.items()}
        cells = [format(row[key], fmt.rstrip("x")) + ("x" if fmt.endswith("x") else "") for _, key, fmt in columns]
        cells.append(f"{row['dfgr_cache_bytes'] / 1024:.0f} / {row['metagr_cache_bytes'] / 1024:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    targets = data.get("targets") or {}
    if targets:
        at = f"N = {targets.get('seq_len')}, M = {targets.get('num_candidates')}"
        met = ", ".join(
            f"{k} {_fmt(targets['measured'][k], '.3g')} (target {targets['targets'][k]:g}, "
            f"{'met' if targets['met'][k] else 'missed'})"
            for k in targets.get("targets", {})
        )
        lines += ["", f"Targets at {at}: {met}."]
    return lines + [""]


def prepare_section(paths: List[str]) -> List[str]:
    """``dfgr bench prepare``: one row per file (engine, rows, seconds, peak RSS, load before)."""
    lines = [
        "| file | engine | rows read | log GB | seconds | peak RSS GB | load average before | date |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path in paths:
        d = _load(path)
        load = d.get("load_average_before") or [None]
        lines.append(
            f"| `{os.path.basename(path)}` | {d['engine']} | {d['rows_read']:,} | {d['log_bytes'] / 1e9:.2f} | "
            f"{d['seconds']:.1f} | {d['peak_rss_gb']:.2f} | {_fmt(load[0], '.1f')} | {d.get('date', '-')} |"
        )
    return lines + [""]


def big_table_section(path: str, name: str) -> List[str]:
    d = _load(path)
    prep, table, train = d["prepare"], d["item_table"], d["train"]
    peaks = " and ".join(f"{m / 1000:.2f} GB" for m in train["peak_memory_mb_per_rank"])
    return [
        f"### `{name}`",
        "",
        f"`{d['command']}`, {d['nproc']} processes, {d['cpus']} CPUs, load "
        f"average {d['load_average_1m']['start']} to {d['load_average_1m']['end']}:",
        "",
        f"- prepare: {prep['rows_read']:,} rows in {prep['seconds']:.0f} s, peak RSS {prep['peak_rss_mb'] / 1000:.2f} GB",
        f"- item table: {table['rows']:,} rows x {table['dim']} ({table['fp32_mb'] / 1000:.2f} GB fp32, "
        f"{table['fp32_mb_per_rank_row_wise'] / 1000:.2f} GB per rank row-wise)",
        f"- training: {train['steps']} steps, {train['tokens_per_s']:,.0f} tokens/s, peak RSS {peaks} per rank, "
        f"{train['wall_seconds']:.0f} s for the whole run",
        "",
    ]


def quantization_section(path: str, name: str) -> List[str]:
    d = _load(path)
    return [
        f"### `{name}`",
        "",
        "| tables | test AUC | test GAUC | table bytes |",
        "|---|---|---|---|",
        f"| fp32 | {d['auc_fp32']:.5f} | {d['gauc_fp32']:.5f} | {d['table_bytes_fp32']:,} |",
        f"| int8 | {d['auc_int8']:.5f} | {d['gauc_int8']:.5f} | {d['table_bytes_int8']:,} |",
        "",
        f"{d['candidates']:,} test candidates; int8 tables {d['table_bytes_fp32'] / d['table_bytes_int8']:.1f}x smaller.",
        "",
    ]


def stable_section(path: str, name: str) -> List[str]:
    """One ``dfgr bench attention --isolate`` output: per N and path the median over runs, its spread,
    the share of the matmul peak and the children's user / system CPU seconds."""
    with open(path) as f:
        d = json.load(f)
    env = ", ".join(f"{k}={v}" for k, v in d.get("environment", {}).items() if v) or "default OpenMP settings"
    lines = [f"`{name}`: {d['protocol']}; {env}; load average {d['load_average_1m_at_end']} at the end.", ""]
    lines += [
        "| N | path | train ms (median) | spread | share of matmul peak | user s | sys s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in d["rows"]:
        for path_name, p in row["paths"].items():
            cpu = p["cpu"]
            lines.append(
                f"| {row['seq_len']} | `{path_name}` | {p['train_ms']['median']:.1f} | {100 * p['train_ms']['spread']:.0f}% "
                f"| {100 * p['train_share_of_peak']:.0f}% | {statistics.median(cpu['user_s']):.1f} | "
                f"{statistics.median(cpu['sys_s']):.1f} |"
            )
    return [*lines, ""]


def benchmarks_page(results: str) -> Optional[str]:
    """The page, or None when ``results`` holds no benchmark output."""
    attention = sorted(glob.glob(os.path.join(results, "bench", "attention_*.json")))
    prepare = sorted(glob.glob(os.path.join(results, "bench", "prepare_*.json")))
    serving = sorted(glob.glob(os.path.join(results, "serving", "bench_serving*.json")))
    big = sorted(glob.glob(os.path.join(results, "bench", "big_table*.json")))
    quantization = sorted(glob.glob(os.path.join(results, "serving", "quantization_*.json")))
    if not (attention or prepare or serving or big or quantization):
        return None
    lines = [
        HEADER,
        "",
        "# Benchmark results",
        "",
        "Every committed benchmark output, as measured; what the "
        "benchmarks do and how to read them: [Benchmarks](../benchmarks.md), [Serving](../serving.md).",
        "",
    ]
    lines += ["## Attention: DFGR against MetaGR, padded and tiled kernels", ""]

    def name(path: str) -> str:  # as the repository names it, whatever the working directory
        return "results/" + os.path.relpath(path, results).replace(os.sep, "/")

    for path in attention:
        lines += attention_section(path, name(path))
    stable = sorted(glob.glob(os.path.join(results, "bench", "stable", "attention_*.json")))
    if stable:
        lines += ["### The stable protocol: each path in its own process (`--isolate`)", ""]
    for path in stable:
        lines += stable_section(path, name(path))
    lines += ["## Serving: full recompute, the history cache, AOTInductor", ""]
    for path in serving:
        lines += serving_section(path, name(path))
    for path in quantization:
        lines += quantization_section(path, name(path))
    lines += ["## Preparing a log: `dfgr bench prepare`", ""] + (prepare_section(prepare) if prepare else [])
    lines += ["## A table of 12.8 million rows: `dfgr bench big-table`", ""]
    for path in big:
        lines += big_table_section(path, name(path))
    return "\n".join(lines)
