"""A task with one class in a split: its AUC / GAUC / NE are `null` with a reason in strict JSON,
and `n/a (<reason>)` in the table."""

import json

import pytest
import torch

from dfgr_torchrec.metrics import ranking_metrics
from dfgr_torchrec.recipes.report import main as report_main
from dfgr_torchrec.training.report import write_metrics


def _refuse(constant):
    raise ValueError(f"not strict JSON: {constant}")


def _metrics():
    logits = torch.tensor([[0.5, 1.0], [-0.5, 2.0], [0.1, -1.0], [0.3, 0.0]])
    labels = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 1.0], [1.0, 1.0]])  # "like" is all positive
    users = torch.tensor([0, 0, 1, 1])
    tasks = ranking_metrics(logits, labels, users, ["click", "like"])
    return {
        "split": "test",
        "candidates": 4,
        "tasks": tasks,
        "selected_step": 3,
        "selection": {"score": float("nan"), "history": [{"step": 3, "score": float("nan")}]},
    }


def test_metrics_file_is_strict_json_with_reasons(tmp_path, capsys):
    path = write_metrics(str(tmp_path), "final", _metrics())
    written = json.loads(open(path).read(), parse_constant=_refuse)
    like = written["tasks"]["like"]
    assert like["auc"] is None and like["gauc"] is None and like["ne"] is None
    assert like["notes"] == {"auc": "only positives", "gauc": "only positives", "ne": "only positives"}
    assert isinstance(written["tasks"]["click"]["auc"], float) and "notes" not in written["tasks"]["click"]
    assert written["selection"]["score"] is None
    table = capsys.readouterr().out
    assert "n/a (only positives)" in table and "nan" not in table


def test_report_command_prints_the_reason(tmp_path, capsys):
    path = write_metrics(str(tmp_path), "final", _metrics())
    capsys.readouterr()
    assert report_main([path]) == 0
    out = capsys.readouterr().out
    like = next(line for line in out.splitlines() if line.startswith("like"))
    assert like.count("n/a (only positives)") == 3 and "nan" not in out


@pytest.mark.parametrize("labels, note", [([0.0, 0.0], "only negatives"), ([1.0, 0.0], "no user with both classes")])
def test_other_reasons(labels, note):
    tasks = ranking_metrics(torch.tensor([[0.1], [0.2]]), torch.tensor(labels)[:, None], torch.tensor([0, 1]), ["t"])
    assert tasks["t"]["notes"]["gauc"] == note
