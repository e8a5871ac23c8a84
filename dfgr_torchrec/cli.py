"""The ``dfgr`` command: ``dfgr train|eval``, ``dfgr data ...``, ``dfgr study``, ``dfgr export|score``,
``dfgr plan``, ``dfgr bench ...``, ``dfgr demo``, ``dfgr report-docs``.

Building the parser imports no torch: the commands whose modules need it (demo, bench) get their
arguments only when the command line names them, and every handler imports its work lazily,
so ``dfgr --help`` and a config error answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Callable, List, Optional

# (command path, help, module with add_arguments(parser) and run(args)) of the torch-heavy commands
_LAZY = (
    (("demo",), "train on generated sequences, then score held-out candidates", "dfgr_torchrec.demo"),
    (("export",), "a trained run -> a serving artifact (exported graph, tables, vocabularies)", "dfgr_torchrec.serving.export"),
    (("score",), "score raw-id requests (JSONL) with an exported artifact", "dfgr_torchrec.serving.score_cli"),
    (("plan",), "the sharding plan of a config on a cluster that is not here (no data, meta device)", "dfgr_torchrec.distributed.plan_cli"),
    (("bench", "attention"), "DFGR vs MetaGR training and inference cost", "dfgr_torchrec.bench.attention"),
    (("bench", "data"), "prepare time and loader throughput vs the training step", "dfgr_torchrec.bench.data"),
    (("bench", "prepare"), "dfgr data prepare's seconds and peak memory with one engine", "dfgr_torchrec.bench.prepare"),
    (("bench", "init-scale"), "the attention branch's strength at initialisation", "dfgr_torchrec.bench.init_scale"),
    (("bench", "big-table"), "a >10^7-row item table trained through the demo's launch path", "dfgr_torchrec.bench.big_table"),
    (("bench", "serving"), "one request's latency: full recompute vs the history cache vs AOTInductor", "dfgr_torchrec.bench.serving"),
    (("bench", "gpu"), "the one GPU check: triton vs reference, backend speed and memory, targets (CUDA only)", "dfgr_torchrec.bench.gpu"),
    (("report-docs",), "the docs' results pages from the committed results/*/results.jsonl", "dfgr_torchrec.study.docs"),
)


def _named(argv: List[str], path: tuple) -> bool:
    words = [a for a in argv if not a.startswith("-")]
    return tuple(words[: len(path)]) == path


def _add_lazy(commands: "argparse._SubParsersAction", path: tuple, help: str, module: str, argv: List[str]) -> None:
    parser = commands.add_parser(path[-1], help=help)
    if _named(argv, path):  # only the command being run imports its module (and torch)
        loaded = importlib.import_module(module)
        loaded.add_arguments(parser)
        parser.set_defaults(run=loaded.run)


def _recipe(eval_only: bool) -> Callable:
    def run(args: argparse.Namespace):
        from dfgr_torchrec.recipes.args import run_cli

        return run_cli(args, eval_only=eval_only)

    return run


def build_parser(argv: Optional[List[str]] = None) -> argparse.ArgumentParser:
    """The ``dfgr`` parser, fully populated for the command ``argv`` names (none: the top level)."""
    from dfgr_torchrec.data import cli as data_cli
    from dfgr_torchrec.recipes import args as recipe_args
    from dfgr_torchrec.study import cli as study_cli

    argv = argv or []
    parser = argparse.ArgumentParser(prog="dfgr", description="Dual-Flow Generative Ranking on TorchRec")
    commands = parser.add_subparsers(dest="command", required=True)
    top_level = [entry for entry in _LAZY if len(entry[0]) == 1]
    _add_lazy(commands, *top_level[0], argv)  # demo
    data_cli.add_commands(commands)
    train_parser = commands.add_parser("train", help="train and evaluate (one process, or under torchrun/TorchX)")
    recipe_args.add_arguments(train_parser)
    train_parser.set_defaults(run=_recipe(eval_only=False))
    eval_parser = commands.add_parser("eval", help="evaluate a run's best (else latest) checkpoint, or --checkpoint PATH")
    recipe_args.add_arguments(eval_parser, eval_only=True)
    eval_parser.set_defaults(run=_recipe(eval_only=True))
    study_parser = commands.add_parser("study", help="models x data sets x grid x seeds, chosen on validation")
    study_cli.add_arguments(study_parser)
    study_parser.set_defaults(run=study_cli.run)
    bench = commands.add_parser("bench", help="benchmarks (print a table and write JSON)")
    benches = bench.add_subparsers(dest="bench", required=True)
    for path, help, module in _LAZY:
        if path[0] == "bench":
            _add_lazy(benches, path, help, module, argv)
    for path, help, module in top_level[1:]:
        _add_lazy(commands, path, help, module, argv)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from dfgr_torchrec.recipes.args import EXPECTED_ERRORS, add_overrides, report
    from dfgr_torchrec.training.errors import PREEMPTED_EXIT, Preempted

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = add_overrides(parser, *parser.parse_known_args(argv))
    try:
        args.run(args)
    except EXPECTED_ERRORS as e:
        return report(f"dfgr {args.command}", e)
    except Preempted:  # the checkpoint saved and its line logged: the status a scheduler requeues on
        return PREEMPTED_EXIT
    except BrokenPipeError:  # `dfgr ... | head`: the reader left; stop quietly, as shell tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0


if __name__ == "__main__":
    sys.exit(main())
