"""The study's choices, with a stand-in launcher whose runs score as a function of their overrides
(the real torchrun jobs are in test_study.py)."""

import json
import os

import pytest

from dfgr_torchrec.study.config import StudyConfig
from dfgr_torchrec.study.runner import StudyRunner

VARIANTS = {"user_id": {"data.user_id": True}, "no_user_id": {"data.user_id": False}}


def _launcher(runs_dir, score, launched):
    """Writes what a finished run writes; its validation score is ``score(overrides)``."""

    def launch(args, log_path):
        launched.append(args)
        overrides = dict(a.split("=", 1) for a in args if "=" in a)
        run_dir = os.path.join(runs_dir, overrides["name"])
        os.makedirs(os.path.join(run_dir, "best"), exist_ok=True)
        if "--eval-only" in args:
            with open(os.path.join(run_dir, "metrics_eval.json"), "w") as f:
                json.dump({"split": "test", "tasks": {}}, f)
            return 0
        final = {
            "split": "test" if overrides["eval.test"] == "true" else "valid",
            "tasks": {},
            "selection": {"score": score(overrides)},
        }
        with open(os.path.join(run_dir, "metrics_final.json"), "w") as f:
            json.dump(final, f)
        return 0

    return launch


@pytest.mark.parametrize("user_id_gain, chosen", [(0.05, "p1-no_user_id"), (-0.05, "p1")])
def test_other_variants_are_tried_at_the_best_grid_point_and_the_best_is_seeded(tmp_path, user_id_gain, chosen):
    config = StudyConfig(
        name="v",
        datasets={"kuairand": {"dfgr": "configs/train/debug.yaml"}},
        seeds=[0, 1, 2],
        grid={"optim.lr": [0.001, 0.01]},
        variants=VARIANTS,
    )

    def score(o):  # the larger lr wins the grid; dropping the user id adds user_id_gain
        return float(o["optim.lr"]) + (user_id_gain if o["data.user_id"] == "false" else 0.0)

    launched = []
    records = StudyRunner(config, str(tmp_path), launcher=_launcher(str(tmp_path / "runs"), score, launched)).run()
    names = [a for args in launched for a in args if a.startswith("name=")]
    first_seed = [
        "name=kuairand__dfgr__p0__s0",
        "name=kuairand__dfgr__p1__s0",
        "name=kuairand__dfgr__p1-no_user_id__s0",
    ]
    assert names[:3] == first_seed  # the variant only at the grid's best point (p1), never at p0
    assert names[3:] == [f"name=kuairand__dfgr__{chosen}__s{s}" for s in (0, 1, 2)]
    assert "--eval-only" in launched[3]  # the chosen first-seed run's best checkpoint, tested once
    picked = [r for r in records if r["chosen"]]
    assert {r["name"].rsplit("__", 1)[0] for r in picked} == {f"kuairand__dfgr__{chosen}"} and len(picked) == 3
    assert all(r["params"] == {"optim.lr": 0.01, "data.user_id": chosen == "p1"} for r in picked)
    assert {r["variant"] for r in picked} == {"user_id" if chosen == "p1" else "no_user_id"}
    for args in launched[:3] + launched[4:]:  # every training run carries its variant's override
        name = next(a for a in args if a.startswith("name="))
        assert ("data.user_id=false" in args) == ("no_user_id" in name)
    for args in launched:  # only the chosen candidate ever reaches the test split
        tests = "--eval-only" in args or "eval.test=true" in args
        assert not tests or f"__{chosen}__" in next(a for a in args if a.startswith("name="))


def test_without_variants_a_single_point_is_tested_at_the_end_of_its_run(tmp_path):
    config = StudyConfig(name="one", datasets={"kuairand": {"dfgr": "configs/train/debug.yaml"}}, seeds=[0])
    launched = []
    StudyRunner(config, str(tmp_path), launcher=_launcher(str(tmp_path / "runs"), lambda o: 0.5, launched)).run()
    (args,) = launched
    assert "name=kuairand__dfgr__p0__s0" in args and "eval.test=true" in args


