"""Which runs of a committed study predate its config: each manifest entry's recorded config
against what the study config resolves that run to now.

A training default changed after a study ran (a new value chosen on validation, say) does not
fail the tests: the results pages say "results predate config ``key``", with the values the runs
used and the value now, until the study is rerun (``dfgr study`` with the manifest reruns nothing
by itself: delete the entries to rerun).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import defaultdict
from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

# set per launch by the runner (or naming the run), not by the study entry
LAUNCH_KEYS = {"name", "output_dir", "eval.test", "checkpoint.resume", "train.overwrite"}
# how a run stops when preempted: never what a finished run computed
LAUNCH_KEYS |= {"train.preempt_grace_s"}
# the test hooks (all 0) that runs recorded under train: before they left the config for testing.*
LAUNCH_KEYS |= {"train.crash_at_step", "train.stall_at_step", "train.wait_for_signal_at_step"}
# keys added after a run was recorded -> the value the code then ran with (a run's config lacks them)
ADDED_KEYS = {
    "train.steps": 0,
    "train.min_steps": 0,
    "model.embeddings.repeat_feature": False,
    "model.rate_terms": False,
    "model.rate_prior": 10.0,
    "model.head_per_task": False,
    "model.rate_offset": False,
}
# the runner's run_name: <data>__<model>__p<point>[-<variant>]__s<seed>
RUN_NAME = re.compile(r"(?P<data>.+?)__(?P<model>.+)__p(?P<point>\d+)(?:-(?P<variant>\w+))?__s(?P<seed>\d+)")
MISSING = "the study config's entry"  # the key of a run whose (data set, model) the study no longer has


class Predate(NamedTuple):
    """A run whose recorded ``key`` was ``ran`` where its study config now makes ``now``."""

    run: str
    key: str
    ran: Any
    now: Any


def flat(tree: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (an empty mapping stays a value)."""
    out: Dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@contextlib.contextmanager
def working_dir(path: str) -> Iterator[None]:
    """Study configs name their training configs relative to the repository: resolve them there."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


class _Resolver:
    """What a study config makes each run now, resolved once per (data set, model, point, variant)."""

    def __init__(self, study: str) -> None:
        from dfgr_torchrec.study.config import load_study_config
        from dfgr_torchrec.study.runner import StudyRunner

        self.config = load_study_config(study)
        self.runner = StudyRunner(self.config, os.devnull, launcher=lambda args, log: 1)
        self.runs = {(r.data, r.model): r for r in self.config.model_runs()}
        self.cache: Dict[Tuple[str, str, int, str], Dict[str, Any]] = {}

    def now(self, run_name: str) -> Optional[Dict[str, Any]]:
        """The flat config the study makes ``run_name`` now; None where it has no such entry."""
        from dfgr_torchrec.recipes.config import config_dict, load_train_config

        match = RUN_NAME.fullmatch(run_name)
        if not match or (match["data"], match["model"]) not in self.runs:
            return None
        variants = dict(self.config.variant_list())
        variant = match["variant"] or self.config.variant_list()[0][0]
        points = self.config.grid_points()
        if variant not in variants or int(match["point"]) >= len(points):
            return None
        key = (match["data"], match["model"], int(match["point"]), variant)
        if key not in self.cache:
            params = {**points[key[2]], **variants[variant]}
            args = self.runner._args(self.runs[key[:2]], run_name, params, 0)
            self.cache[key] = flat(config_dict(load_train_config(args[1], args[2:])))
        return {**self.cache[key], "name": run_name, "train.seed": int(match["seed"])}


def predating(study: str, entries: Iterable[Dict[str, Any]]) -> List[Predate]:
    """Each (run, key) of the manifest ``entries`` whose recorded config differs from what ``study``
    (a study config path, relative to the working directory) makes the run now."""
    resolver, found = _Resolver(study), []
    for entry in entries:
        now = resolver.now(entry["name"])
        if now is None:
            found.append(Predate(entry["name"], MISSING, f"{entry['data']}/{entry['model']}", None))
            continue
        # the keys the run's model type reads now: a key only the recorded config has is one that
        # type never read (an older version recorded every type's keys)
        ran = {**ADDED_KEYS, **flat(entry.get("config") or {})}
        for k in sorted(set(now) - LAUNCH_KEYS):
            if ran.get(k) != now.get(k):
                found.append(Predate(entry["name"], k, ran.get(k), now.get(k)))
    return found


def predate_lines(found: List[Predate], runs: int) -> List[str]:
    """A bullet per key that differs: the values the runs used, the value now, how many runs."""
    by_key: Dict[str, Dict[Tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
    for p in found:
        by_key[p.key][(repr(p.ran), repr(p.now))] += 1
    lines = []
    for key, pairs in by_key.items():
        ran = ", ".join(f"{r} ({n} of {runs} runs)" for (r, _), n in pairs.items())
        now = ", ".join(dict.fromkeys(n for _, n in pairs))
        lines.append(f"- results predate config `{key}`: the runs used {ran}; the config now makes {now}")
    return lines
