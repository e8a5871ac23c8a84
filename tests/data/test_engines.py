"""The DuckDB engine and the Python reference reader prepare the same logs into identical arrays,
reports and error messages; shards; integer ids kept as integers."""

import dataclasses
import gzip
import json
import os

import numpy as np
import pytest

from dfgr_torchrec.config import from_dict
from dfgr_torchrec.data.config import DataConfig, load_data_config
from dfgr_torchrec.data.prepare import prepare
from dfgr_torchrec.data.readers import BadInputError
from tests.data.conftest import write_config

ENGINES = ("python", "duckdb")
HEADER = "u\ti\tt\tclick\tlike"


def _with_engine(config: DataConfig, engine: str, out: str) -> DataConfig:
    source = dataclasses.replace(config.source, engine=engine)
    return dataclasses.replace(config, source=source, output_dir=out)


def _load(path):
    arrays = {n[:-4]: np.load(os.path.join(path, n)) for n in sorted(os.listdir(path)) if n.endswith(".npy")}
    report = json.load(open(os.path.join(path, "report.json")))
    report.pop("seconds")
    return arrays, report


def prepare_both(config: DataConfig, tmp_path):
    """Prepares ``config`` with each engine into one folder; asserts identical arrays and reports,
    and that both engines name the same folder (the engine is not in the fingerprint)."""
    paths, loaded = [], []
    for engine in ENGINES:
        paths.append(prepare(_with_engine(config, engine, str(tmp_path / "prepared")), force=True, progress=False))
        loaded.append(_load(paths[-1]))
    (a, report_a), (b, report_b) = loaded
    assert paths[0] == paths[1]
    assert report_a == report_b
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name
    return a, report_a


def errors_of_both(config: DataConfig, tmp_path):
    """The BadInputError message of each engine (asserted equal)."""
    messages = []
    for engine in ENGINES:
        with pytest.raises(BadInputError) as error:
            prepare(_with_engine(config, engine, str(tmp_path / engine)), progress=False)
        messages.append(str(error.value))
    assert messages[0] == messages[1]
    return messages[0]


def _config(tmp_path, log, **overrides) -> DataConfig:
    return from_dict(DataConfig, write_config(tmp_path, log, **overrides))


def _log(tmp_path, rows, header=HEADER, name="log.tsv"):
    path = tmp_path / name
    path.write_text("\n".join(([header] if header else []) + rows) + "\n")
    return path


def test_tiny_log_and_variants(tmp_path, tiny_log):
    arrays, report = prepare_both(_config(tmp_path, tiny_log), tmp_path / "a")
    assert report["rows_kept"] == 7 and arrays["vocab_item"].dtype.kind == "U"
    prepare_both(
        _config(tmp_path, tiny_log, split={"valid_per_user": 1, "test_per_user": 0, "time_cutoff": 4}), tmp_path / "b"
    )
    prepare_both(_config(tmp_path, tiny_log, vocab={"oov": "hash", "hash_buckets": 4}), tmp_path / "c")


def test_integer_ids_are_int64_sorted_numerically(tmp_path):
    rows = [f"{u}\t{i}\t{t}\t1\t{t % 2}" for u in (10, 9, 100) for t, i in enumerate((5, 40, 300, 5, 7))]
    arrays, _ = prepare_both(_config(tmp_path, _log(tmp_path, rows), **{"source.duplicates": "keep"}), tmp_path)
    assert arrays["vocab_user"].dtype == np.int64 and arrays["vocab_user"].tolist() == [9, 10, 100]
    assert arrays["vocab_item"].tolist() == [5, 40, 300]  # 7 is only a test item: unseen


def test_ids_that_only_look_like_integers_stay_strings(tmp_path):
    for odd in ("007", "1.5", "+3", "-0", "99999999999999999999", "x"):
        rows = [f"1\t{i}\t{t}\t1\t{t % 2}" for t, i in enumerate(("2", odd, "10", "3", "4"))]
        arrays, _ = prepare_both(_config(tmp_path, _log(tmp_path, rows)), tmp_path / odd)
        assert arrays["vocab_item"].dtype.kind == "U", odd


