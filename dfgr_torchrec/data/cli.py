"""``dfgr data``: download, prepare and synthesise interaction logs."""

from __future__ import annotations

import argparse
import json

from dfgr_torchrec.data import sources
from dfgr_torchrec.data.config import load_data_config


def add_arguments(data: argparse.ArgumentParser) -> None:
    """``dfgr data``'s subcommands (download, prepare, init, synth), each with its flags."""
    sub = data.add_subparsers(dest="data_command", required=True)

    download = sub.add_parser("download", help="fetch a public data set into data/raw/<name>")
    download.add_argument("name", choices=sorted(sources.DOWNLOADS))
    download.add_argument("--out", default=None, help="output folder (default data/raw/<name>)")
    download.add_argument("--force", action="store_true", help="download and convert again")
    download.set_defaults(run=run_download)

    prepare = sub.add_parser("prepare", help="a raw log -> a prepared, versioned data set + report.json")
    prepare.add_argument("--config", required=True, help="data YAML, e.g. configs/data/movielens-1m.yaml")
    prepare.add_argument("--force", action="store_true", help="prepare again even if up to date")
    prepare.add_argument("--json", action="store_true", help="print the whole report.json instead of its summary")
    prepare.add_argument("overrides", nargs="*", help="key=value overrides of the data YAML, e.g. source.engine=python")
    prepare.set_defaults(run=run_prepare)

    from dfgr_torchrec.data import init

    first = sub.add_parser("init", help="a commented data YAML to edit, guessed from the head of a log")
    init.add_arguments(first)
    first.set_defaults(run=init.run)

    synth = sub.add_parser("synth", help="generate a synthetic log (and its data config) at any scale")
    synth.add_argument("--out", required=True, help="the TSV log to write")
    synth.add_argument("--config-out", default=None, help="where to write the matching data YAML")
    synth.add_argument("--num-users", type=int, default=10_000)
    synth.add_argument("--num-items", type=int, default=1_000_000)
    synth.add_argument("--min-seq-len", type=int, default=10)
    synth.add_argument("--max-seq-len", type=int, default=500)
    synth.add_argument(
        "--item-popularity-exponent",
        type=float,
        default=1.1,
        help="Zipf-like exponent of item popularity (0: uniform, every item about equally likely)",
    )
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--repeat-prob",
        type=float,
        default=0.0,
        help="plant repeats: chance the next item is one of the user's recent items, which makes the last "
        "action type more likely (0: off)",
    )
    synth.add_argument("--repeat-boost", type=float, default=6.0, help="the last action type's logit boost on a repeat")
    synth.add_argument("--action-types", default=None, help="comma-separated action columns (default click,like,share)")
    synth.set_defaults(run=run_synth)


def run_download(args: argparse.Namespace) -> None:
    print(sources.download(args.name, args.out, force=args.force))


def run_prepare(args: argparse.Namespace) -> None:
    from dfgr_torchrec.data.prepare import ensure_prepared, load_report

    config = load_data_config(args.config, args.overrides)
    path = ensure_prepared(config, force=args.force)
    report = load_report(path)
    print(json.dumps(report, indent=2) if args.json else summary(report, path))


def summary(report: dict, path: str) -> str:
    """A prepared data set in a few lines: rows read, kept and dropped by each rule, users and
    items, interactions and positives per task per split, history lengths, unseen ids."""
    from tabulate import tabulate

    def n(value) -> str:
        return f"{value:,}"

    dropped = ", ".join(f"{n(c)} {reason}" for reason, c in report["rows_dropped"].items()) or "none"
    tasks = list(report["per_action"])
    rows = [
        [split, n(count), *(n(report["positives"][split][t]) for t in tasks)]
        for split, count in report["split"].items()
    ]
    lengths = report["sequence_length"]
    unseen = ", ".join(f"{name} {n(c)}" for name, c in report["unseen_in_training"].items()) or "none"
    return "\n".join(
        [
            f"{report['name']}: {n(report['rows_read'])} rows read, {n(report['rows_kept'])} kept (dropped: {dropped}); "
            f"{n(report['users'])} users, {n(report['items'])} items",
            tabulate(
                rows,
                headers=["split", "interactions", *(f"positives {t}" for t in tasks)],
                disable_numparse=True,
                colalign=("left", *["right"] * (1 + len(tasks))),
            ),
            f"history length: min {lengths['min']}, median {lengths['p50']:g}, p90 {lengths['p90']:g}, max {lengths['max']}; "
            f"valid/test ids unseen in training: {unseen}",
            *(f"warning: {w}" for w in report.get("warnings", [])),
            f"report: {path}/report.json (--json prints it)",
        ]
    )


def run_synth(args: argparse.Namespace) -> None:
    from dfgr_torchrec.data.synth_log import SynthConfig, generate, write_data_config

    config = SynthConfig(
        num_users=args.num_users,
        num_items=args.num_items,
        min_seq_len=args.min_seq_len,
        max_seq_len=args.max_seq_len,
        item_popularity_exponent=args.item_popularity_exponent,
        seed=args.seed,
        repeat_prob=args.repeat_prob,
        repeat_boost=args.repeat_boost,
        **({"action_types": args.action_types.split(",")} if args.action_types else {}),
    )
    summary = generate(config, args.out)
    if args.config_out:
        write_data_config(config, args.out, args.config_out)
    print(json.dumps(summary, indent=2, default=str))
