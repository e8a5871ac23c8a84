"""``dfgr bench big-table``: a synthetic log whose item table has over 10^7 rows, trained through
the demo's path (TorchX ``local_cwd``, ``-j 1xP`` processes, the item table row-wise sharded by
TorchRec's planner), for a fixed number of steps.

It generates the log (``dfgr data synth``, items drawn uniformly so most of the catalogue is seen),
prepares it (``dfgr data prepare``, timed, its peak RSS read from the child's rusage), launches
``configs/train/dfgr_big_table.yaml`` exactly as ``make demo`` launches its config, and reports
the run's training tokens/s (the recipe's own log, steps after the first logging window), each
rank's peak RSS, the table's rows and bytes per rank, and the whole run's wall time (validation,
checkpoint and test included). Every stage is skipped when its output exists, so a rerun only
trains again.

Example::

    dfgr bench big-table --num-users 300000 --num-items 20000000 --json results/bench/big_table.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict

from dfgr_torchrec.bench.child import run_child
from dfgr_torchrec.bench.output import write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir", default="runs/bench-big-table", help="the log, its prepared copy and the run go here"
    )
    parser.add_argument("--num-users", type=int, default=300_000)
    parser.add_argument(
        "--num-items",
        type=int,
        default=20_000_000,
        help="catalogue size; items are drawn uniformly, so about 2/3 of them appear in training",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--train-config", default="configs/train/dfgr_big_table.yaml")
    parser.add_argument("--nproc", type=int, default=2, help="training processes (-j 1xNPROC)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--json", dest="json_path", default=None)


def _bin(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def synthesize(args: argparse.Namespace) -> str:
    """The log and its data YAML (with ``output_dir`` inside the workdir); returns the YAML."""
    log, data_yaml = os.path.join(args.workdir, "events.tsv"), os.path.join(args.workdir, "data.yaml")
    if not os.path.exists(data_yaml):
        run_child(
            [
                _bin("dfgr"),
                "data",
                "synth",
                "--out",
                log,
                "--config-out",
                data_yaml,
                "--num-users",
                str(args.num_users),
                "--num-items",
                str(args.num_items),
                "--item-popularity-exponent",
                "0",
                "--seed",
                str(args.seed),
            ]
        )
        with open(data_yaml, "a") as f:
            f.write(f"output_dir: {os.path.join(args.workdir, 'prepared')}\n")
    return data_yaml


def prepare(data_yaml: str) -> Dict[str, Any]:
    """Prepares the log in a child process (a no-op when up to date): seconds, peak RSS and the report."""
    from dfgr_torchrec.data.config import load_data_config
    from dfgr_torchrec.data.prepare import check_prepared, load_report, prepared_path

    path = prepared_path(load_data_config(data_yaml))
    reused = os.path.isdir(path) and check_prepared(path) is None
    seconds, peak_mib, _ = run_child([_bin("dfgr"), "data", "prepare", "--config", data_yaml])
    # reused: the seconds and RSS are the up-to-date check, not a prepare
    timing = {"seconds": round(seconds, 1), "peak_rss_mb": round(peak_mib, 1), "reused": reused}
    with open(os.path.join(path, "meta.json")) as f:
        meta = json.load(f)
    report = load_report(path)
    return {
        **timing,
        "path": path,
        "rows_read": report["rows_read"],
        "interactions": report["interactions"],
        "users": meta["num_users"],
        "item_rows": meta["item_rows"],
        "prepare_report_seconds": report["seconds"],
    }


def train(args: argparse.Namespace, data_yaml: str) -> Dict[str, Any]:
    """``torchx run -s local_cwd ./launch/dfgr.py:train`` as ``make demo`` does; returns the run's numbers."""
    env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}")
    cmd = [
        _bin("torchx"),
        "run",
        "-s",
        "local_cwd",
        "./launch/dfgr.py:train",
        "--config",
        args.train_config,
        "-j",
        f"1x{args.nproc}",
        f"output_dir={args.workdir}",
        "name=run",
        f"data.config={data_yaml}",
        f"train.max_steps={args.steps}",
        f"train.log_every={max(1, min(20, args.steps // 2))}",
        "train.overwrite=true",
    ]
    seconds, _, _ = run_child(cmd, env)
    run_dir = os.path.join(args.workdir, "run")
    with open(os.path.join(run_dir, "train_log.jsonl")) as f:
        log = [json.loads(line) for line in f]
    with open(os.path.join(run_dir, "metrics_final.json")) as f:
        final = json.load(f)
    steady = log[1:] if len(log) >= 3 else log  # the first window holds the warm-up (first batches, allocations)
    return {
        "wall_seconds": round(seconds, 1),
        "steps": log[-1]["step"],
        "tokens_per_s": round(sum(r["tokens_per_s"] for r in steady) / len(steady), 1),
        "sequences_per_s": round(sum(r["samples_per_s"] for r in steady) / len(steady), 1),
        "peak_memory_mb_per_rank": log[-1]["peak_memory_mb_per_rank"],
        "test_auc": {task: m["auc"] for task, m in final["tasks"].items()},
    }


def run(args: argparse.Namespace) -> Dict[str, Any]:
    os.makedirs(args.workdir, exist_ok=True)
    load_before = os.getloadavg()[0]
    data_yaml = synthesize(args)
    prepared = prepare(data_yaml)
    trained = train(args, data_yaml)
    from dfgr_torchrec.recipes.config import load_train_config

    dim = load_train_config(args.train_config).model.embeddings.embedding_dim
    table_mb = prepared["item_rows"] * dim * 4 / 2**20
    result = {
        "benchmark": "big_table",
        "command": " ".join(["dfgr", "bench", "big-table", *sys.argv[3:]]),
        "nproc": args.nproc,
        "train_config": args.train_config,
        "prepare": prepared,
        "item_table": {
            "rows": prepared["item_rows"],
            "dim": dim,
            "fp32_mb": round(table_mb, 1),
            "fp32_mb_per_rank_row_wise": round(table_mb / args.nproc, 1),
        },
        "train": trained,
        "cpus": os.cpu_count(),
        "load_average_1m": {"start": round(load_before, 2), "end": round(os.getloadavg()[0], 2)},
    }
    print(
        f"item table {prepared['item_rows']:,} rows x {dim} ({table_mb:,.0f} MB fp32, {table_mb / args.nproc:,.0f} MB per rank); "
        f"{trained['tokens_per_s']:,.0f} tokens/s over {args.nproc} processes; peak RSS per rank "
        f"{', '.join(f'{m:,.0f}' for m in trained['peak_memory_mb_per_rank'])} MB; run {trained['wall_seconds']:.0f} s"
    )
    write_json(result, args.json_path)
    return result
