"""Data YAMLs with values of the wrong type: exit 2, the key's path (once) and what it expects."""

import numpy as np
import pytest

from tests.reliability.conftest import prepare, write_log, write_yaml


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"source": {"header": "false"}}, "source.header: expected a boolean (true or false, unquoted), got 'false'"),
        ({"source": {"require_sorted": "yes"}}, "source.require_sorted: expected a boolean"),
        ({"actions": {"click": "click"}}, "actions.click: expected a mapping such as {column: <column>}"),
        (
            {"actions": {"click": {"column": "click", "at_least": "high"}}},
            "actions.click.at_least: expected a number, got 'high'",
        ),
        (
            {"actions": {"click": {"column": ["click"]}}},
            "actions.click.column: expected a column name or a 0-based column index",
        ),
        ({"split": {"valid_per_user": True}}, "split.valid_per_user: expected an integer >= 0, got True"),
        (
            {"split": {"time_cutoff": "tomorrow"}},
            "split.time_cutoff: expected an integer timestamp in the log's unit or an ISO date",
        ),
        ({"split": 3}, "split: expected a mapping of SplitConfig keys, got 3"),
        ({"source": {"timestamp_unit": "days"}}, "source.timestamp_unit: expected one of ('s', 'ms', 'us', 'ns')"),
    ],
)
def test_wrong_type_names_the_key_once(tmp_path, capsys, sections, message):
    config = write_yaml(tmp_path, write_log(tmp_path), **sections)
    code, _, err = prepare(capsys, config)
    assert code == 2
    assert f"data.yaml: {message}" in err
    for key in ("source", "split", "actions", "data", "vocab"):
        assert f"{key}.{key}." not in err


@pytest.mark.parametrize("unit, scale", [("s", 1), ("ms", 1000)])
def test_time_cutoff_accepts_an_iso_date(tmp_path, capsys, unit, scale):
    day = 86400 * scale  # 1970-01-02 in the log's unit
    rows = [f"{u}\t{i}\t{t * day}\t1" for u in "ab" for i, t in zip("xyzw", (0, 0, 1, 2))]
    config = write_yaml(
        tmp_path,
        write_log(tmp_path, rows),
        source={"timestamp_unit": unit},
        split={"valid_per_user": 1, "test_per_user": 0, "time_cutoff": "1970-01-02"},
    )
    code, out, err = prepare(capsys, config)
    assert code == 0, err
    path = out.split("\n", 1)[0].split(" ")[1].rstrip(":")
    timestamps, split = np.load(f"{path}/timestamp.npy"), np.load(f"{path}/split.npy")
    assert (split[timestamps >= day] == 2).all() and (split[timestamps < day] != 2).all()
