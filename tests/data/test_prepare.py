"""From a raw log to a prepared data set: counts, split, vocabularies, versioning, bad input."""

import json

import numpy as np
import pytest

from dfgr_torchrec.config import from_dict
from dfgr_torchrec.data.config import DataConfig, load_data_config
from dfgr_torchrec.data.prepare import TEST, TRAIN, VALID, prepare
from dfgr_torchrec.data.readers import BadInputError
from tests.data.conftest import write_config


def _prepare(tmp_path, log, **overrides):
    config = from_dict(DataConfig, write_config(tmp_path, log, **overrides))
    path = prepare(config, progress=False)
    load = lambda n: np.load(f"{path}/{n}.npy")  # noqa: E731
    return path, load, json.load(open(f"{path}/report.json"))


def test_sorted_split_and_report(tmp_path, tiny_log):
    path, load, report = _prepare(tmp_path, tiny_log)
    # user c has 1 interaction < 1 train + 1 valid + 1 test: dropped and counted
    assert report["rows_read"] == 8 and report["rows_kept"] == 7
    assert report["rows_dropped"] == {"user with too few interactions": 1}
    assert report["users"] == 2 and report["per_action"] == {"click": 5, "like": 3}
    assert load("user_offsets").tolist() == [0, 4, 7]
    assert load("timestamp").tolist() == [1, 2, 3, 4, 5, 6, 7]  # chronological within each user
    assert load("split").tolist() == [TRAIN, TRAIN, VALID, TEST, TRAIN, VALID, TEST]
    vocab = load("vocab_item").tolist()
    assert sorted(vocab) == ["x", "y", "z"]  # built from training rows only: w and q unseen
    items = load("item").tolist()
    assert items[3] == 0 and items[6] == 0  # w, q -> OOV row 0
    assert [vocab[i - 1] for i in items[:2]] == ["y", "z"]
    # action = bitmask of (click, like)
    assert load("action").tolist()[:4] == [3, 0, 1, 3]
    assert report["unseen_in_training"] == {"item": 2}


def test_no_candidate_precedes_its_users_history(shared_data):
    config = load_data_config("configs/data/kuairand-sample.yaml")
    path = prepare(config, progress=False)
    offsets, times, split = (np.load(f"{path}/{n}.npy") for n in ("user_offsets", "timestamp", "split"))
    for u in range(len(offsets) - 1):
        s, e = offsets[u], offsets[u + 1]
        t, sp = times[s:e], split[s:e]
        assert t[sp == TRAIN].max() <= t[sp != TRAIN].min()
        if (sp == TEST).any() and (sp == VALID).any():
            assert t[sp == VALID].max() <= t[sp == TEST].min()


def test_kuairand_sample_report(shared_data):
    path = prepare(load_data_config("configs/data/kuairand-sample.yaml"), progress=False)
    report = json.load(open(f"{path}/report.json"))
    assert report["rows_read"] == 41828
    assert report["rows_dropped"] == {"duplicate event": 124}
    assert report["rows_kept"] == 41828 - 124
    assert report["users"] == 664 and report["items"] == 9359
    assert report["per_action"]["like"] + report["per_action"]["hate"] == report["interactions"]
    assert report["split"]["test"] == 664 * 5


def test_taobao_sample_with_category(shared_data):
    path = prepare(load_data_config("configs/data/taobao-sample.yaml"), progress=False)
    report = json.load(open(f"{path}/report.json"))
    meta = json.load(open(f"{path}/meta.json"))
    assert report["users"] == 43 and report["items"] == 3276
    assert report["per_action"] == {"pv": 3926, "cart": 190, "fav": 128, "buy": 77}
    assert meta["side_rows"]["category"] > 1
    assert len(np.load(f"{path}/side_category.npy")) == report["interactions"]


def test_time_cutoff_split(tmp_path, tiny_log):
    _, load, report = _prepare(tmp_path, tiny_log, split={"valid_per_user": 1, "test_per_user": 0, "time_cutoff": 4})
    # a: t=1,2,3 | 4 -> valid is 3, test is 4; b: t=5,6,7 all >= 4 and c: its one row becomes
    # validation, so neither has training history: both dropped, counted
    assert load("timestamp").tolist() == [1, 2, 3, 4]
    assert load("split").tolist() == [TRAIN, TRAIN, VALID, TEST]
    assert report["rows_dropped"] == {"user with no training history before time_cutoff": 4}


