"""The README's "your own log" steps and its Serve section, run as written on a small log of the
YAML's shape: prepare, train, eval, export, score the README's request line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dfgr_torchrec.data.config import load_data_config

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    return README.split(f"\n## {title}", 1)[1].split("\n## ", 1)[0]


def readme_commands() -> list:
    """The ``dfgr ...`` commands of the two sections, in order: bash lines and inline code."""
    text = _section("Your own log in five steps") + _section("Serve")
    found = re.findall(r"^(dfgr [^#\n]*?)\s*(?:#.*)?$|`(dfgr [^`]+)`", text, flags=re.M)
    commands = [(a or b).strip() for a, b in found]
    return [c for c in commands if len(c.split()) > 2]  # `dfgr score` named in prose is not a command line


def _write_log(path: Path) -> None:
    rows = ["user_id\tvideo_id\tts\tcategory_id\tis_click\tlabel\twatch_ratio"]
    for user in range(40):
        for t in range(10):
            item = (user * 7 + t * 3) % 30
            rows.append(
                f"u{user}\tv{item}\t{1_700_000_000 + 60 * t}\tc{item % 3}\t{(user + t) % 2}\t{t % 2}\t0.{(user * t) % 10}"
            )
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(rows) + "\n")


def test_the_readme_lists_the_steps():
    commands = readme_commands()
    assert [c.split()[1] for c in commands] == [
        "data",
        "data",
        "train",
        "eval",
        "export",
        "score",
        "export",
        "score",
    ], commands


@pytest.mark.slow
def test_your_own_log_runs_as_written(tmp_path):
    """~1 minute: the train command trains 300 tiny steps (the floor on a 40-user log); export skips AOTInductor (--no-compile, 2 minutes)."""
    [data_yaml] = re.findall(r"```yaml\n(.*?)```", _section("Your own log in five steps"), flags=re.S)
    (tmp_path / "configs" / "data").mkdir(parents=True)
    (tmp_path / "configs" / "data" / "mylog.yaml").write_text(data_yaml)
    for folder in ("train", "model"):
        (tmp_path / "configs" / folder).symlink_to(ROOT / "configs" / folder)
    _write_log(tmp_path / "logs" / "events.tsv")
    [request] = re.findall(r"```json\n(.*?)\n```", _section("Serve"), flags=re.S)
    (tmp_path / "requests.jsonl").write_text(request + "\n")
    dfgr = [sys.executable, "-m", "dfgr_torchrec.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    seen_export = False
    for command in readme_commands():
        words = command.split()[1:]
        if words[:2] == ["data", "init"]:  # the draft goes beside the YAML the README gives in full
            words = [w if w != "configs/data/mylog.yaml" else "configs/data/drafted.yaml" for w in words]
        if words[0] == "score" and "--input" not in words:  # step 5 names it; the Serve section gives it whole
            continue
        if words[0] == "export":
            if seen_export:  # the Serve section repeats step 5's export
                continue
            seen_export, words = True, words + ["--no-compile"]
        done = subprocess.run(dfgr + words, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}:\n{done.stderr[-3000:]}"
    drafted = load_data_config(str(tmp_path / "configs" / "data" / "drafted.yaml"))
    assert (drafted.source.columns.user, drafted.source.columns.item, drafted.source.columns.timestamp) == (
        "user_id",
        "video_id",
        "ts",
    )
    final = json.loads((tmp_path / "runs" / "mylog" / "metrics_final.json").read_text())
    assert set(final["tasks"]) == {"click", "like", "long_view"}
    [line] = (tmp_path / "scores.jsonl").read_text().splitlines()
    [scored] = json.loads(line)["scores"]
    assert scored["item"] == "v7" and {"click", "like", "long_view"} <= set(scored)
