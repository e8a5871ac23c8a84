import pathlib

import pytest

SHARED = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture
def shared_data():
    if not SHARED.exists():
        pytest.skip("../shared/data is absent")
    return SHARED


def write_config(tmp_path, log_path, **overrides):
    """A data config dict for a small TSV log with columns u, i, t, click, like."""
    config = {
        "name": "tiny",
        "source": {
            "path": str(log_path),
            "format": "tsv",
            "header": True,
            "columns": {"user": "u", "item": "i", "timestamp": "t"},
        },
        "actions": {"click": {"column": "click"}, "like": {"column": "like"}},
        "split": {"valid_per_user": 1, "test_per_user": 1},
        "output_dir": str(tmp_path / "prepared"),
    }
    for key, value in overrides.items():
        section, _, leaf = key.partition(".")
        if leaf:
            config[section][leaf] = value
        else:
            config[section] = value
    return config


@pytest.fixture
def tiny_log(tmp_path):
    """3 users; rows deliberately out of order."""
    rows = [
        "u\ti\tt\tclick\tlike",
        "a\tx\t3\t1\t0",
        "a\ty\t1\t1\t1",
        "b\tx\t5\t0\t0",
        "a\tz\t2\t0\t0",
        "a\tw\t4\t1\t1",
        "b\ty\t6\t1\t0",
        "b\tq\t7\t1\t1",
        "c\tx\t1\t1\t0",
    ]
    path = tmp_path / "log.tsv"
    path.write_text("\n".join(rows) + "\n")
    return path
