"""``dfgr study --config configs/study/<name>.yaml --out DIR``."""

from __future__ import annotations

import argparse
from typing import Any, List

from dfgr_torchrec.study.config import load_study_config
from dfgr_torchrec.study.report import write_results
from dfgr_torchrec.study.runner import StudyRunner


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="study YAML, e.g. configs/study/quick.yaml")
    parser.add_argument(
        "--out", required=True, help="output folder (runs/, manifest.json, results.jsonl, summary.md, plots)"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="launch nothing: report the (data set, model) pairs whose runs are all finished",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        default=[],
        metavar="DATA/MODEL",
        help="launch only these pairs (glob patterns: kuairand/*, */dfgr); the others are reported "
        "if finished, as with --report-only",
    )
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the study YAML, e.g. seeds=[0] nproc=1")


def run(args: argparse.Namespace) -> List[Any]:
    only = [p for p in args.only if "=" not in p]  # `--only` takes every word after it: key=value ones
    overrides = [*args.overrides, *(p for p in args.only if "=" in p)]  # are overrides, not patterns
    config = load_study_config(args.config, overrides)
    records = StudyRunner(config, args.out).run(finished_only=args.report_only, only=only)
    rows = write_results(records, args.out, config.nproc, study=args.config)
    print(open(f"{args.out}/summary.md").read())
    return rows
