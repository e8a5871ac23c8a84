"""The README's "your own log" data YAML is complete: the project's loader accepts it and prepares a log
of its shape; docs/data.md's reference names every key of the data config."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import yaml

from dfgr_torchrec.data import config as data_config
from dfgr_torchrec.data.config import load_data_config
from dfgr_torchrec.data.prepare import prepare

ROOT = Path(__file__).resolve().parents[2]


def readme_data_yaml() -> str:
    section = (ROOT / "README.md").read_text().split("## Your own log", 1)[1]
    [block] = re.findall(r"```yaml\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)
    return block


def test_the_readme_data_yaml_loads_and_prepares(tmp_path):
    tree = yaml.safe_load(readme_data_yaml())
    log = tmp_path / "events.tsv"
    rows = ["user_id\tvideo_id\tts\tcategory_id\tis_click\tlabel\twatch_ratio"]
    for user in range(4):
        rows += [
            f"u{user}\tv{(user + t) % 5}\t{1_700_000_000 + 60 * t}\tc{t % 2}\t{t % 2}\t{(t + user) % 2}\t0.{9 - t}"
            for t in range(6)
        ]
    log.write_text("\n".join(rows) + "\n")
    tree["source"]["path"], tree["output_dir"] = str(log), str(tmp_path / "prepared")
    path = tmp_path / "mylog.yaml"
    path.write_text(yaml.safe_dump(tree))
    config = load_data_config(str(path))
    assert config.task_names == ["click", "like", "long_view"]
    assert list(config.source.side_features) == ["category"]
    prepared = prepare(config, progress=False)
    report = json.loads((Path(prepared) / "report.json").read_text())
    assert report, "prepare wrote a report"


def test_the_data_page_reference_example_loads(tmp_path):
    section = (ROOT / "docs" / "data.md").read_text().split("## The data YAML: reference", 1)[1]
    block = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)[0]
    path = tmp_path / "reference.yaml"
    path.write_text(block)
    config = load_data_config(str(path))
    assert config.task_names == ["click", "like", "buy", "good"] and config.source.engine == "duckdb"


def test_the_data_page_names_every_key_of_the_data_config():
    page = (ROOT / "docs" / "data.md").read_text()
    classes = [
        data_config.DataConfig,
        data_config.SourceConfig,
        data_config.ColumnsConfig,
        data_config.ActionConfig,
        data_config.SplitConfig,
        data_config.VocabConfig,
    ]

    def named(key: str) -> bool:  # `key`, or a dotted path through it: `source.key`, `split.key`, `key.sub`
        return re.search(rf"`(?:[\w<>]+\.)*{key}(?:\.[\w<>]+)*`", page) is not None

    missing = [f"{c.__name__}.{f.name}" for c in classes for f in dataclasses.fields(c) if not named(f.name)]
    assert not missing, f"docs/data.md does not describe {missing}"