def test_headerless_multichar_delimiter_action_feature_and_gzip(tmp_path):
    text = "".join(f"{u}::{i}::{r}::{100 + t}\n" for u in range(3) for t, (i, r) in enumerate(zip("abcdef", "534121")))
    for name, data in (("r.dat", text.encode()), ("r.dat.gz", gzip.compress(text.encode()))):
        (tmp_path / name).write_bytes(data)
        config = from_dict(
            DataConfig,
            {
                "name": "ml",
                "output_dir": "unused",
                "source": {
                    "path": str(tmp_path / name),
                    "format": "delimited",
                    "delimiter": "::",
                    "header": False,
                    "columns": {"user": 0, "item": 1, "timestamp": 3},
                },
                "actions": {"like": {"column": 2, "at_least": 4}},
                "action_feature": 2,
                "split": {"valid_per_user": 1, "test_per_user": 2},
            },
        )
        arrays, _ = prepare_both(config, tmp_path / f"out-{name}")
        assert arrays["vocab_action"].tolist() == [1, 2, 3, 4, 5]


def test_csv_side_features_and_string_equals(tmp_path):
    rows = [
        f'u{u},item {i},{t},{"buy" if (u + i) % 3 == 0 else "pv"},"cat,{i % 3}"'
        for u in range(4)
        for t, i in enumerate(range(6))
    ]
    log = _log(tmp_path, rows, header="user,item,time,behavior,category", name="log.csv")
    config = from_dict(
        DataConfig,
        {
            "name": "tb",
            "output_dir": "unused",
            "source": {
                "path": str(log),
                "format": "csv",
                "columns": {"user": "user", "item": "item", "timestamp": "time"},
                "side_features": {"category": "category"},
            },
            "actions": {"buy": {"column": "behavior", "equals": "buy"}, "pv": {"column": "behavior", "equals": "pv"}},
        },
    )
    arrays, report = prepare_both(config, tmp_path)
    assert arrays["vocab_category"].tolist() == ["cat,0", "cat,1", "cat,2"] and report["users"] == 4


NUMBERS = ["0", "1", "2", "3", "7", "8", "1e3", "2.5", "0.999", " 65535", "65536", "4294967295", "1e300"]
NUMBERS += ["00012", "+3", "-0", "1_000", "9007199254740991", "9007199254740992", "45916"]


def _numeric_side_config(tmp_path, log, **source) -> DataConfig:
    sides = {"duration": {"column": "d", "bucket": "log2"}, "raw": "d"}
    return _config(tmp_path, log, **{"source.side_features": sides, "source.duplicates": "keep"}, **source)


def test_a_log2_bucketed_side_feature_alike(tmp_path):
    rows = [f"u{u}\ti{t}\t{t}\t1\t{t % 2}\t{n}" for u in range(4) for t, n in enumerate(NUMBERS)]
    log = _log(tmp_path, rows, header=HEADER + "\td")
    arrays, report = prepare_both(_numeric_side_config(tmp_path, log), tmp_path)
    assert arrays["vocab_duration"].dtype == np.int64 and report["rows_dropped"] == {}
    # floor(log2(value + 1)) of the training rows' values (each user's last two are valid and test):
    # 0.999 -> 0, 2.5 -> 1, 1e3 and 1_000 -> 9, 65535 and 65536 -> 16, 2**53 - 1 -> 53, 1e300 -> 996
    assert arrays["vocab_duration"].tolist() == [0, 1, 2, 3, 9, 16, 32, 53, 996]
    assert arrays["vocab_raw"].dtype.kind == "U" and "1_000" in arrays["vocab_raw"].tolist()  # the plain form: ids
    vocab, side = arrays["vocab_duration"], arrays["side_duration"]
    assert vocab[side[:4] - 1].tolist() == [0, 1, 1, 2]  # rows 1..V: 0 -> 0, 1 -> 1, 2 -> 1, 3 -> 2


