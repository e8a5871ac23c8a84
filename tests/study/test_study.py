"""A trimmed study, for real: two models, a two-point grid, two variants, two seeds, torchrun jobs of the recipe."""

import json
import pathlib
import shutil
from collections import defaultdict

import pytest
import yaml

from dfgr_torchrec.cli import main
from dfgr_torchrec.study.config import load_study_config
from dfgr_torchrec.study.runner import StudyRunner

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not (ROOT.parent / "shared" / "data").exists(), reason="../shared/data is absent")


def _study(tmp_path):
    config = {
        "name": "trimmed",
        "nproc": 1,
        "seeds": [0, 1],
        "common": ["train.max_steps=12", "eval.every_steps=6"],
        "grid": {"optim.lr": [0.001, 0.01], "model.embeddings.dropout": [0.0]},  # a model key too
        "variants": {"user_id": {"data.user_id": True}, "no_user_id": {"data.user_id": False}},
        "datasets": {
            "kuairand": {
                "dfgr": "configs/train/debug.yaml",
                "bias": ["configs/train/debug.yaml", "model.type=bias"],
            }
        },
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))  # variants keep their order
    return path


@pytest.mark.slow
def test_trimmed_study_chooses_on_validation_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    path, out = _study(tmp_path), tmp_path / "out"
    assert main(["study", "--config", str(path), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    for model in ("dfgr", "bias"):
        mine = [r for r in rows if r["model"] == model]
        valid_auc = defaultdict(list)  # (point, variant) -> the first seed's validation AUC per task
        for r in mine:
            if r["split"] == "valid" and r["seed"] == 0:
                valid_auc[(r["point"], r["variant"])].append(r["auc"])
        means = {k: sum(v) / len(v) for k, v in valid_auc.items()}
        grid_best = max((0, 1), key=lambda p: means[(p, "user_id")])  # the grid runs the first variant
        assert set(means) == {(0, "user_id"), (1, "user_id"), (grid_best, "no_user_id")}
        chosen = {(r["point"], r["variant"]) for r in mine if r["chosen"]}
        assert len(chosen) == 1  # one candidate for every seed: the best on validation (mean AUC over tasks)
        (best,) = chosen
        assert means[best] == max(means.values())
        assert {json.dumps(r["params"]["data.user_id"]) for r in mine if (r["point"], r["variant"]) == best} == {
            "true" if best[1] == "user_id" else "false"
        }
        tested = {(r["point"], r["variant"], r["seed"]) for r in mine if r["split"] == "test"}
        assert tested == {(*best, 0), (*best, 1)}  # the other candidates never touched the test split
        flops = {r["train_flops"] for r in mine}
        assert all(f > 0 for f in flops) if model == "dfgr" else flops == {None}  # counted for generative models
    summary = (out / "summary.md").read_text()
    assert "| dfgr | 2 |" in summary and "| bias | 2 |" in summary
    assert (out / "kuairand_test_auc.png").stat().st_size > 0 and (out / "kuairand_validation.png").exists()

    launched = []  # a second invocation finds every run done and launches nothing
    runner = StudyRunner(load_study_config(str(path)), str(out), launcher=lambda args, log: launched.append(args) or 0)
    assert len(runner.run()) == 8 and launched == []

    # the outputs alone (manifest.json, no runs/) report the same and launch nothing
    committed = tmp_path / "committed"
    shutil.copytree(out, committed, ignore=shutil.ignore_patterns("runs"))
    assert main(["study", "--config", str(path), "--out", str(committed), "--report-only"]) == 0
    assert (committed / "results.jsonl").read_text() == (out / "results.jsonl").read_text()
    runner = StudyRunner(load_study_config(str(path)), str(committed), launcher=lambda a, log: launched.append(a) or 0)
    assert len(runner.run()) == 8 and launched == []

    # a study stopped half-way (no manifest yet) is reported without launching: unfinished models are left out
    (out / "manifest.json").unlink()
    (bias_s1,) = (out / "runs").glob("kuairand__bias__p*__s1")
    (bias_s1 / "metrics_final.json").rename(out / "bias_s1.json")
    assert main(["study", "--config", str(path), "--out", str(out), "--report-only"]) == 0
    assert {json.loads(line)["model"] for line in (out / "results.jsonl").read_text().splitlines()} == {"dfgr"}
    # --only launches the selected pairs' missing runs and reports the others as they are
    fake = lambda args, log: launched.append(args) or 0  # noqa: E731
    records = StudyRunner(load_study_config(str(path)), str(out), launcher=fake).run(only=["kuairand/dfgr"])
    assert launched == [] and {r["model"] for r in records} == {"dfgr"}
    with pytest.raises(ValueError, match=r"--only 'movielens/\*': matches none"):
        StudyRunner(load_study_config(str(path)), str(out), launcher=fake).run(only=["movielens/*"])

    def finish_bias_s1(args, log):  # the "run" puts its metrics back
        launched.append(args)
        (out / "bias_s1.json").rename(bias_s1 / "metrics_final.json")
        return 0

    records = StudyRunner(load_study_config(str(path)), str(out), launcher=finish_bias_s1).run(only=["*/bias"])
    assert len(launched) == 1 and f"name={bias_s1.name}" in launched[0] and len(records) == 8
    launched.clear()

    # results committed without weights: the chosen run is trained again and tested at its end
    chosen = next(r for r in rows if r["model"] == "dfgr" and r["chosen"] and r["seed"] == 0)
    label = f"p{chosen['point']}" + ("" if chosen["variant"] == "user_id" else f"-{chosen['variant']}")
    run_dir = out / "runs" / f"kuairand__dfgr__{label}__s0"
    shutil.rmtree(run_dir / "best")
    (run_dir / "metrics_eval.json").unlink()
    final = json.loads((run_dir / "metrics_final.json").read_text())

    def retrain(args, log):
        launched.append(args)
        (run_dir / "metrics_final.json").write_text(json.dumps({**final, "split": "test"}))
        return 0

    StudyRunner(load_study_config(str(path)), str(out), launcher=retrain).run()
    (args,) = launched
    assert "eval.test=true" in args and "train.overwrite=true" in args and "--eval-only" not in args
    assert f"optim.lr={chosen['params']['optim.lr']}" in args and "model.embeddings.dropout=0.0" in args
    assert f"data.user_id={json.dumps(chosen['params']['data.user_id'])}" in args
