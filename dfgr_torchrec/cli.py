"""The ``dfgr`` command: ``dfgr train|eval``, ``dfgr data ...``, ``dfgr study``, ``dfgr export|score``,
``dfgr plan``, ``dfgr bench ...``, ``dfgr demo``, ``dfgr report-docs``.

Every command is registered by name and help alone; only the command the command line names
imports its module and gets its flags (so ``dfgr X --help`` lists X's flags and examples, and
``dfgr score`` imports serving code, never training, data preparation or study code). Building
the parser imports no torch, and every handler imports its work lazily, so ``dfgr --help``,
``dfgr score --help`` and a config error answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import List, Optional

# (command path, help, module, its function that adds the flags, its function that runs the command;
# None: the flags add subcommands that set their own), in the order of `dfgr --help`
_COMMANDS = (
    (
        ("demo",),
        "train on generated sequences, then score held-out candidates",
        "dfgr_torchrec.demo",
        "add_arguments",
        "run",
    ),
    (("data",), "download, prepare and synthesise interaction logs", "dfgr_torchrec.data.cli", "add_arguments", None),
    (
        ("train",),
        "train and evaluate (one process, or under torchrun/TorchX)",
        "dfgr_torchrec.recipes.args",
        "add_train_arguments",
        "run_train",
    ),
    (
        ("eval",),
        "evaluate a run's best (else latest) checkpoint, or --checkpoint PATH",
        "dfgr_torchrec.recipes.args",
        "add_eval_arguments",
        "run_eval",
    ),
    (
        ("study",),
        "models x data sets x grid x seeds, chosen on validation",
        "dfgr_torchrec.study.cli",
        "add_arguments",
        "run",
    ),
    (
        ("bench", "attention"),
        "DFGR vs MetaGR training and inference cost",
        "dfgr_torchrec.bench.attention",
        "add_arguments",
        "run",
    ),
    (
        ("bench", "data"),
        "prepare time and loader throughput vs the training step",
        "dfgr_torchrec.bench.data",
        "add_arguments",
        "run",
    ),
    (
        ("bench", "prepare"),
        "dfgr data prepare's seconds and peak memory with one engine",
        "dfgr_torchrec.bench.prepare",
        "add_arguments",
        "run",
    ),
    (
        ("bench", "init-scale"),
        "the attention branch's strength at initialisation",
        "dfgr_torchrec.bench.init_scale",
        "add_arguments",
        "run",
    ),
    (
        ("bench", "big-table"),
        "a >10^7-row item table trained through the demo's launch path",
        "dfgr_torchrec.bench.big_table",
        "add_arguments",
        "run",
    ),
    (
        ("bench", "serving"),
        "one request's latency: full recompute vs the history cache vs AOTInductor",
        "dfgr_torchrec.bench.serving",
        "add_arguments",
        "run",
    ),
    (
        ("bench", "cold-start"),
        "a fresh `dfgr score` process: seconds to ready and to the first request, per scoring path",
        "dfgr_torchrec.bench.cold_start",
        "add_arguments",
        "run",
    ),
    (
        ("bench", "gpu"),
        "the one GPU check: triton vs reference, backend speed and memory, targets (CUDA only)",
        "dfgr_torchrec.bench.gpu",
        "add_arguments",
        "run",
    ),
    (
        ("export",),
        "a trained run -> a serving artifact (exported graph, tables, vocabularies)",
        "dfgr_torchrec.serving.export",
        "add_arguments",
        "run",
    ),
    (
        ("score",),
        "score raw-id requests (JSONL) with an exported artifact",
        "dfgr_torchrec.serving.score_cli",
        "add_arguments",
        "run",
    ),
    (
        ("plan",),
        "the sharding plan of a config on a cluster that is not here (no data, meta device)",
        "dfgr_torchrec.distributed.plan_cli",
        "add_arguments",
        "run",
    ),
    (
        ("report-docs",),
        "the docs' results pages from the committed results/*/results.jsonl",
        "dfgr_torchrec.study.docs",
        "add_arguments",
        "run",
    ),
)
_GROUPS = {"bench": "benchmarks (print a table and write JSON)"}


def _named(argv: List[str], path: tuple) -> bool:
    words = [a for a in argv if not a.startswith("-")]
    return tuple(words[: len(path)]) == path


def _add_command(commands: "argparse._SubParsersAction", entry: tuple, argv: List[str]) -> None:
    path, help, module, add, run = entry
    parser = commands.add_parser(path[-1], help=help, description=help[0].upper() + help[1:] + ".")
    if _named(argv, path):  # only the command being run imports its module (and torch, if it needs it)
        loaded = importlib.import_module(module)
        getattr(loaded, add)(parser)
        if run is not None:
            parser.set_defaults(run=getattr(loaded, run))


def build_parser(argv: Optional[List[str]] = None) -> argparse.ArgumentParser:
    """The ``dfgr`` parser, fully populated for the command ``argv`` names (none: the top level)."""
    argv = argv or []
    parser = argparse.ArgumentParser(prog="dfgr", description="Dual-Flow Generative Ranking on TorchRec")
    commands = parser.add_subparsers(dest="command", required=True)
    groups = {}
    for entry in _COMMANDS:
        group = entry[0][0] if len(entry[0]) > 1 else None
        if group is not None and group not in groups:
            groups[group] = commands.add_parser(group, help=_GROUPS[group]).add_subparsers(dest=group, required=True)
        _add_command(groups[group] if group else commands, entry, argv)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from dfgr_torchrec.errors import PREEMPTED_EXIT, Preempted
    from dfgr_torchrec.recipes.args import EXPECTED_ERRORS, add_overrides, report

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
