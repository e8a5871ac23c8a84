import json

import pytest

from dfgr_torchrec.serving.measure_quantization import main, measure
from tests.serving.conftest import ROOT


@pytest.mark.slow
def test_fp32_metrics_are_the_recipes_and_int8_costs_little(tiny_run, tmp_path, capsys):
    result = measure(str(tiny_run), str(ROOT))
    final = json.loads((tiny_run / "metrics_final.json").read_text())["tasks"]
    assert result["auc_fp32"] == pytest.approx(sum(m["auc"] for m in final.values()) / len(final), abs=1e-6)
    assert abs(result["auc_int8"] - result["auc_fp32"]) < 0.02
    assert result["table_bytes_int8"] < 0.6 * result["table_bytes_fp32"]
    out = tmp_path / "q.json"
    assert main(["--run", str(tiny_run), "--root", str(ROOT), "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert set(written) >= {"auc_fp32", "auc_int8", "gauc_fp32", "gauc_int8", "table_bytes_fp32", "table_bytes_int8"}
    assert json.loads(capsys.readouterr().out) == written
