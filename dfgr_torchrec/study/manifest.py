"""A study's ``manifest.json``: what each of its runs was and what it scored, without its run folder.

While a study runs, each run has a folder ``<out>/runs/<name>/`` (config, metrics, checkpoints,
logs); what is committed is ``results.jsonl``, ``summary.md``, the plots and this manifest. One
entry per run: its name, data set, model, grid point, variant, overrides and seed, whether it is the
chosen one, the resolved config it trained with (as its ``config.yaml`` held it), the commit it ran
at (null where not recorded), its final metrics (validation at selection, the selection history;
the per-item-count slices left out), its test metrics where they were scored after training, its
train seconds and its train cost (:func:`dfgr_torchrec.study.flops.run_train_cost`).

``dfgr study`` treats an entry as a done run, so a committed study without ``runs/`` resumes by
running only what is missing, and :mod:`dfgr_torchrec.study.report` writes ``results.jsonl``,
``summary.md`` and the plots from these entries alone. ``python -m dfgr_torchrec.study.manifest
--out results/<study> --study configs/study/<study>.yaml`` writes it from a folder with ``runs/``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from typing import Any, Dict, List, Optional

VERSION = 1
FILE = "manifest.json"
# what every entry holds (config, commit, test and cost may be null)
ENTRY_KEYS = ("name", "data", "model", "point", "variant", "params", "seed", "final", "train_seconds")
ENTRY_KEYS += ("chosen", "config", "commit", "test", "cost")
COST_KEYS = ("train_flops", "epochs", "epoch_tokens", "epoch_labels")
DROPPED_METRICS = ("by_item_train_count",)  # per-slice metrics: bulky, read by no study page


def _bad(path: str, expected: str, got: Any) -> ValueError:
    return ValueError(f"{path}: not a study manifest: expected {expected}, got {str(got)[:80]!r}")


def load_manifest(out: str) -> Dict[str, Dict[str, Any]]:
    """``name -> entry`` of ``<out>/manifest.json``; empty when there is none. A file that is not
    one raises a one-line ``ValueError`` naming it and what was expected."""
    path = os.path.join(out, FILE)
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _bad(path, 'JSON {"version": 1, "study": ..., "runs": [...]}', e) from None
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("runs"), list):
        raise _bad(path, f'an object with "version": {VERSION} and a "runs" list', data)
    entries = {}
    for i, entry in enumerate(data["runs"]):
        missing = [k for k in ENTRY_KEYS if k not in entry] if isinstance(entry, dict) else list(ENTRY_KEYS)
        if missing:
            raise _bad(path, f"runs[{i}] with the keys {', '.join(ENTRY_KEYS)} (missing {', '.join(missing)})", entry)
        entries[entry["name"]] = entry
    return entries


def manifest_study(out: str) -> Optional[str]:
    """The study config a manifest names (None without a manifest)."""
    path = os.path.join(out, FILE)
    if not os.path.exists(path):
        return None
    load_manifest(out)  # a bad file fails here, with its one line
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("study")


def write_manifest(out: str, records: List[Dict[str, Any]], study: Optional[str]) -> str:
    """Writes ``<out>/manifest.json`` from complete records (:func:`complete_record`), keeping the
    entries of runs not among them (a done run is never forgotten); one run per line."""
    previous = load_manifest(out)
    if study is None:
        study = manifest_study(out)
    names = {r["name"] for r in records}
    entries = [{k: r.get(k) for k in ENTRY_KEYS} for r in records]
    entries += [e for name, e in previous.items() if name not in names]
    path = os.path.join(out, FILE)
    with open(path + ".tmp", "w", encoding="utf-8", newline="\n") as f:
        f.write(f'{{"version": {VERSION}, "study": {json.dumps(study)}, "runs": [\n')
        f.write(",\n".join(json.dumps(e) for e in entries))
        f.write("\n]}\n")
    os.replace(path + ".tmp", path)
    return path


def trim_metrics(metrics: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    return None if metrics is None else {k: v for k, v in metrics.items() if k not in DROPPED_METRICS}


def _read_json(path: str) -> Optional[Dict[str, Any]]:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def complete_record(
    record: Dict[str, Any], runs_dir: str, world_size: int, cost: Optional[Dict[str, Any]] = None
) -> Dict[str, Any]:
    """A runner record with what a manifest entry holds, read from its run folder where it lacks it
    (an entry read back from a manifest already has it all). ``cost``: the train cost when known
    (else computed from the run folder and its data)."""
    if all(k in record for k in ("config", "commit", "test", "cost")):
        return record
    import yaml

    run_dir = os.path.join(runs_dir, record["name"])
    with open(os.path.join(run_dir, "config.yaml")) as f:
        config = yaml.safe_load(f)
    if cost is None:
        from dfgr_torchrec.study.flops import run_train_cost

        cost = run_train_cost(run_dir, world_size)
    final = record["final"]
    test = None if final.get("split") == "test" else _read_json(os.path.join(run_dir, "metrics_eval.json"))
    return {
        **record,
        "final": trim_metrics(final),
        "config": config,
        "commit": (_read_json(os.path.join(run_dir, "study_run.json")) or {}).get("commit"),
        "test": trim_metrics(test),
        "cost": {k: cost.get(k) for k in COST_KEYS},
    }


def current_commit() -> Optional[str]:
    """The commit checked out here (``-dirty`` when tracked files differ from it), None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def _cost_by_run(out: str) -> Dict[tuple, Dict[str, Any]]:
    """The train cost of each run a committed ``results.jsonl`` reports, by (data, model, point, variant, seed)."""
    costs: Dict[tuple, Dict[str, Any]] = {}
    path = os.path.join(out, "results.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                key = (row["data"], row["model"], row["point"], row["variant"], row["seed"])
                costs[key] = {k: row.get(k) for k in COST_KEYS}
    return costs


def _unreported_runs(config: Any, runs_dir: str, reported: set) -> List[Dict[str, Any]]:
    """The finished runs of (data set, model) pairs that are not all done: kept as done runs, not chosen."""
    from dfgr_torchrec.study.runner import _seconds
    from dfgr_torchrec.study.staleness import RUN_NAME

    points, variants = config.grid_points(), dict(config.variant_list())
    records = []
    for name in sorted(os.listdir(runs_dir)):
        final = _read_json(os.path.join(runs_dir, name, "metrics_final.json"))
        match = RUN_NAME.fullmatch(name)
        if name in reported or final is None or match is None:
            continue
        variant = match["variant"] or config.variant_list()[0][0]
        record = {"name": name, "data": match["data"], "model": match["model"], "point": int(match["point"])}
        record.update(variant=variant, params={**points[record["point"]], **variants[variant]})
        record.update(seed=int(match["seed"]), final=final, chosen=False)
        records.append({**record, "train_seconds": _seconds(os.path.join(runs_dir, name))})
    return records


def manifest_from_runs(out: str, study: str) -> List[Dict[str, Any]]:
    """Writes the manifest of a study folder that has ``runs/`` (its runs as ``dfgr study
    --report-only`` reads them; the train cost from its ``results.jsonl`` where that reports the
    run, so its data need not be here); returns the complete records."""
    from dfgr_torchrec.study.config import load_study_config
    from dfgr_torchrec.study.runner import StudyRunner

    config = load_study_config(study)
    records = StudyRunner(config, out).run(finished_only=True)
    costs, runs_dir = _cost_by_run(out), os.path.join(out, "runs")
    records += _unreported_runs(config, runs_dir, {r["name"] for r in records})
    done = []
    for r in records:
        # a run results.jsonl has no row of reports no cost; without results.jsonl it is computed
        cost = costs.get((r["data"], r["model"], r["point"], r["variant"] or None, r["seed"]), {} if costs else None)
        done.append(complete_record(r, runs_dir, config.nproc, cost=cost))
    write_manifest(out, done, study)
    return done


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dfgr_torchrec.study.manifest", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="a study output folder with runs/")
    parser.add_argument("--study", required=True, help="its study config, e.g. configs/study/quick.yaml")
    args = parser.parse_args(argv)
    records = manifest_from_runs(args.out, args.study)
    print(f"{os.path.join(args.out, FILE)}: {len(records)} runs")


if __name__ == "__main__":
    main()
