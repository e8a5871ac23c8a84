"""`dfgr train` and `dfgr eval` as one process, as a user would type them."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not (ROOT.parent / "shared" / "data").exists(), reason="../shared/data is absent")


def _dfgr(*args):
    dfgr = pathlib.Path(sys.executable).parent / "dfgr"
    return subprocess.run([str(dfgr), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_train_then_eval_the_checkpoint(tmp_path):
    train = _dfgr("train", "--config", "configs/train/debug.yaml", f"output_dir={tmp_path}", "train.epochs=1")
    assert train.returncode == 0, train.stderr[-2000:]
    final = json.loads((tmp_path / "debug" / "metrics_final.json").read_text())
    assert final["split"] == "test" and final["candidates"] == 664 * 5 and 0.5 < final["tasks"]["like"]["auc"] <= 1.0
    assert final["selected_step"] == 21 and final["valid"]["split"] == "valid"  # one epoch: validated at its end
    log = [json.loads(line) for line in (tmp_path / "debug" / "train_log.jsonl").read_text().splitlines()]
    assert {"loss", "samples_per_s", "tokens_per_s", "peak_memory_mb", "lr"} <= set(log[0])
    assert (
        len(log[0]["peak_memory_mb_per_rank"]) == 1
        and log[0]["peak_memory_mb"] == log[0]["peak_memory_mb_per_rank"][0] > 100
    )
    # not a terminal: no progress bar, one stdout line per logged step (21 steps, log_every 5)
    assert "epoch 0:" not in train.stderr and "it/s" not in train.stderr
    step_lines = [line for line in train.stdout.splitlines() if line.startswith("step ") and " loss " in line]
    assert [line.split()[1] for line in step_lines] == ["5", "10", "15", "20"] == [str(r["step"]) for r in log]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "debug" / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/samples_per_s", "valid/like/auc", "test/like/auc"} <= set(events.Tags()["scalars"])
    assert events.Scalars("test/like/auc")[-1].value == pytest.approx(final["tasks"]["like"]["auc"], abs=1e-6)

    evaluated = _dfgr("eval", "--config", "configs/train/debug.yaml", f"output_dir={tmp_path}")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    again = json.loads((tmp_path / "debug" / "metrics_eval.json").read_text())
    assert again["tasks"]["like"]["auc"] == pytest.approx(final["tasks"]["like"]["auc"], abs=1e-6)


def test_bad_override_is_a_clear_error(tmp_path):
    out = _dfgr("train", "--config", "configs/train/debug.yaml", "optim.lrr=3")
    assert out.returncode == 2 and "optim.lrr" in out.stderr


def test_sparse_dist_pipeline_trains_like_the_base_loop(tmp_path):
    finals = []
    for pipeline in ("sparse_dist", "base"):
        out = _dfgr(
            "train",
            "--config",
            "configs/train/debug.yaml",
            f"output_dir={tmp_path / pipeline}",
            "train.epochs=1",
            f"train.pipeline={pipeline}",
        )
        assert out.returncode == 0, out.stderr[-2000:]
        finals.append(json.loads((tmp_path / pipeline / "debug" / "metrics_final.json").read_text())["tasks"])
    for task in finals[0]:
        assert finals[0][task]["logloss"] == pytest.approx(finals[1][task]["logloss"], abs=1e-5)


def test_a_re_targeted_config_says_what_it_left_out_on_one_line(capsys):
    from dfgr_torchrec.recipes.args import report_left_out
    from dfgr_torchrec.recipes.config import load_train_config

    path = str(ROOT / "configs/train/dfgr_kuairand.yaml")
    report_left_out(load_train_config(path, ["model.type=dcn"]))
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("left out model.bias_terms, model.interaction.attention_dim,")
    assert line.endswith(": not read by model type 'dcn'")
    report_left_out(load_train_config(path))
    assert capsys.readouterr().err == ""
