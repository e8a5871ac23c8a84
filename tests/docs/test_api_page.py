"""docs/api.md's "Add a model type" example runs as written."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_add_a_model_type_example_runs():
    from dfgr_torchrec.config import MODEL_CONFIGS, MODEL_TYPES, ModelConfig
    from dfgr_torchrec.models import MODELS

    page = (ROOT / "docs" / "api.md").read_text()
    [code] = re.findall(r"## Add a model type.*?```python\n(.*?)```", page, flags=re.S)
    scope: dict = {}
    try:
        exec(compile(code, "docs/api.md", "exec"), scope)
        assert type(scope["config"]) is ModelConfig and scope["config"].type == "history_blind"
        assert all(p.device.type == "meta" for p in scope["model"].parameters())
    finally:
        for table in (MODELS, MODEL_TYPES, MODEL_CONFIGS):
            table.pop("history_blind", None)
