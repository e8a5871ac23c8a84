"""Runs a study: every grid point on the first seed, then each other variant (``variants``) at the
best point, then the best of them (on validation) on every seed.

Each run is the training recipe in its own ``torchrun`` job, writing to ``<out>/runs/<name>``.
A run whose ``metrics_final.json`` exists, or which ``<out>/manifest.json`` records (a committed
study keeps the manifest, not the run folders: :mod:`dfgr_torchrec.study.manifest`), is done and skipped; an interrupted one resumes from
its checkpoint (``checkpoint.resume=auto``: else it starts again), so a study stopped at any point continues where it was. Grid
points the study does not choose are never scored on the test split (``eval.test=false``); the
chosen point is, once per seed.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

from dfgr_torchrec.study.config import ModelRun, StudyConfig
from dfgr_torchrec.study.manifest import current_commit, load_manifest
from dfgr_torchrec.training.run_lock import lock_run

Launcher = Callable[[List[str], str], int]  # (recipe arguments, log path) -> exit code


def _die_with_parent() -> None:
    """In the child, before exec: the kernel sends it SIGTERM when the study process dies (kill -9
    included), so a killed study never leaves a torchrun job training unsupervised (Linux only)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def torchrun(nproc: int) -> Launcher:
    """Launches the recipe as ``torchrun --standalone --nproc_per_node nproc``, logging to a file;
    the job dies with the study (:func:`_die_with_parent`)."""

    def launch(args: List[str], log_path: str) -> int:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            "dfgr_torchrec.recipes.train",
            *args,
        ]
        with open(log_path, "a") as log:
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            return subprocess.run(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent
            ).returncode

    return launch


class _NotRun(Exception):
    pass


def _not_run(args: List[str], log_path: str) -> int:
    raise _NotRun(log_path)


def run_name(run: ModelRun, label: str, seed: int) -> str:
    return f"{run.data}__{run.model}__{label}__s{seed}"


class Candidate(NamedTuple):
    """A grid point with one variant: its run label (``p2``, or ``p2-no_user_id`` for a variant
    other than the grid's own), the point's index, the variant's name, and the overrides of both."""

    label: str
    point: int
    variant: str
    params: Dict[str, Any]