BAD_NUMBERS = ["", "x", "-1", "-0.5", "nan", "inf", "-inf", "1,5", "0x10", "\u0661"]


@pytest.mark.parametrize("bad", BAD_NUMBERS)
def test_a_bad_bucketed_value_is_a_bad_row_alike(tmp_path, bad):
    rows = [f"a\ti{t}\t{t}\t1\t{t % 2}\t{t * 100}" for t in range(6)]
    rows.insert(2, f"a\tq\t9\t1\t0\t{bad}")
    log = _log(tmp_path, rows, header=HEADER + "\td")
    message = errors_of_both(_numeric_side_config(tmp_path, log), tmp_path / "error")
    assert message.startswith(f"{log}:4: column side_features.duration (d): expected a number"), message
    _, report = prepare_both(_numeric_side_config(tmp_path, log, **{"source.on_bad_rows": "skip"}), tmp_path / "skip")
    reason = (
        "negative side feature duration"
        if bad.startswith("-") and bad != "-inf"
        else "non-numeric side feature duration"
    )
    assert report["rows_dropped"] == {reason: 1} and report["rows_kept"] == 6


def test_parquet(tmp_path, tiny_log):
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = [line.split("\t") for line in tiny_log.read_text().splitlines()]
    header, rows = lines[0], lines[1:]
    pq.write_table(
        pa.table({h: [r[k] if h in "ui" else int(r[k]) for r in rows] for k, h in enumerate(header)}),
        tmp_path / "l.parquet",
    )
    prepare_both(_config(tmp_path, tmp_path / "l.parquet", **{"source.format": "parquet"}), tmp_path)


BAD_ROWS = [
    "a\tx",
    "a\tx\tnoon\t1\t0",
    "a\tx\t\t1\t0",
    "\tx\t5\t1\t0",
    "a\t \t5\t1\t0",
    "a\tx\t5\tyes\t0",
    "a\tx\t5\t1\t",
    "a\tx\t2.5\t1\t0",
    "a\tx\tinf\t1\t0",
]


@pytest.mark.parametrize("bad_row", BAD_ROWS)
def test_bad_row_messages_are_the_reference_readers(tmp_path, bad_row):
    good = ["a\ty\t1\t1\t1", "", "a\tz\t2\t0\t0", "a\tw\t4\t1\t1", "a\tv\t6\t1\t1"]  # a blank line before the bad row
    log = _log(tmp_path, [good[0], good[1], bad_row, *good[2:]])
    message = errors_of_both(_config(tmp_path, log), tmp_path)
    assert message.startswith(f"{log}:4: column ")


def test_bad_rows_skipped_and_counted_alike(tmp_path):
    good = [f"a\t{i}\t{t}\t1\t{t % 2}" for t, i in enumerate("pqrstuvwxyzo")]
    rows = [x for pair in zip(good, BAD_ROWS + ["b\tx\t1e3\t1\t0", "b\tx\t7\t1\t0 "]) for x in pair] + ["   "]
    _, report = prepare_both(_config(tmp_path, _log(tmp_path, rows), **{"source.on_bad_rows": "skip"}), tmp_path)
    bad = {k: n for k, n in report["rows_dropped"].items() if not k.startswith(("user", "duplicate"))}
    assert sum(bad.values()) == len(BAD_ROWS) + 1 and bad["non-numeric timestamp"] == 3


def test_unsorted_when_required(tmp_path):
    rows = ["a\tx\t3\t1\t0", "a\ty\t1\t1\t1", "b\tx\t5\t1\t1", "a\tz\t2\t0\t0", "a\tw\t4\t1\t1"]
    rows += ["b\ty\t6\t1\t0", "b\tq\t7\t1\t1", "c\tx\t1\t1\t0"]  # tiny_log's, with b's training row positive
    config = _config(tmp_path, _log(tmp_path, rows), **{"source.require_sorted": True})
    assert "expected a time >= the user's previous event (3), got 1" in errors_of_both(config, tmp_path / "e")
    config.source.on_bad_rows = "skip"
    _, report = prepare_both(config, tmp_path / "s")
    assert report["rows_dropped"]["unsorted timestamp"] == 2


