"""The docs' results pages, written from the committed study outputs, never typed by hand.

``dfgr report-docs --out docs/results`` (or ``python -m dfgr_torchrec.study.docs``) reads each
committed study's ``results.jsonl`` (one row per run x split x task, written by ``dfgr study``) and
writes one markdown page per study plus an index: per data set, each model's test and validation
mean AUC / GAUC over tasks (mean ± std over seeds, chosen runs only), the user-id variant and grid
point chosen on validation, seconds, tokens and labelled positions per epoch, each task's test AUC,
and for a scaling study its sizes, FLOPs and log-linear fits. A study whose ``manifest.json``
records runs that its config no longer makes gets "results predate config ``key``" lines
(:mod:`dfgr_torchrec.study.staleness`). Superseded generations live under ``results/history/``
(``results.jsonl`` and ``summary.md`` only), their pages kept as the record.
``tests/study/test_results_docs.py`` regenerates the pages and compares.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from dfgr_torchrec.study.bench_pages import benchmarks_page
from dfgr_torchrec.study.manifest import load_manifest, manifest_study
from dfgr_torchrec.study.report import _mean, _mean_std, _per_seed_task_mean, _positives_line, _scaling_lines
from dfgr_torchrec.study.staleness import predate_lines, predating, working_dir


@dataclass(frozen=True)
class Study:
    """A committed study output and what the page says about it."""

    folder: str  # under results/ (history/<name> for a superseded generation)
    title: str
    config: str
    note: str

    @property
    def page(self) -> str:
        return self.folder.rsplit("/", 1)[-1]

    @property
    def history(self) -> bool:
        return self.folder.startswith("history/")


STUDIES = (
    Study(
        "full_v2",
        "Full study: 9 models x 3 data sets",
        "configs/study/full.yaml",
        "The 4 grid points (lr x {none, embedding weight decay 0.01 + dropout 0.2}) with the user id, the "
        "best one without it, 3 seeds of the best on validation, test once. 2 processes per run, the "
        "2-core CPU machine, 2026-12-01/02.",
    ),
    Study(
        "quick",
        "Quick study: KuaiRand slice, one seed, no grid",
        "configs/study/quick.yaml",
        "One seed, every model with the user id, up to 20 epochs with early stopping. 2 processes per "
        "run, 2026-12-01 (DFGR's and MetaGR's rows rerun 2026-12-02 with their configs' current points).",
    ),
    Study(
        "small_movielens",
        "Small-log protocol: 1,007 MovieLens-1M users",
        "configs/study/small_movielens.yaml",
        "Every sixth user by id (configs/data/movielens-1m-1k.yaml), the full study's 4 points with the user "
        "id, 3 seeds of the best on validation, the default step floor (300 steps). 2 processes per run, "
        "2026-12-06, beside other work (load 3 to 7).",
    ),
    Study(
        "small_movielens_v2",
        "Small-log protocol, validated every 10 steps: 1,007 MovieLens-1M users",
        "configs/study/small_movielens_v2.yaml",
        "As the small-log protocol, every model validated every 10 steps with a patience of 10 validations "
        "(at every 50 steps every sequence model and logreg chose its first validation). 2 processes per run, "
        "2026-12-07 05:49 to 07:05 UTC, beside other work (load 2 to 4).",
    ),
    Study(
        "scaling_movielens_v2",
        "Scaling study: DFGR and MetaGR at 5 sizes on MovieLens-1M",
        "configs/study/scaling_movielens.yaml",
        "One seed per size, up to 5 epochs with the validation protocol and patience 3, no user id. "
        "2 processes per run, 2026-12-02.",
    ),
    Study(
        "ablation_pointwise_v2",
        "Ablation: DFGR's attention form and LayerNorm eps on MovieLens-1M",
        "configs/study/ablation_pointwise.yaml",
        "At lr 0.002 without embedding weight decay or dropout; eps 1e-6 has one seed. 2026-12-02.",
    ),
    Study(
        "repeat_synth",
        "Repeat behaviour: DFGR, MetaGR and DCN without and with the repeat feature",
        "configs/study/repeat_synth.yaml",
        "On the planted-repeat log (configs/data/synth-repeat.yaml), at the demo's budget, 3 seeds, "
        "`model.embeddings.repeat_feature` off and on. 1 process per run, 2026-12-06.",
    ),
    Study(
        "history/quick_3epochs",
        "Quick study at 3 epochs per model",
        "configs/study/quick.yaml (train.epochs=3)",
        "Every model was still improving when stopped.",
    ),
)
BEFORE_FIX = (
    "Trained before the data-parallel fix (commit cd10b2f): the dense layers of a multi-process run "
    "were not averaged over ranks. Kept for the record; the current results are on the other pages."
)
STUDIES += (
    Study("history/full", "Full study, before the data-parallel fix", "configs/study/full.yaml", BEFORE_FIX),
    Study(
        "history/scaling_movielens",
        "Scaling study, before the data-parallel fix",
        "configs/study/scaling_movielens.yaml",
        BEFORE_FIX,
    ),
    Study(
        "history/ablation_pointwise",
        "Attention-form ablation, before the data-parallel fix",
        "configs/study/ablation_pointwise.yaml",
        BEFORE_FIX + " One seed each.",
    ),
)
HISTORY = (
    "A superseded generation: `results/{folder}/` keeps its `results.jsonl` and `summary.md`; its "
    "per-run folders and plots were dropped from the tree (last present at commit 089a18c)."
)
HEADER = "<!-- written by `dfgr report-docs --out docs/results` from results/{folder}/results.jsonl: do not edit -->"
MODEL_COLUMNS = (
    "model",
    "seeds",
    "test AUC",
    "test GAUC",
    "valid AUC",
    "valid GAUC",
    "user id variant",
    "s / epoch",
    "tokens / epoch",
    "labelled positions / epoch",
    "chosen point",
)


def load_rows(path: str) -> List[Dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line, parse_constant=lambda c: float(c)) for line in f if line.strip()]


def _cell_count(value: Any) -> str:
    return "-" if value is None else f"{value:,}"


def _model_row(model: str, test: List[Dict[str, Any]], valid: List[Dict[str, Any]]) -> str:
    per_seed = list({r["seed"]: r for r in test}.values())
    per_epoch = [r["train_seconds"] / r["epochs"] for r in per_seed if r.get("epochs") and r.get("train_seconds")]
    variant = test[0].get("variant") or "-"
    point = json.dumps(test[0]["params"]) if test[0]["params"] else "-"
    cells = [
        f"`{model}`",
        str(len(per_seed)),
        _mean_std(_per_seed_task_mean(test, "auc")),
        _mean_std(_per_seed_task_mean(test, "gauc")),
        _mean_std(_per_seed_task_mean(valid, "auc")) if valid else "-",
        _mean_std(_per_seed_task_mean(valid, "gauc")) if valid else "-",
        variant,
        _mean(per_epoch, ".1f"),
        _cell_count(test[0].get("epoch_tokens")),
        _cell_count(test[0].get("epoch_labels")),
        f"`{point}`" if point != "-" else point,
    ]
    return "| " + " | ".join(cells) + " |"


def _task_table(test: List[Dict[str, Any]], models: List[str]) -> List[str]:
    tasks = list(dict.fromkeys(r["task"] for r in test))
    lines = ["| model | " + " | ".join(f"AUC {t}" for t in tasks) + " |", "|---|" + "---|" * len(tasks)]
    lines += _positives_line(test, test[0]["data"], tasks)
    for model in models:
        cells = [_mean_std([r["auc"] for r in test if r["model"] == model and r["task"] == t]) for t in tasks]
        lines.append(f"| `{model}` | " + " | ".join(cells) + " |")
    return lines


def data_section(rows: List[Dict[str, Any]], data: str, page: str) -> List[str]:
    """The tables of one data set: models (chosen runs) and each task's test AUC."""
    chosen = [r for r in rows if r["data"] == data and r["chosen"]]
    test = [r for r in chosen if r["split"] == "test"]
    valid = [r for r in chosen if r["split"] == "valid"]
    models = list(dict.fromkeys(r["model"] for r in test))
    lines = [
        f"## {data}",
        "",
        "Mean over tasks, mean ± std over seeds; checkpoint, grid point and user-id variant chosen on validation.",
        "",
        "| " + " | ".join(MODEL_COLUMNS) + " |",
        "|" + "---|" * len(MODEL_COLUMNS),
    ]
    for model in models:
        lines.append(
            _model_row(model, [r for r in test if r["model"] == model], [r for r in valid if r["model"] == model])
        )
    lines += ["", "Test AUC per task:", ""] + _task_table(test, models)
    scaling = _scaling_lines(rows, data)
    if scaling:
        lines += ["", "Scaling (test GAUC against training FLOPs, least-squares fit per family):", ""]
        lines += [f"- {line.strip()}" for line in scaling if line.strip()]
        lines += ["", f"![test GAUC against training FLOPs]({page}_{data}_scaling.png)"]
    return lines + [""]