class StudyRunner:
    """Args: the study, its output folder, and how to launch one recipe run (default: torchrun)."""

    def __init__(self, config: StudyConfig, out: str, launcher: Optional[Launcher] = None) -> None:
        self.config, self.out = config, out
        self.runs_dir = os.path.join(out, "runs")
        self.launch = launcher or torchrun(config.nproc)
        self.manifest = load_manifest(out)  # name -> the entry of a done run whose folder may be gone

    def run(self, finished_only: bool = False, only: Sequence[str] = ()) -> List[Dict[str, Any]]:
        """Runs (or skips) everything; returns one record per finished run. ``finished_only``
        launches nothing and leaves out each (data set, model) whose runs are not all done, so a
        study stopped half-way can be reported. ``only``: glob patterns of ``data/model``
        (``kuairand/*``, ``*/dfgr``): the runs of the others are not launched, only reported."""
        runs = {f"{r.data}/{r.model}": r for r in self.config.model_runs()}
        for pattern in only:
            if not fnmatch.filter(runs, pattern):
                raise ValueError(
                    f"--only {pattern!r}: matches none of the study's data/model pairs ({', '.join(runs)})"
                )
        os.makedirs(self.runs_dir, exist_ok=True)
        if not finished_only:
            lock_run(
                self.out, "study", instead="another --out"
            )  # one study per output folder; a report reads alongside
        launch, records = self.launch, []
        try:
            for name, model_run in runs.items():
                selected = not only or any(fnmatch.fnmatchcase(name, p) for p in only)
                self.launch = _not_run if finished_only or not selected else launch
                try:
                    records += self._model(model_run)
                except _NotRun:
                    print(f"{model_run.data} / {model_run.model}: not finished, left out", flush=True)
        finally:
            self.launch = launch
        return records

    def _model(self, model_run: ModelRun) -> List[Dict[str, Any]]:
        """The grid on the first seed (with the first variant), then the other variants at the best
        point, then the best of all of them on the other seeds; all choices on validation."""
        points, seeds, variants = self.config.grid_points(), self.config.seeds, self.config.variant_list()
        first = variants[0][0]
        single = len(points) == 1 and len(variants) == 1

        def candidate(point: int, variant: str, overrides: Dict[str, Any]) -> Candidate:
            label = f"p{point}" if variant == first else f"p{point}-{variant}"
            return Candidate(label, point, variant, {**points[point], **overrides})

        stage = [candidate(i, first, variants[0][1]) for i in range(len(points))]
        tried = [self._ensure(model_run, c, seeds[0], test=single) for c in stage]
        best = max(range(len(tried)), key=lambda i: _score(tried[i]))
        stage += [candidate(stage[best].point, name, overrides) for name, overrides in variants[1:]]
        tried += [self._ensure(model_run, c, seeds[0], test=False) for c in stage[len(tried) :]]
        best = max(range(len(tried)), key=lambda i: _score(tried[i]))
        if not single:
            tried[best] = self._ensure_test(model_run, stage[best], seeds[0], tried[best])
        chosen = [self._ensure(model_run, stage[best], seed, test=True) for seed in seeds[1:]]
        for i, record in enumerate(tried):
            record["chosen"] = i == best
        return tried + [{**record, "chosen": True} for record in chosen]

    def _args(
        self,
        model_run: ModelRun,
        name: str,
        params: Dict[str, Any],
        seed: int,
        flags: Sequence[str] = (),
        extra: Sequence[str] = (),
    ) -> List[str]:
        """The recipe's arguments for one run of ``model_run`` with ``params`` and ``seed``."""
        return [
            "--config",
            model_run.config,
            *flags,
            f"output_dir={self.runs_dir}",
            f"name={name}",
            *model_run.overrides,
            *(f"{k}={json.dumps(v)}" for k, v in params.items()),
            f"train.seed={seed}",
            *extra,
        ]

    def _ensure(self, model_run: ModelRun, candidate: Candidate, seed: int, test: bool) -> Dict[str, Any]:
        name = run_name(model_run, candidate.label, seed)
        run_dir = os.path.join(self.runs_dir, name)
        final = os.path.join(run_dir, "metrics_final.json")
        if not os.path.exists(final) and name in self.manifest:
            return {k: v for k, v in self.manifest[name].items() if k != "chosen"}
        if not os.path.exists(final):
            # an interrupted run resumes from its checkpoint, or starts again if it had none yet
            self._launch(
                name,
                self._args(
                    model_run,
                    name,
                    candidate.params,
                    seed,
                    extra=[f"eval.test={str(test).lower()}", "checkpoint.resume=auto"],
                ),
            )
        with open(final) as f:
            metrics = json.load(f)
        return {
            "name": name,
            "data": model_run.data,
            "model": model_run.model,
            "point": candidate.point,
            "variant": candidate.variant,
            "params": candidate.params,
            "seed": seed,
            "final": metrics,
            "train_seconds": _seconds(run_dir),
        }

    def _ensure_test(
        self, model_run: ModelRun, candidate: Candidate, seed: int, record: Dict[str, Any]
    ) -> Dict[str, Any]:
        """The chosen first-seed run was trained without a test: score its best checkpoint now. A
        run whose weights are gone (a study resumed from committed results, which keep metrics, not
        weights) is trained again, with the test at its end."""
        name = run_name(model_run, candidate.label, seed)
        run_dir = os.path.join(self.runs_dir, name)
        if record.get("test") is not None or os.path.exists(os.path.join(run_dir, "metrics_eval.json")):
            return record
        if record["final"].get("split") == "test":
            return record
        if not os.path.isdir(os.path.join(run_dir, "best")):
            if self.launch is _not_run:
                raise _NotRun(name)
            print(
                f"{name}: chosen on validation, but its weights are gone: training it again, then testing", flush=True
            )
            for stale in ("metrics_final.json", "study_run.json"):
                if os.path.exists(os.path.join(run_dir, stale)):
                    os.remove(os.path.join(run_dir, stale))
            self._launch(
                name,
                self._args(model_run, name, candidate.params, seed, extra=["eval.test=true", "train.overwrite=true"]),
            )
            return self._ensure(model_run, candidate, seed, test=True)
        self._launch(
            name,
            self._args(model_run, name, candidate.params, seed, flags=["--eval-only", "--split", "test"]),
            timed=False,
        )
        return record

    def _launch(self, name: str, args: List[str], timed: bool = True) -> None:
        log_path = os.path.join(self.runs_dir, f"{name}.log")
        start = time.perf_counter()
        code = self.launch(args, log_path)
        if code != 0:
            raise RuntimeError(f"study run {name} failed (exit {code}); its log: {log_path}")
        if timed:
            _add_seconds(os.path.join(self.runs_dir, name), time.perf_counter() - start)
        print(f"{name}: done in {time.perf_counter() - start:.0f} s", flush=True)


def _score(record: Dict[str, Any]) -> float:
    score = record["final"].get("selection", {}).get("score")
    return float("-inf") if score is None or score != score else score


def _seconds(run_dir: str) -> Optional[float]:
    path = os.path.join(run_dir, "study_run.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)["train_seconds"]


def _add_seconds(run_dir: str, seconds: float) -> None:
    """Wall time of the run's jobs, summed over resumes, and the commit the last of them ran at."""
    total = (_seconds(run_dir) or 0.0) + seconds
    with open(os.path.join(run_dir, "study_run.json"), "w") as f:
        json.dump({"train_seconds": round(total, 1), "commit": current_commit()}, f)