@pytest.mark.parametrize("policy", ["keep", "skip", "merge", "error"])
def test_duplicates(tmp_path, policy):
    rows = [
        "a\tx\t1\t1\t1",
        "a\ty\t2\t0\t0",
        "a\tx\t1\t0\t1",
        "a\ty\t2\t0\t0",
        "a\ty\t2\t1\t0",
        "a\tz\t3\t0\t0",
        "a\tw\t4\t1\t1",
    ]
    config = _config(tmp_path, _log(tmp_path, ["", *rows]), **{"source.duplicates": policy})
    if policy == "error":
        assert ":5: duplicate event (user 'a', item 'x', timestamp 1) first seen at line 3" in errors_of_both(
            config, tmp_path
        )
    else:
        prepare_both(config, tmp_path)


def test_empty_split_errors_alike(tmp_path, tiny_log):
    config = _config(tmp_path, tiny_log, split={"valid_per_user": 1, "test_per_user": 0, "time_cutoff": 100})
    assert "the test split is empty" in errors_of_both(config, tmp_path / "a")
    assert "no data rows" in errors_of_both(_config(tmp_path, _log(tmp_path, [], name="empty.tsv")), tmp_path / "b")


def test_shards_folder_and_glob_equal_the_whole_log(tmp_path, tiny_log):
    lines = tiny_log.read_text().splitlines()
    (tmp_path / "shards").mkdir()
    for k, part in enumerate((lines[1:4], lines[4:7], lines[7:])):
        _log(tmp_path / "shards", part, name=f"part-{k}.tsv")
    (tmp_path / "shards" / "_SUCCESS").write_text("")
    whole, _ = prepare_both(_config(tmp_path, tiny_log), tmp_path / "whole")
    folder, report = prepare_both(_config(tmp_path, tmp_path / "shards"), tmp_path / "folder")
    globbed, _ = prepare_both(_config(tmp_path, str(tmp_path / "shards" / "part-*.tsv")), tmp_path / "glob")
    for name in whole:
        assert np.array_equal(whole[name], folder[name]) and np.array_equal(whole[name], globbed[name]), name
    assert report["source"] == str(tmp_path / "shards")


def test_shard_errors_name_the_shard(tmp_path):
    (tmp_path / "s").mkdir()
    _log(tmp_path / "s", ["a\tx\t1\t1\t0", "a\ty\t2\t1\t0"], name="0.tsv")
    _log(tmp_path / "s", ["a\tz\t3\t1\t0", "a\tx\t1\t1\t0", "a\tw\tnoon\t1\t0"], name="1.tsv")
    config = _config(tmp_path, tmp_path / "s", **{"source.on_bad_rows": "error"})
    assert errors_of_both(config, tmp_path / "a").startswith(f"{tmp_path / 's' / '1.tsv'}:4: column timestamp")
    config.source.on_bad_rows = "skip"
    message = errors_of_both(config, tmp_path / "b")
    assert (
        message.startswith(f"{tmp_path / 's' / '1.tsv'}:3: duplicate event")
        and f"first seen at {tmp_path / 's' / '0.tsv'}:2" in message
    )


def test_shard_digest_covers_every_shard(tmp_path, tiny_log):
    (tmp_path / "s").mkdir()
    lines = tiny_log.read_text().splitlines()
    _log(tmp_path / "s", lines[1:5], name="0.tsv")
    _log(tmp_path / "s", lines[5:], name="1.tsv")
    config = _config(tmp_path, tmp_path / "s")
    first = prepare(config, progress=False)
    _log(tmp_path / "s", lines[5:-1], name="1.tsv")
    assert prepare(config, progress=False) != first


