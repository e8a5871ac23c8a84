"""`dfgr score` loads only what serving needs: after it has scored an artifact's requests, the process
holds no training, data-preparation, study or training-recipe module (checked on modules, not seconds:
the seconds are in `dfgr bench cold-start` and results/serving/cold_start.json)."""

import json
import subprocess
import sys

import pytest

from tests.reliability.serving_artifact import build_artifact, good_line
from tests.serving.conftest import ROOT

NOT_FOR_SERVING = (
    "dfgr_torchrec.training",
    "dfgr_torchrec.data.prepare",
    "dfgr_torchrec.study",
    "dfgr_torchrec.recipes.train",
    "dfgr_torchrec.recipes.config",
    "dfgr_torchrec.distributed",
    "dfgr_torchrec.bench",
    "dfgr_torchrec.serving.export",
    "dfgr_torchrec.serving.loading",
)


@pytest.fixture(scope="module")
def requests(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("startup")
    artifact = build_artifact(tmp)
    path = tmp / "requests.jsonl"
    path.write_text("".join(good_line(user) + "\n" for user in ("a", "b", "a")))
    return artifact, path


def _modules_after_score(artifact, path, *flags):
    code = (
        "import json, sys\nfrom dfgr_torchrec.cli import main\n"
        f"rc = main(['score', '--model', {str(artifact)!r}, '--input', {str(path)!r}, "
        f"'--output', {str(path) + '.out'!r}, *{list(flags)!r}])\n"
        "print(json.dumps({'rc': rc, 'modules': sorted(sys.modules)}))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["rc"] == 0
    return out["modules"]


@pytest.mark.parametrize("flags", [(), ("--compiled",)], ids=["default", "compiled"])
def test_score_imports_no_training_data_preparation_or_study_code(requests, flags):
    modules = _modules_after_score(*requests, *flags)
    assert "dfgr_torchrec.serving.ranker" in modules  # it did load the serving code
    loaded = [m for m in modules if any(m == name or m.startswith(name + ".") for name in NOT_FOR_SERVING)]
    assert not loaded, f"dfgr score imported {loaded}"
