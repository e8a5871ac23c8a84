import pytest

from dfgr_torchrec.cli import main
from dfgr_torchrec.demo import load_demo_config


def test_demo_runs_and_reports_auc(capsys):
    assert main(["demo", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "AUC like" in out and "dfgr" in out and "metagr" in out


def test_demo_config_rejects_unknown_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: {embeddings: {item_vocab_size: 5}}\ntrain: {stepz: 3}\n")
    with pytest.raises(ValueError, match=r"train\.stepz"):
        load_demo_config(str(path))


def test_cli_reports_config_errors(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("modle: {}\n")
    assert main(["demo", "--config", str(path)]) == 2
    assert "modle" in capsys.readouterr().err