def test_engine_is_checked_and_left_out_of_the_config_key(tmp_path, tiny_log):
    with pytest.raises(ValueError, match=r"source\.engine"):
        _config(tmp_path, tiny_log, **{"source.engine": "spark"})
    keys = {_config(tmp_path, tiny_log, **{"source.engine": e}).config_key() for e in ENGINES}
    assert len(keys) == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", ["kuairand-sample", "kuairand-sample-duration", "taobao-sample", "taobao-mb"])
def test_real_logs_prepare_identically(shared_data, tmp_path, name):
    prepare_both(load_data_config(f"configs/data/{name}.yaml"), tmp_path)


def test_byte_order_mark_and_invalid_utf8_alike(tmp_path):
    bom = tmp_path / "bom.tsv"
    bom.write_bytes("\ufeffa\tx\t1\t1\t1\na\ty\t2\t1\t0\na\tz\t3\t0\t0\n".encode())
    columns = {"user": 0, "item": 1, "timestamp": 2}
    config = _config(
        tmp_path,
        bom,
        **{"source.header": False, "source.columns": columns},
        actions={"click": {"column": 3}, "like": {"column": 4}},
    )
    arrays, _ = prepare_both(config, tmp_path / "bom")
    assert arrays["vocab_user"].tolist() == ["a"]
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(b"u\ti\tt\tclick\tlike\na\tx\t1\t1\t0\na\t\xff\t2\t1\t0\n")
    assert errors_of_both(_config(tmp_path, bad), tmp_path / "bad").startswith(
        f"{bad}:3:3: byte 0xff is not valid UTF-8"
    )


def _files(path):
    """Every file's bytes but report.json's seconds (meta.json names the same digests)."""
    found = {n: open(os.path.join(path, n), "rb").read() for n in sorted(os.listdir(path)) if n.endswith(".npy")}
    return found, _load(path)[1]


@pytest.mark.parametrize(
    "overrides",
    [
        {"source.duplicates": "merge", "vocab": {"oov": "hash", "hash_buckets": 3}},
        {"source.duplicates": "skip", "split": {"valid_per_user": 1, "test_per_user": 0, "time_cutoff": 4}},
    ],
)
def test_streamed_chunks_write_the_files_of_one_chunk(tmp_path, monkeypatch, overrides):
    """The DuckDB path streams ``sorted`` in DFGR_PREPARE_CHUNK_ROWS rows: chunks of 1, 2 and 5 rows
    (chunks that split users, a last short chunk) give byte-identical files to one chunk."""
    rows = [
        f"u{u % 7}\ti{(u * 3 + t) % 11}\t{t % 13}\t{(u + t) % 2}\t{t % 3 == 0:d}"
        for u in range(23)
        for t in range(u % 6 + 2)
    ]
    rows += rows[5:9]  # duplicates
    prepare_both(_config(tmp_path, _log(tmp_path, rows), **overrides), tmp_path / "both")  # the numpy reference
    config = _with_engine(_config(tmp_path, _log(tmp_path, rows), **overrides), "duckdb", str(tmp_path / "p"))
    results = []
    for size in ("1000000", "1", "2", "5"):
        monkeypatch.setenv("DFGR_PREPARE_CHUNK_ROWS", size)
        results.append(_files(prepare(config, force=True, progress=False)))
    assert results[0][1]["rows_kept"] > 20
    for result in results[1:]:
        assert result == results[0]


def test_chunk_rows_must_be_a_positive_integer(tmp_path, monkeypatch, tiny_log):
    monkeypatch.setenv("DFGR_PREPARE_CHUNK_ROWS", "0")
    with pytest.raises(BadInputError, match="DFGR_PREPARE_CHUNK_ROWS"):
        prepare(_with_engine(_config(tmp_path, tiny_log), "duckdb", str(tmp_path / "p")), progress=False)
