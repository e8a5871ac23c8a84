"""``dfgr bench cold-start``: how long a fresh ``dfgr score`` process takes to serve, per scoring path.

Each repeat of each path starts a new Python process (nothing cached in it) that imports the serving
code, loads the artifact with :meth:`Ranker.load`, scores the first request of ``--input``, then the
others; the process reports when each stage ended, measured from just before it was started. Paths:
``eager`` (the model's own modules), ``exported`` (the ``torch.export`` program, ``scoring.pt2``) and,
when the artifact has one and ``--allow-native-code`` is given, ``aoti`` (its AOTInductor package).
``ready_s`` (imports + load) is when ``dfgr score`` starts reading requests; ``first_request_s`` is
when the first one is scored (the cold request); ``cold_request_s`` is the first request alone;
``warm_request_ms`` the mean of the others (give distinct users to time encoding + scoring, repeated
users to time the cache). ``break_even`` is, per compiled path, after how many requests it has
caught up with eager (what the default of ``dfgr score`` is chosen by).
The paths run in rounds (each round every path once, in a rotating order) so load on the machine
hits them alike; the JSON holds every sample, the median of each, and the load average.

Example::

    dfgr bench cold-start --model artifacts/dfgr-movielens --input requests.jsonl --json outputs/cold_start.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List

STAGES = ("imports_s", "ready_s", "first_request_s", "all_requests_s")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="an artifact directory written by `dfgr export`")
    parser.add_argument("--input", required=True, help="requests (JSONL); the first is the cold one")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per path")
    parser.add_argument("--allow-native-code", action="store_true", help="also time the AOTInductor package")
    parser.add_argument("--json", default=None, help="where to write the samples and medians")


def _child(model: str, requests: str, path: str) -> None:
    """One cold process: prints ``{stage: absolute time}`` as JSON."""
    marks = {}
    from dfgr_torchrec.serving.compile import quiet_tracing_logs
    from dfgr_torchrec.serving.ranker import Ranker

    quiet_tracing_logs()
    marks["imports_s"] = time.time()
    ranker = Ranker.load(model, compiled=path != "eager", allow_native=path == "aoti")
    marks["ready_s"] = time.time()
    with open(requests) as f:
        lines = f.readlines()
    ranker.score_lines(lines[:1])
    marks["first_request_s"] = time.time()
    ranker.score_lines(lines[1:])
    marks["all_requests_s"] = time.time()
    print(json.dumps({"marks": marks, "native": ranker.scoring is not None and path == "aoti"}))


def _one(args: argparse.Namespace, path: str) -> Dict[str, float]:
    code = f"from dfgr_torchrec.bench.cold_start import _child; _child({args.model!r}, {args.input!r}, {path!r})"
    start = time.time()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise ValueError(f"{path}: the serving process failed: {result.stderr.strip().splitlines()[-1:]}")
    marks = json.loads(result.stdout.strip().splitlines()[-1])["marks"]
    sample = {stage: round(marks[stage] - start, 3) for stage in STAGES}
    sample["cold_request_s"] = round(marks["first_request_s"] - marks["ready_s"], 3)
    warm = (marks["all_requests_s"] - marks["first_request_s"]) / max(_count(args.input) - 1, 1)
    sample["warm_request_ms"] = round(1000 * warm, 2)
    return sample


def _count(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def break_even(medians: Dict[str, Dict[str, float]]) -> Dict[str, Any]:
    """Per compiled path: the seconds it adds before the first request, what it saves per later
    request, and from how many requests it finishes first (None: it never does)."""
    eager = medians["eager"]
    out = {}
    for path, m in medians.items():
        if path == "eager":
            continue
        extra = m["first_request_s"] - eager["first_request_s"]
        saved = eager["warm_request_ms"] - m["warm_request_ms"]
        out[path] = {
            "extra_first_request_s": round(extra, 3),
            "saved_per_request_ms": round(saved, 2),
            "break_even_requests": (max(0, round(1000 * extra / saved)) if saved > 0 else None),
        }
    return out


def run(args: argparse.Namespace) -> Dict[str, Any]:
    paths = ["eager", "exported"] + (["aoti"] if args.allow_native_code else [])
    samples: Dict[str, List[Dict[str, float]]] = {p: [] for p in paths}
    load = [os.getloadavg()]
    for r in range(args.repeats):
        for path in paths[r % len(paths) :] + paths[: r % len(paths)]:
            samples[path].append(_one(args, path))
        load.append(os.getloadavg())
    medians = {p: {k: round(statistics.median(s[k] for s in rows), 3) for k in rows[0]} for p, rows in samples.items()}
    out = {
        "model": args.model,
        "input": args.input,
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "loadavg_1_5_15": [list(map(lambda x: round(x, 2), la)) for la in load],
        "median": medians,
        "break_even": break_even(medians),
        "samples": samples,
    }
    for path, m in medians.items():
        print(f"{path:9s} " + "  ".join(f"{k} {v:.2f}" for k, v in m.items()))
    for path, b in out["break_even"].items():
        print(
            f"{path}: +{b['extra_first_request_s']:.2f} s before the first request, saves {b['saved_per_request_ms']:.1f} ms "
            f"per later request: ahead after {b['break_even_requests']} requests"
        )
    print(f"load average (1, 5, 15 min) before and after each round: {out['loadavg_1_5_15']}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out
