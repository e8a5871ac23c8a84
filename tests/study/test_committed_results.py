"""The committed study outputs are what the shipped study configs run today.

Each committed run's ``config.yaml`` (the resolved config it trained with) must equal the config its
study entry resolves to now. A training config edited after a study ran (a new default chosen on
validation, say) must then be pinned in the study config, or the study rerun: otherwise the README's
tables would describe runs the shipped configs no longer make.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import pytest
import yaml

from dfgr_torchrec.config import BUILTIN_MODELS
from dfgr_torchrec.study.config import load_study_config
from dfgr_torchrec.study.runner import StudyRunner

ROOT = Path(__file__).resolve().parents[2]

# study config -> the committed output it describes (older outputs, kept for the record, ran older configs)
STUDIES = {
    "configs/study/full.yaml": "results/full_v2",
    "configs/study/quick.yaml": "results/quick",
    "configs/study/scaling_movielens.yaml": "results/scaling_movielens_v2",
    "configs/study/ablation_pointwise.yaml": "results/ablation_pointwise_v2",
    "configs/study/small_movielens.yaml": "results/small_movielens",
    "configs/study/repeat_synth.yaml": "results/repeat_synth",
}
# set per launch by the runner (or naming the run), not by the study entry
LAUNCH_KEYS = {"name", "output_dir", "eval.test", "checkpoint.resume", "train.overwrite"}
# how a run stops when preempted: never what a finished run computed
LAUNCH_KEYS |= {"train.preempt_grace_s"}
# the test hooks (all 0) that runs recorded under train: before they left the config for testing.*
LAUNCH_KEYS |= {"train.crash_at_step", "train.stall_at_step", "train.wait_for_signal_at_step"}
# keys added after a run was recorded -> the value the code then ran with (a run's config.yaml lacks them)
ADDED_KEYS = {
    "train.steps": 0,
    "train.min_steps": 0,
    "model.embeddings.repeat_feature": False,
    "model.rate_terms": False,
}
# keys a model type never reads (the pointwise baselines have no sequence attention), so a change in them changes no run
UNREAD = {kind: {"model.interaction.attention_form"} for kind in ("bias", "dlrm", "dcn", "deepfm", "din")}
# model.rate_prior came with logreg, the one type that reads it: the runs before it recorded none
for kind in set(BUILTIN_MODELS) - {"logreg"}:
    UNREAD.setdefault(kind, set()).add("model.rate_prior")
# the runner's run_name: <data>__<model>__p<point>[-<variant>]__s<seed>
RUN_NAME = re.compile(r"(?P<data>.+?)__(?P<model>.+)__p(?P<point>\d+)(?:-(?P<variant>\w+))?__s(?P<seed>\d+)")


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _expected_config(runner: StudyRunner, run_name: str) -> dict:
    from dfgr_torchrec.recipes.config import config_dict, load_train_config

    match = RUN_NAME.fullmatch(run_name)
    assert match, f"{run_name}: not a study run name"
    config = runner.config
    runs = {(r.data, r.model): r for r in config.model_runs()}
    key = (match["data"], match["model"])
    assert key in runs, f"{run_name}: the study config has no entry {key[0]}/{key[1]}"
    variants = dict(config.variant_list())
    variant = match["variant"] or config.variant_list()[0][0]
    params = {**config.grid_points()[int(match["point"])], **variants[variant]}
    args = runner._args(runs[key], run_name, params, int(match["seed"]))
    return config_dict(load_train_config(args[1], args[2:]))


def _stale_runs(study: str, out: str) -> list:
    """One line per committed run of ``out`` whose recorded config differs from what ``study`` runs now."""
    runner = StudyRunner(load_study_config(study), out, launcher=lambda args, log: 1)
    recorded = sorted(glob.glob(os.path.join(out, "runs", "*", "config.yaml")))
    assert recorded, f"{out}: no committed runs"
    stale = []
    for path in recorded:
        name = os.path.basename(os.path.dirname(path))
        with open(path) as f:
            ran = {**ADDED_KEYS, **_flat(yaml.safe_load(f))}
        now = _flat(_expected_config(runner, name))
        ignored = LAUNCH_KEYS | UNREAD.get(ran.get("model.type"), set())
        differ = sorted(k for k in (set(ran) | set(now)) - ignored if ran.get(k) != now.get(k))
        if differ:
            stale.append(f"{name}: " + ", ".join(f"{k} ran {ran.get(k)!r}, now {now.get(k)!r}" for k in differ))
    return stale


@pytest.mark.parametrize("study", sorted(STUDIES), ids=os.path.basename)
def test_each_committed_run_is_what_its_study_config_runs_now(study, monkeypatch):
    monkeypatch.chdir(ROOT)  # the studies name configs relative to the repository
    stale = _stale_runs(study, STUDIES[study])
    assert not stale, f"{study} no longer runs what {STUDIES[study]} holds:\n" + "\n".join(stale[:20])


def test_a_run_recorded_with_another_value_is_reported(tmp_path, monkeypatch):
    """The comparison is not vacuous: a copy of a committed run whose lr differs is named, with the key."""
    monkeypatch.chdir(ROOT)
    source = Path("results/quick/runs/kuairand__dfgr__p0__s0/config.yaml")
    ran = yaml.safe_load(source.read_text())
    ran["optim"]["lr"] = 0.123
    (tmp_path / "runs" / "kuairand__dfgr__p0__s0").mkdir(parents=True)
    (tmp_path / "runs" / "kuairand__dfgr__p0__s0" / "config.yaml").write_text(yaml.safe_dump(ran))
    [line] = _stale_runs("configs/study/quick.yaml", str(tmp_path))
    assert line.startswith("kuairand__dfgr__p0__s0: ") and "optim.lr ran 0.123, now" in line