def test_hash_oov_policy(tmp_path, tiny_log):
    _, load, _ = _prepare(tmp_path, tiny_log, vocab={"oov": "hash", "hash_buckets": 4})
    items = load("item")
    vocab_size = len(load("vocab_item"))
    assert ((items[[3, 6]] > vocab_size) & (items[[3, 6]] <= vocab_size + 4)).all()


def test_versioned_by_config(tmp_path, tiny_log):
    a, _, _ = _prepare(tmp_path, tiny_log)
    b, _, _ = _prepare(tmp_path, tiny_log)
    c, _, _ = _prepare(tmp_path, tiny_log, split={"valid_per_user": 0, "test_per_user": 1})
    assert a == b and a != c


@pytest.mark.parametrize(
    "bad_row, message, reason",
    [
        ("a\tx", r"log\.tsv:3: column .*timestamp", "missing columns"),
        (
            "a\tx\tnoon\t1\t0",
            r"log\.tsv:3: column timestamp \(t\): expected an integer timestamp, got 'noon'",
            "non-numeric timestamp",
        ),
        (
            "a\tx\t\t1\t0",
            r"log\.tsv:3: column timestamp \(t\): expected an integer timestamp, got an empty field",
            "missing timestamp",
        ),
        ("\tx\t5\t1\t0", r"log\.tsv:3: column user \(u\): expected a user id", "empty user"),
        (
            "a\tx\t5\tyes\t0",
            r"log\.tsv:3: column actions\.click \(click\): expected a number, got 'yes'",
            "non-numeric action click",
        ),
    ],
)
def test_bad_rows_error_or_skip(tmp_path, bad_row, message, reason):
    good = ["a\ty\t1\t1\t1", "a\tz\t2\t0\t0", "a\tw\t4\t1\t1", "a\tv\t6\t1\t1"]
    log = tmp_path / "log.tsv"
    log.write_text("\n".join(["u\ti\tt\tclick\tlike", good[0], bad_row, *good[1:]]) + "\n")
    with pytest.raises(BadInputError, match=message):
        _prepare(tmp_path, log)
    _, _, report = _prepare(tmp_path, log, **{"source.on_bad_rows": "skip"})
    assert report["rows_dropped"] == {reason: 1} and report["rows_kept"] == 4


def test_missing_column_names_file_and_key(tmp_path, tiny_log):
    with pytest.raises(BadInputError, match=r"log\.tsv:1: header lacks column 'time' \(from timestamp\)"):
        _prepare(tmp_path, tiny_log, **{"source.columns": {"user": "u", "item": "i", "timestamp": "time"}})


def test_duplicates_error_skip_keep(tmp_path):
    log = tmp_path / "log.tsv"
    log.write_text("u\ti\tt\tclick\tlike\na\tx\t1\t1\t1\na\ty\t2\t1\t0\na\tx\t1\t1\t1\na\tz\t3\t0\t0\na\tw\t4\t0\t0\n")
    with pytest.raises(BadInputError, match=r"log\.tsv:4: duplicate event .* first seen at line 2"):
        _prepare(tmp_path, log)
    _, _, report = _prepare(tmp_path, log, **{"source.duplicates": "skip"})
    assert report["rows_dropped"] == {"duplicate event": 1}
    _, _, report = _prepare(tmp_path, log, **{"source.duplicates": "keep"})
    assert report["rows_kept"] == 5


def test_unsorted_timestamps_when_required(tmp_path, tiny_log):
    with pytest.raises(
        BadInputError,
        match=r"log\.tsv:3: column timestamp \(t\): expected a time >= the user's previous event \(3\), got 1",
    ):
        _prepare(tmp_path, tiny_log, **{"source.require_sorted": True})