def study_page(study: Study, rows: List[Dict[str, Any]], predate: Sequence[str] = ()) -> str:
    """A study's page; ``predate``: its "results predate config" lines (:func:`predate_lines`)."""
    if study.history:
        where = HISTORY.format(folder=study.folder)
    else:
        where = (
            f"Reproduce: `dfgr study --config {study.config.split(' ')[0]} --out results/{study.folder}` "
            "(resumable: the runs `manifest.json` records are done; `--report-only` rewrites the outputs "
            f"without launching). Per-run configs and metrics: `results/{study.folder}/manifest.json`; plots: "
            f"`results/{study.folder}/<data>_test_auc.png`, `<data>_validation.png`."
        )
    lines = [
        HEADER.format(folder=study.folder),
        "",
        f"# {study.title}",
        "",
        f"`results/{study.folder}/`, from `{study.config}`. {study.note}",
        "",
        where,
        "",
    ]
    if predate:
        lines += ["The study config has changed since these runs:", "", *predate, ""]
    for data in dict.fromkeys(r["data"] for r in rows):
        lines += data_section(rows, data, study.page)
    return "\n".join(lines)


def study_predate(results: str, study: Study, root: Optional[str] = None) -> List[str]:
    """The "results predate config" lines of a study with a manifest (none for history); ``root``:
    where its config's paths start (default: the folder holding ``results``, the repository)."""
    folder = os.path.join(results, study.folder)
    entries = load_manifest(folder)
    if study.history or not entries:
        return []
    config = manifest_study(folder) or study.config
    with working_dir(root or os.path.dirname(os.path.abspath(results))):
        return predate_lines(predating(config, entries.values()), len(entries))


