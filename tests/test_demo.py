"""`dfgr demo`: the recipe on a generated log, for each model type, with no download."""

import pathlib

from dfgr_torchrec.cli import main


def test_demo_trains_each_model_and_reports_auc(tmp_path, capsys):
    assert main(["demo", "--steps", "3", f"output_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "AUC click" in out and "dfgr" in out and "metagr" in out
    for model in ("dfgr", "metagr"):
        assert (tmp_path / f"demo-synthetic-{model}" / "metrics_final.json").exists()


def test_demo_reports_config_errors_by_key(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    demo_config = pathlib.Path("configs/debug/dfgr_synthetic.yaml").resolve()
    path.write_text(f"defaults: [{demo_config}]\ntrain: {{stepz: 3}}\n")
    assert main(["demo", "--config", str(path)]) == 2
    assert "train.stepz" in capsys.readouterr().err
