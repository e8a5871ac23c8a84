"""``dfgr score --model DIR --input requests.jsonl --output scores.jsonl``: batch scoring in raw ids.

Each good request gives one output line ``{"line", "user", "scores": [{"item", <task>: p}]}``;
each bad one is reported on stderr with its line number and what was expected, and the command
then exits non-zero (after writing every good line), so a pipeline notices. Each request is
bounded (``--max-line-bytes``, ``--max-id-chars``, ``--max-candidates``, ``--max-history``) before it
is parsed; ``--output`` is opened before anything is scored. The artifact's AOTInductor package (a
shared library) is loaded only with ``--allow-native-code``; otherwise its exported program is served.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from typing import Iterator, TextIO

from dfgr_torchrec.data.atomic import atomic_file
from dfgr_torchrec.serving.limits import FLAGS, RequestLimits, bounded_lines

EXAMPLES = """examples:
  dfgr score --run runs/demo-movielens --input requests.jsonl --output scores.jsonl   # after dfgr export --run
  dfgr score --model artifacts/dfgr-movielens --input requests.jsonl --output scores.jsonl
  dfgr score --model artifacts/dfgr-movielens --input requests.jsonl --output scores.jsonl --cache-mb 0 --max-candidates 500
  dfgr score --model artifacts/dfgr-movielens --input requests.jsonl --output scores.jsonl --allow-native-code --compiled

a request line: {"user": "u1", "history": [{"item": "i7", "timestamp": 5, "actions": {"click": 1}}],
                 "candidates": [{"item": "i9", "timestamp": 6}]}"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog, parser.formatter_class = EXAMPLES, argparse.RawDescriptionHelpFormatter
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", help="an artifact directory written by `dfgr export`")
    model.add_argument(
        "--run", dest="model", metavar="DIR", help="a run directory: the artifact `dfgr export --run DIR` wrote into it"
    )
    parser.add_argument("--input", required=True, help="requests, one JSON object per line")
    parser.add_argument("--output", required=True, help="where to write the scores (JSONL)")
    parser.add_argument("--cache-mb", type=int, default=256, help="history cache budget (0: no cache)")
    path = parser.add_mutually_exclusive_group()
    path.add_argument(
        "--eager",
        dest="compiled",
        action="store_false",
        default=None,
        help="score candidates with the model's eager modules (the default: the fastest start)",
    )
    path.add_argument(
        "--compiled",
        dest="compiled",
        action="store_true",
        default=None,
        help="score candidates with the artifact's exported graph (scoring.pt2, or its AOTInductor "
        "package with --allow-native-code); slower to start: see `dfgr bench cold-start`",
    )
    parser.add_argument(
        "--allow-native-code",
        action="store_true",
        help="with --compiled: load the artifact's AOTInductor package (a shared library: only from a trusted source)",
    )
    defaults = RequestLimits()
    for name, flag in FLAGS.items():
        parser.add_argument(
            flag,
            dest=f"max_{name}",
            type=int,
            default=getattr(defaults, name),
            help=f"per-request limit ({name}; default {getattr(defaults, name)})",
        )


def run(args: argparse.Namespace) -> None:
    from dfgr_torchrec.serving.compile import quiet_tracing_logs
    from dfgr_torchrec.serving.ranker import Ranker

    quiet_tracing_logs()
    if not os.path.isfile(args.input):
        raise FileNotFoundError(f"--input {args.input}: no such file")
    limits = RequestLimits(**{name: getattr(args, f"max_{name}") for name in FLAGS})
    start = time.time()
    with _output(args.output) as out:  # opened first: an unwritable --output is refused before scoring
        ranker = Ranker.load(args.model, args.cache_mb << 20, compiled_by_default(args), args.allow_native_code, limits)
        with open(args.input, "rb") as f:
            results, errors = ranker.score_lines(bounded_lines(f, limits.line_bytes))
        for result in results:
            out.write(json.dumps(result) + "\n")
    for error in errors:
        print(f"dfgr score: {args.input}: {error}", flush=True)
    candidates = sum(len(r["scores"]) for r in results)
    unknown = ", ".join(f"{k} {v}" for k, v in sorted(ranker.unknown.items()) if v) or "none"
    cache = ranker.cache.stats.as_dict() if ranker.cache is not None else "off"
    print(
        f"scored {len(results)} requests ({candidates} candidates) into {args.output} in {time.time() - start:.1f} s; "
        f"unknown ids (scored with their OOV rows): {unknown}; cache: {cache}"
    )
    if errors:
        lines = ", ".join(str(e.line) for e in errors[:10]) + (" ..." if len(errors) > 10 else "")
        raise ValueError(
            f"{len(errors)} of {len(results) + len(errors)} requests rejected (lines {lines}); "
            f"the others are scored in {args.output}"
        )


def compiled_by_default(args: argparse.Namespace) -> bool:
    """Whether the exported graph scores the candidates: only with ``--compiled``; eager otherwise.

    The measured rule (``dfgr bench cold-start``, figures and load averages in
    results/serving/cold_start.json): a fresh process scores its first request about 1 s sooner with
    the eager modules than with the exported program (``torch.export.load``) or the AOTInductor
    package, quiet (load 0.2-0.6: 3.67 s vs 4.64 s / 4.71 s) or loaded (load 1.7-2.2 on 2 cores:
    3.99 s vs 5.02 s / 5.60 s). Quiet, the compiled paths then score a request 3.5-4.5 ms faster
    (8.7 ms eager) and catch up after about 250 requests; loaded, they were slower per request too.
    So eager is the default, and ``--compiled`` (with ``--allow-native-code`` for the package) is for
    long inputs on a quiet machine: rerun the benchmark on the serving machine and model to choose.
    """
    return bool(args.compiled)


@contextlib.contextmanager
def _output(path: str) -> Iterator[TextIO]:
    """The output file, written beside ``path`` and renamed at the end; ``ValueError`` if it cannot be written."""
    if os.path.isdir(path):
        raise ValueError(f"--output {path}: is a directory; expected a file path")
    with contextlib.ExitStack() as stack:
        try:
            out = stack.enter_context(open(stack.enter_context(atomic_file(path)), "w"))
        except OSError as e:
            raise ValueError(
                f"--output {path}: cannot be written ({e.strerror or e}{f': {e.filename}' if e.filename else ''}); nothing was scored"
            ) from None
        yield out