def index_page(studies: List[Study], benchmarks: bool) -> str:
    lines = [
        HEADER.format(folder="*"),
        "",
        "# Results",
        "",
        "Every table here is written from a committed study's `results.jsonl` by `dfgr report-docs`; "
        "what the numbers mean is in [Baselines and studies](../studies.md).",
        "",
        "| study | page | config |",
        "|---|---|---|",
    ]
    lines += [f"| {s.title} | [{s.page}]({s.page}.md) | `{s.config}` |" for s in studies]
    if benchmarks:
        lines += ["", "The benchmark outputs (`results/bench/`, `results/serving/`): [benchmarks](benchmarks.md)."]
    return "\n".join(lines + [""])


def write_docs(results: str, out: str, root: Optional[str] = None) -> List[str]:
    """Write ``out/<study>.md`` for each committed study, ``out/index.md`` and the scaling charts
    (``root``: where the study configs' paths start, default the folder holding ``results``)."""
    os.makedirs(out, exist_ok=True)
    written, present = [], []
    for study in STUDIES:
        path = os.path.join(results, study.folder, "results.jsonl")
        if not os.path.exists(path):
            continue
        present.append(study)
        rows = load_rows(path)
        page = study_page(study, rows, study_predate(results, study, root))
        written.append(_write(os.path.join(out, f"{study.page}.md"), page))
        for data in dict.fromkeys(r["data"] for r in rows):
            chart = os.path.join(results, study.folder, f"{data}_scaling.png")
            if _scaling_lines(rows, data) and os.path.exists(chart):
                written.append(shutil.copyfile(chart, os.path.join(out, f"{study.page}_{data}_scaling.png")))
    bench = benchmarks_page(results)
    if bench is not None:
        written.append(_write(os.path.join(out, "benchmarks.md"), bench))
    written.append(_write(os.path.join(out, "index.md"), index_page(present, bench is not None)))
    return written


def _write(path: str, text: str) -> str:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", default="results", help="the committed study outputs (default: results)")
    parser.add_argument("--out", default="docs/results", help="where the pages go (default: docs/results)")


def run(args: argparse.Namespace) -> List[str]:
    written = write_docs(args.results, args.out)
    print(f"wrote {len(written)} files to {args.out}")
    return written


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m dfgr_torchrec.study.docs", description=__doc__.splitlines()[0])
    add_arguments(_parser)
    run(_parser.parse_args())
