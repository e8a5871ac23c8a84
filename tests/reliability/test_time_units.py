"""A log whose timestamps mix epoch units (seconds and milliseconds) is refused before anything is
prepared, naming a line of each unit; a log in any one unit, or with ordinal times, is not."""

import pytest

from dfgr_torchrec.data.time_units import unit_counts
from tests.reliability.conftest import prepare, write_log, write_yaml

SECONDS, MILLIS = 1_700_000_000, 1_700_000_000_000
MIXED = [
    f"a\tx\t{SECONDS + 1}\t1",
    f"a\ty\t{SECONDS + 2}\t0",
    f"a\tz\t{MILLIS + 3000}\t1",
    f"a\tw\t{MILLIS + 4000}\t0",
    f"b\tx\t{MILLIS + 1000}\t0",
    f"b\ty\t{MILLIS + 2000}\t1",
    f"b\tz\t{MILLIS + 3000}\t0",
    f"b\tw\t{MILLIS + 4000}\t1",
]


@pytest.mark.parametrize("engine", ["duckdb", "python"])
def test_mixed_seconds_and_milliseconds_are_refused_naming_lines(tmp_path, capsys, engine):
    log = write_log(tmp_path, MIXED)
    code, _, err = prepare(capsys, write_yaml(tmp_path, log, source={"engine": engine}))
    assert code != 0 and "Traceback" not in err
    assert "the timestamp column 't' mixes units" in err
    assert f"2 row(s) in seconds (first {log}:2" in err and f"6 row(s) in milliseconds (first {log}:4" in err
    assert not (tmp_path / "prepared").exists() or not any((tmp_path / "prepared").rglob("meta.json"))


@pytest.mark.parametrize("base", [SECONDS, MILLIS, 1_700_000_000_000_000, 0], ids=["s", "ms", "us", "ordinal"])
def test_one_unit_is_accepted(base):
    assert len(unit_counts([base + k for k in range(1000)])) <= 1
