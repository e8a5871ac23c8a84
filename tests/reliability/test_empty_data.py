"""A prepare that would give an empty split exits 2 and says which rule removed the rows."""

import pytest

from tests.reliability.conftest import prepare, write_log, write_yaml


def test_header_only_log(tmp_path, capsys):
    code, _, err = prepare(capsys, write_yaml(tmp_path, write_log(tmp_path, rows=[])))
    assert code == 2
    assert "the training split is empty, refusing to prepare it: the log has no data rows (only a header)" in err
    assert not (tmp_path / "prepared").exists() or not any((tmp_path / "prepared").iterdir())


def test_split_sizes_longer_than_every_history(tmp_path, capsys):
    config = write_yaml(tmp_path, write_log(tmp_path), split={"valid_per_user": 5, "test_per_user": 5})
    code, _, err = prepare(capsys, config)
    assert code == 2
    assert "the training split is empty" in err and "8 rows read, 0 kept" in err
    assert (
        "8 by 'user with too few interactions' (each user needs split.min_train_per_user + "
        "split.valid_per_user + split.test_per_user = 11 interactions)"
    ) in err


def test_time_cutoff_after_every_event(tmp_path, capsys):
    config = write_yaml(
        tmp_path, write_log(tmp_path), split={"valid_per_user": 1, "test_per_user": 0, "time_cutoff": 100}
    )
    code, _, err = prepare(capsys, config)
    assert code == 2
    assert "the test split is empty" in err
    assert (
        "no event at or after split.time_cutoff (100 = 100 in source.timestamp_unit 's'); the latest kept event is at 4"
        in err
    )


def test_time_cutoff_date_after_every_event(tmp_path, capsys):
    config = write_yaml(tmp_path, write_log(tmp_path), split={"time_cutoff": "2022-01-01"})
    code, _, err = prepare(capsys, config)
    assert code == 2
    assert "no event at or after split.time_cutoff ('2022-01-01' = 1640995200 in source.timestamp_unit 's')" in err


def test_time_cutoff_before_every_event(tmp_path, capsys):
    config = write_yaml(
        tmp_path, write_log(tmp_path), split={"valid_per_user": 0, "test_per_user": 0, "time_cutoff": 0}
    )
    code, _, err = prepare(capsys, config)
    assert code == 2
    assert "the training split is empty" in err
    assert "8 by 'user with no training history before time_cutoff' (split.time_cutoff (0) leaves them" in err


def test_an_empty_split_the_config_does_not_ask_for_is_fine(tmp_path, capsys):
    config = write_yaml(tmp_path, write_log(tmp_path), split={"valid_per_user": 0, "test_per_user": 1})
    code, _, err = prepare(capsys, config)
    assert code == 0, err


@pytest.mark.parametrize("engine", ["duckdb", "python"])
def test_a_task_without_a_positive_in_training_is_refused_with_the_values_seen(tmp_path, capsys, engine):
    actions = {"buy": {"column": "click", "equals": "purchase"}}
    config = write_yaml(tmp_path, write_log(tmp_path), actions=actions, source={"engine": engine})
    code, _, err = prepare(capsys, config)
    assert code == 2 and "Traceback" not in err
    assert "data set 'rel': actions.buy: no positive in the training split" in err
    assert "with the rule column 'click' equals 'purchase'; the column's commonest values: '0' (" in err
    assert "fix the rule or remove the action" in err and len(err.strip().splitlines()) == 1
