"""The download registry: ``source.download`` in a data YAML and ``dfgr data download``."""

import os
import pathlib

import pytest
import yaml

from dfgr_torchrec.cli import main
from dfgr_torchrec.config import from_dict
from dfgr_torchrec.data import sources
from dfgr_torchrec.data.config import DataConfig, load_data_config

from .conftest import write_config

REPO = pathlib.Path(__file__).resolve().parents[2]


def _fake_fetch(calls):
    def fetch(out_dir, force):
        calls.append((out_dir, force))
        os.makedirs(out_dir, exist_ok=True)
        pathlib.Path(out_dir, "ratings.dat").write_text("1::1::5::0\n")
        return out_dir

    return fetch


def test_movielens_config_names_its_download():
    config = load_data_config(str(REPO / "configs/data/movielens-1m.yaml"))
    assert config.source.download == "movielens-1m"
    assert os.path.dirname(config.source.path) == sources.DOWNLOADS["movielens-1m"].default_dir


def test_present_file_is_not_downloaded(tmp_path, tiny_log):
    config = from_dict(DataConfig, write_config(tmp_path, tiny_log, **{"source.download": "movielens-1m"}))
    before = sorted(os.listdir(tmp_path))
    sources.ensure_source(config)
    assert sorted(os.listdir(tmp_path)) == before


def test_unknown_download_name_is_rejected(tmp_path, tiny_log):
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump(write_config(tmp_path, tiny_log, **{"source.download": "movielens-100m"})))
    with pytest.raises(
        ValueError,
        match=r"data\.yaml: source\.download: expected one of \['movielens-1m', 'movielens-1m-1k', 'synth-demo', 'synth-repeat'\], got 'movielens-100m'",
    ):
        load_data_config(str(path))


def test_missing_file_without_download_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "log.tsv"
    config = from_dict(DataConfig, write_config(tmp_path, missing))
    with pytest.raises(FileNotFoundError, match=rf"{missing}: no such file.*no `source\.download`"):
        sources.ensure_source(config)


def test_cli_download_and_ensure_source_use_the_registry(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setitem(
        sources.DOWNLOADS, "movielens-1m", sources.Download(_fake_fetch(calls), str(tmp_path / "default"))
    )

    out = tmp_path / "ml"
    assert main(["data", "download", "movielens-1m", "--out", str(out)]) == 0
    assert calls == [(str(out), False)]
    assert capsys.readouterr().out.strip() == str(out)

    target = tmp_path / "raw" / "ratings.dat"
    config = from_dict(DataConfig, write_config(tmp_path, target, **{"source.download": "movielens-1m"}))
    sources.ensure_source(config)
    assert calls[-1] == (str(target.parent), False) and target.exists()


def test_the_small_movielens_slice_keeps_every_sixth_user_by_id(tmp_path, monkeypatch):
    from dfgr_torchrec.data.movielens import slice_movielens_1m

    full = tmp_path / "full"
    full.mkdir()
    (full / "ratings.dat").write_text("".join(f"{u}::{10 + u}::4::{100 + u}\n" for u in range(1, 20)))
    monkeypatch.setattr(sources, "download", lambda name: str(full))
    out = slice_movielens_1m(str(tmp_path / "slice"))
    users = [int(line.split("::")[0]) for line in open(os.path.join(out, "ratings.dat"))]
    assert users == [1, 7, 13, 19]
