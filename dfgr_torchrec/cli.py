"""The ``dfgr`` command: ``dfgr train|eval``, ``dfgr data ...``, ``dfgr study``, ``dfgr bench ...``, ``dfgr demo``."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def build_parser() -> argparse.ArgumentParser:
    from dfgr_torchrec import demo
    from dfgr_torchrec.bench import attention, data as data_bench, init_scale
    from dfgr_torchrec.data import cli as data_cli

    parser = argparse.ArgumentParser(prog="dfgr", description="Dual-Flow Generative Ranking on TorchRec")
    commands = parser.add_subparsers(dest="command", required=True)

    demo_parser = commands.add_parser("demo", help="train on generated sequences, then score held-out candidates")
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(run=demo.run)

    data_cli.add_commands(commands)

    from dfgr_torchrec.recipes import train as train_recipe

    train_parser = commands.add_parser("train", help="train and evaluate (one process, or under torchrun/TorchX)")
    train_recipe.add_arguments(train_parser)
    train_parser.set_defaults(run=train_recipe.run_cli)
    eval_parser = commands.add_parser("eval", help="evaluate the latest checkpoint of a run")
    train_recipe.add_arguments(eval_parser)
    eval_parser.set_defaults(run=lambda args: train_recipe.run_cli(args, eval_only=True))

    from dfgr_torchrec.study import cli as study_cli

    study_parser = commands.add_parser("study", help="models x data sets x grid x seeds, chosen on validation")
    study_cli.add_arguments(study_parser)
    study_parser.set_defaults(run=study_cli.run)

    bench = commands.add_parser("bench", help="benchmarks (print a table and write JSON)")
    benches = bench.add_subparsers(dest="bench", required=True)
    attention_parser = benches.add_parser("attention", help="DFGR vs MetaGR training and inference cost")
    attention.add_arguments(attention_parser)
    attention_parser.set_defaults(run=attention.run)
    data_parser = benches.add_parser("data", help="prepare time and loader throughput vs the training step")
    data_bench.add_arguments(data_parser)
    data_parser.set_defaults(run=data_bench.run)
    init_parser = benches.add_parser("init-scale", help="the attention branch's strength at initialisation")
    init_scale.add_arguments(init_parser)
    init_parser.set_defaults(run=init_scale.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"dfgr {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
