"""``dfgr score --model DIR --input requests.jsonl --output scores.jsonl``: batch scoring in raw ids.

Each good request gives one output line ``{"line", "user", "scores": [{"item", <task>: p}]}``;
each bad one is reported on stderr with its line number and what was expected, and the command
then exits non-zero (after writing every good line), so a pipeline notices.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from dfgr_torchrec.data.atomic import atomic_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="an artifact directory written by `dfgr export`")
    parser.add_argument("--input", required=True, help="requests, one JSON object per line")
    parser.add_argument("--output", required=True, help="where to write the scores (JSONL)")
    parser.add_argument("--cache-mb", type=int, default=256, help="history cache budget (0: no cache)")
    parser.add_argument("--eager", action="store_true", help="score with eager PyTorch, not the compiled graph")


def run(args: argparse.Namespace) -> None:
    from dfgr_torchrec.serving.compile import quiet_tracing_logs
    from dfgr_torchrec.serving.ranker import Ranker

    quiet_tracing_logs()
    if not os.path.isfile(args.input):
        raise FileNotFoundError(f"--input {args.input}: no such file")
    start = time.time()
    ranker = Ranker.load(args.model, cache_bytes=args.cache_mb << 20, compiled=not args.eager)
    with open(args.input, encoding="utf-8") as f:
        results, errors = ranker.score_lines(f)
    with atomic_file(args.output) as tmp:
        with open(tmp, "w") as out:
            for result in results:
                out.write(json.dumps(result) + "\n")
    for error in errors:
        print(f"dfgr score: {args.input}: {error}", flush=True)
    candidates = sum(len(r["scores"]) for r in results)
    unknown = ", ".join(f"{k} {v}" for k, v in sorted(ranker.unknown.items()) if v) or "none"
    cache = ranker.cache.stats.as_dict() if ranker.cache is not None else "off"
    print(f"scored {len(results)} requests ({candidates} candidates) into {args.output} in {time.time() - start:.1f} s; "
          f"unknown ids (scored with their OOV rows): {unknown}; cache: {cache}")
    if errors:
        lines = ", ".join(str(e.line) for e in errors[:10]) + (" ..." if len(errors) > 10 else "")
        raise ValueError(f"{len(errors)} of {len(results) + len(errors)} requests rejected (lines {lines}); "
                         f"the others are scored in {args.output}")
