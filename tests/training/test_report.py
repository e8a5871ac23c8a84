"""Printing a metrics file is instant: it imports neither torch nor TorchRec."""

import json
import subprocess
import sys


def test_report_prints_a_table_without_importing_torch(tmp_path):
    metrics = {"split": "test", "candidates": 3, "tasks": {"like": {
        "auc": 0.75, "gauc": 0.7, "logloss": 0.5, "ne": 0.8, "calibration": 1.01, "count": 3}}}
    path = tmp_path / "metrics_final.json"
    path.write_text(json.dumps(metrics))
    code = (
        "import sys; from dfgr_torchrec.recipes.report import main; main([sys.argv[1]]); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "like" in out.stdout and "0.7500" in out.stdout and "test split, 3 candidates" in out.stdout
