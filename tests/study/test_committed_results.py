"""The committed study outputs: each current study keeps a ``manifest.json`` (its runs' resolved
configs and metrics; no run folders), ``results.jsonl`` and ``summary.md`` are what its entries
report, and a training config changed after a study ran is reported on its results page ("results
predate config ``key``", :mod:`dfgr_torchrec.study.staleness`), never a failed ``make test``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dfgr_torchrec.study.config import load_study_config
from dfgr_torchrec.study.docs import write_docs
from dfgr_torchrec.study.manifest import load_manifest, manifest_study, write_manifest
from dfgr_torchrec.study.report import result_rows, summary_markdown
from dfgr_torchrec.study.runner import StudyRunner
from dfgr_torchrec.study.staleness import Predate, predate_lines, predating

ROOT = Path(__file__).resolve().parents[2]

# study config -> the committed output it describes (superseded generations are under results/history/)
STUDIES = {
    "configs/study/full.yaml": "results/full_v2",
    "configs/study/quick.yaml": "results/quick",
    "configs/study/scaling_movielens.yaml": "results/scaling_movielens_v2",
    "configs/study/ablation_pointwise.yaml": "results/ablation_pointwise_v2",
    "configs/study/small_movielens.yaml": "results/small_movielens",
    "configs/study/small_movielens_v2.yaml": "results/small_movielens_v2",
    "configs/study/repeat_synth.yaml": "results/repeat_synth",
}


@pytest.mark.parametrize("study", sorted(STUDIES), ids=os.path.basename)
def test_each_committed_study_is_reported_from_its_manifest_alone(study, tmp_path, monkeypatch):
    """``dfgr study --report-only`` on the manifest alone (no run folders) launches nothing and
    writes the committed results.jsonl and summary.md."""
    monkeypatch.chdir(ROOT)  # the studies name configs relative to the repository
    out = ROOT / STUDIES[study]
    assert manifest_study(str(out)) == study
    shutil.copyfile(out / "manifest.json", tmp_path / "manifest.json")
    records = StudyRunner(load_study_config(study), str(tmp_path), launcher=_refuse).run(finished_only=True)
    rows = result_rows(records)
    assert [json.dumps(r) for r in rows] == (out / "results.jsonl").read_text().splitlines()
    assert summary_markdown(rows, records) == (out / "summary.md").read_text()


def _refuse(args, log):
    raise AssertionError(f"launched {args}")


def test_no_run_folder_is_committed():
    tracked = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    assert not [p for p in tracked.stdout.splitlines() if "/runs/" in p]


@pytest.mark.parametrize("study", sorted(STUDIES), ids=os.path.basename)
def test_what_each_committed_study_predates_is_what_its_page_says(study, monkeypatch):
    monkeypatch.chdir(ROOT)  # the studies name configs relative to the repository
    entries = load_manifest(STUDIES[study])
    found = predating(study, entries.values())
    page = (ROOT / "docs" / "results" / f"{os.path.basename(STUDIES[study])}.md").read_text()
    assert all(line in page for line in predate_lines(found, len(entries)))
    assert ("results predate config" in page) == bool(found)


def _quick_with_lr(tmp_path, lr):
    """A copy of the committed quick study whose DFGR run recorded ``optim.lr = lr``."""
    out = tmp_path / "results" / "quick"
    out.mkdir(parents=True)
    entries = list(load_manifest(str(ROOT / "results" / "quick")).values())
    (dfgr,) = [e for e in entries if e["name"] == "kuairand__dfgr__p0__s0"]
    dfgr["config"]["optim"]["lr"] = lr
    write_manifest(str(out), entries, "configs/study/quick.yaml")
    (out / "results.jsonl").write_text((ROOT / "results" / "quick" / "results.jsonl").read_text())
    return out, entries


def test_a_run_recorded_with_another_value_is_reported(tmp_path, monkeypatch):
    """The comparison is not vacuous: an entry whose lr differs is named, with the key and both values."""
    monkeypatch.chdir(ROOT)
    out, entries = _quick_with_lr(tmp_path, 0.123)
    found = predating("configs/study/quick.yaml", load_manifest(str(out)).values())
    assert [(p.run, p.key, p.ran) for p in found] == [("kuairand__dfgr__p0__s0", "optim.lr", 0.123)]
    (line,) = predate_lines(found, len(entries))
    assert line.startswith(f"- results predate config `optim.lr`: the runs used 0.123 (1 of {len(entries)} runs)")


def test_a_study_entry_the_config_no_longer_has_is_reported(monkeypatch):
    monkeypatch.chdir(ROOT)
    entry = {"name": "kuairand__gone__p0__s0", "data": "kuairand", "model": "gone", "config": {}}
    assert predating("configs/study/quick.yaml", [entry]) == [
        Predate("kuairand__gone__p0__s0", "the study config's entry", "kuairand/gone", None)
    ]


def test_the_results_page_says_the_results_predate_a_changed_config(tmp_path):
    out, entries = _quick_with_lr(tmp_path, 0.123)
    write_docs(str(out.parent), str(tmp_path / "docs"), root=str(ROOT))
    page = (tmp_path / "docs" / "quick.md").read_text()
    assert f"- results predate config `optim.lr`: the runs used 0.123 (1 of {len(entries)} runs); " in page


def test_a_corrupt_manifest_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "manifest.json").write_text('{"version": 1, "runs": [{"name": "x"}]}')
    with pytest.raises(ValueError, match=r"manifest.json: not a study manifest: expected runs\[0\] with") as e:
        load_manifest(str(tmp_path))
    assert "\n" not in str(e.value)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"manifest.json: not a study manifest: expected JSON"):
        load_manifest(str(tmp_path))
