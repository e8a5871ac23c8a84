"""Helpers: write a small log and its data YAML, run the real `dfgr` command line."""

import json
import pathlib

import yaml

from dfgr_torchrec.cli import main

HEADER = "u\ti\tt\tclick"
ROWS = ["a\tx\t1\t1", "a\ty\t2\t0", "a\tz\t3\t1", "a\tw\t4\t0", "b\tx\t1\t0", "b\ty\t2\t1", "b\tz\t3\t0", "b\tw\t4\t1"]


def write_log(tmp_path, rows=ROWS, name="log.tsv") -> pathlib.Path:
    path = tmp_path / name
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def write_yaml(tmp_path, log, name="data.yaml", **sections) -> pathlib.Path:
    """A data YAML for ``log`` (columns u, i, t, click); ``sections`` replace or extend top-level keys."""
    config = {
        "name": "rel",
        "output_dir": str(tmp_path / "prepared"),
        "source": {"path": str(log), "format": "tsv", "columns": {"user": "u", "item": "i", "timestamp": "t"}},
        "actions": {"click": {"column": "click"}},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def run(capsys, *argv):
    """``(exit code, stdout, stderr)`` of ``dfgr <argv>``; an exception escaping ``main`` fails the test."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def prepare(capsys, config, *extra):
    return run(capsys, "data", "prepare", "--config", config, *extra)


def report_of(out: str) -> dict:
    """The report ``dfgr data prepare`` prints after its first line."""
    return json.loads(out[out.index("\n{") + 1:])