def test_a_committed_study_without_run_folders_resumes_by_running_only_what_is_missing(tmp_path):
    """The manifest's entries are done runs: with runs/ gone nothing is launched again, and a seed
    added to the study is the only thing run."""
    import shutil

    from dfgr_torchrec.study.manifest import load_manifest, write_manifest

    config = StudyConfig(
        name="m", datasets={"kuairand": {"dfgr": "configs/train/debug.yaml"}}, seeds=[0, 1], grid={"optim.lr": [1, 2]}
    )
    launched = []
    runner = StudyRunner(config, str(tmp_path), launcher=_launcher(str(tmp_path / "runs"), lambda o: 0.5, launched))
    records = runner.run()
    # what write_results keeps: the records completed from their run folders (here a stand-in config and cost)
    tested = {"split": "test", "tasks": {}}  # the chosen first-seed run's test, scored after training
    entries = [
        {**r, "config": {}, "commit": None, "test": tested if r["chosen"] else None, "cost": {}} for r in records
    ]
    write_manifest(str(tmp_path), entries, None)
    shutil.rmtree(tmp_path / "runs")
    launched.clear()
    again = StudyRunner(config, str(tmp_path), launcher=_launcher(str(tmp_path / "runs"), lambda o: 0.5, launched))
    assert [r["name"] for r in again.run()] == [r["name"] for r in records] and launched == []
    config.seeds = [0, 1, 2]
    more = StudyRunner(config, str(tmp_path), launcher=_launcher(str(tmp_path / "runs"), lambda o: 0.5, launched))
    assert len(more.run()) == len(records) + 1
    assert [a for args in launched for a in args if a.startswith("name=")] == ["name=kuairand__dfgr__p0__s2"]
    assert set(load_manifest(str(tmp_path))) == {r["name"] for r in records}  # the manifest is rewritten by a report


def test_the_manifest_of_a_folder_with_runs_keeps_every_finished_run(tmp_path, monkeypatch):
    """manifest_from_runs (how the committed studies were converted): each run's recorded config and
    test, the cost its results.jsonl reports, and the finished run of a pair not all done."""
    import yaml

    from dfgr_torchrec.study.manifest import load_manifest, manifest_from_runs

    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    study = tmp_path / "study.yaml"
    datasets = {
        "kuairand": {"dfgr": "configs/train/debug.yaml", "bias": ["configs/train/debug.yaml", "model.type=bias"]}
    }
    study.write_text(yaml.safe_dump({"name": "c", "seeds": [0, 1], "grid": {"optim.lr": [1, 2]}, "datasets": datasets}))
    out, launched = tmp_path / "out", []
    fake = _launcher(str(out / "runs"), lambda o: float(o["optim.lr"]), launched)

    def launch(args, log_path):  # the stand-in run also records its config, as the recipe does
        name = next(a.split("=", 1)[1] for a in args if a.startswith("name="))
        code = fake(args, log_path)
        (out / "runs" / name / "config.yaml").write_text(yaml.safe_dump({"optim": {"lr": name}}))
        return code

    from dfgr_torchrec.study.config import load_study_config

    StudyRunner(load_study_config(str(study)), str(out), launcher=launch).run()
    row = {"data": "kuairand", "model": "dfgr", "point": 1, "variant": None, "seed": 1, "train_flops": 7.0}
    (out / "results.jsonl").write_text(json.dumps(row) + "\n")
    (out / "runs" / "kuairand__bias__p1__s1" / "metrics_final.json").unlink()  # bias is not all done
    manifest_from_runs(str(out), str(study))
    entries = load_manifest(str(out))
    assert sorted(entries) == sorted(
        [f"kuairand__dfgr__p{p}__s0" for p in (0, 1)]
        + ["kuairand__dfgr__p1__s1"]
        + [f"kuairand__bias__p{p}__s0" for p in (0, 1)]
    )
    assert entries["kuairand__dfgr__p1__s0"]["test"] == {"split": "test", "tasks": {}}  # tested after training
    assert entries["kuairand__dfgr__p1__s1"]["cost"]["train_flops"] == 7.0
    assert entries["kuairand__bias__p1__s0"]["chosen"] is False  # kept as a done run of an unfinished pair
    assert entries["kuairand__dfgr__p0__s0"]["config"] == {"optim": {"lr": "kuairand__dfgr__p0__s0"}}