def test_config_errors_name_the_key(tmp_path, tiny_log):
    with pytest.raises(ValueError, match=r"source\.colums"):
        from_dict(DataConfig, write_config(tmp_path, tiny_log, **{"source.colums": {}}))
    with pytest.raises(ValueError, match=r"source\.format"):
        from_dict(DataConfig, write_config(tmp_path, tiny_log, **{"source.format": "xlsx"}))
    with pytest.raises(ValueError, match=r"source\.columns\.user"):
        from_dict(DataConfig, write_config(tmp_path, tiny_log, **{"source.header": False}))


def test_parquet_source(tmp_path, tiny_log):
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = [line.split("\t") for line in tiny_log.read_text().splitlines()]
    header, rows = lines[0], lines[1:]
    table = pa.table({h: [r[i] if h in "ui" else int(r[i]) for r in rows] for i, h in enumerate(header)})
    pq.write_table(table, tmp_path / "log.parquet")
    _, load, report = _prepare(tmp_path, tmp_path / "log.parquet", **{"source.format": "parquet"})
    assert report["rows_kept"] == 7 and load("timestamp").tolist() == [1, 2, 3, 4, 5, 6, 7]


def test_delimited_headerless_like_movielens(tmp_path):
    log = tmp_path / "ratings.dat"
    log.write_text("1::10::5::100\n1::11::3::101\n1::12::4::102\n1::13::1::103\n")
    config = {
        "name": "ml",
        "output_dir": str(tmp_path / "p"),
        "source": {
            "path": str(log),
            "format": "delimited",
            "delimiter": "::",
            "header": False,
            "columns": {"user": 0, "item": 1, "timestamp": 3},
        },
        "actions": {"like": {"column": 2, "at_least": 4}},
        "action_feature": 2,
    }
    path = prepare(from_dict(DataConfig, config), progress=False)
    assert np.load(f"{path}/labels.npy")[:, 0].tolist() == [1, 0, 1, 0]
    vocab = np.load(f"{path}/vocab_action.npy").tolist()
    assert [vocab[i - 1] for i in np.load(f"{path}/action.npy")] == [5, 3, 4, 1]  # all integers: an int64 vocabulary


def test_every_shipped_data_config_is_valid():
    import glob

    configs = sorted(glob.glob("configs/data/*.yaml"))
    assert len(configs) >= 4
    for path in configs:
        config = load_data_config(path)
        assert config.actions, path


def test_official_kuairand_schema_reads_a_log_in_that_layout(tmp_path):
    header = "user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,is_hate,long_view,is_profile_enter"
    rows = [
        f"1,{v},20220408,800,{1000 + v},1,{v % 2},1,1,1,{1 - v % 2},1,1" for v in range(12)
    ]  # every task has positives
    log = tmp_path / "log.csv"
    log.write_text("\n".join([header, *rows]) + "\n")
    config = load_data_config("configs/data/kuairand-official.yaml")
    config.source.path, config.output_dir = str(log), str(tmp_path / "p")
    report = json.load(open(f"{prepare(config, progress=False)}/report.json"))
    assert report["per_action"]["like"] == 6 and report["per_action"]["hate"] == 6 and report["users"] == 1


def test_duplicates_merge_into_one_interaction_with_the_union_of_actions(tmp_path):
    # a view-and-cart pattern: (a, x, 1) logged twice, once clicked, once liked; (a, y, 2) three times
    rows = [
        "a\tx\t1\t1\t0",
        "a\ty\t2\t0\t0",
        "a\tx\t1\t0\t1",
        "a\ty\t2\t0\t0",
        "a\ty\t2\t1\t0",
        "a\tz\t3\t0\t0",
        "a\tw\t4\t1\t1",
    ]
    log = tmp_path / "log.tsv"
    log.write_text("\n".join(["u\ti\tt\tclick\tlike", *rows]) + "\n")
    _, load, report = _prepare(tmp_path, log, **{"source.duplicates": "merge"})
    assert report["rows_dropped"] == {"duplicate event merged into the first": 3} and report["rows_kept"] == 4
    assert load("timestamp").tolist() == [1, 2, 3, 4]
    assert load("labels").tolist() == [[1, 1], [1, 0], [0, 0], [1, 1]]
    assert load("action").tolist() == [3, 1, 0, 3]  # the bitmask of the merged labels
