"""A run's weights are read only against the vocabularies it was trained on (`<run>/prepared.json`)."""

import json
import shutil

import pytest
import yaml

from dfgr_torchrec.data.config import load_data_config
from dfgr_torchrec.data.identity import PreparedDataChanged, prepared_for_run, record_prepared, vocab_digests
from dfgr_torchrec.data.prepare import prepare


@pytest.fixture
def prepared(tmp_path):
    log = tmp_path / "log.tsv"
    log.write_text(
        "u\ti\tt\tclick\n"
        + "".join(f"{u}\t{(u * 7 + t) % 11}\t{t}\t{(u + t) % 2}\n" for u in range(6) for t in range(8))
    )
    config = {
        "name": "tiny",
        "output_dir": str(tmp_path / "prepared"),
        "actions": {"click": {"column": "click"}},
        "source": {"path": str(log), "format": "tsv", "columns": {"user": "u", "item": "i", "timestamp": "t"}},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    return prepare(load_data_config(str(tmp_path / "tiny.yaml")), progress=False)


def _relabelled_copy(path, to):
    """A copy whose item vocabulary counts as different (same sizes, so it stays intact)."""
    shutil.copytree(path, to)
    meta = json.loads((to / "meta.json").read_text())
    meta["arrays"]["vocab_item.npy"]["blake2b"] = "0" * 32
    (to / "meta.json").write_text(json.dumps(meta))
    return str(to)


def test_the_recorded_copy_is_used_when_the_new_one_has_other_vocabularies(prepared, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    record_prepared(str(run), prepared)
    assert json.loads((run / "prepared.json").read_text())["vocab"] == vocab_digests(prepared)
    assert prepared_for_run(str(run), prepared) == prepared
    other = _relabelled_copy(prepared, tmp_path / "other")
    assert prepared_for_run(str(run), other) == prepared
    assert "the prepared data it was trained on" in capsys.readouterr().err


def test_a_run_whose_copy_is_gone_is_refused_against_other_vocabularies(prepared, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    record_prepared(str(run), prepared)
    other = _relabelled_copy(prepared, tmp_path / "other")
    shutil.rmtree(prepared)
    with pytest.raises(PreparedDataChanged, match=r"prepared.json: this run was trained on .*vocab_item.npy"):
        prepared_for_run(str(run), other)


def test_a_run_without_a_record_reads_what_is_there(prepared, tmp_path):
    assert prepared_for_run(str(tmp_path), prepared) == prepared  # runs from before the record existed
