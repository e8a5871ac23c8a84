import os

import numpy as np
import pytest
import torch

from dfgr_torchrec.data.vocab import hash_bucket, table_rows, vocab_rows
from dfgr_torchrec.serving.vocab import ActionEncoder, Vocabularies, Vocabulary
from tests.serving.conftest import prepared_order


def _load(path, name):
    return np.load(os.path.join(path, f"{name}.npy"))


def test_rows_equal_prepares_rows_with_hash_oov(hashed):
    vocabs = Vocabularies.from_prepared(hashed)
    rows = prepared_order()
    items, unknown = vocabs.item.rows([r[1] for r in rows])
    assert items.dtype == torch.int64
    assert items.tolist() == _load(hashed, "item").tolist()
    assert unknown == 4  # z, w, v, u: only in validation / test
    cats, cat_unknown = vocabs.side["category"].rows([r[3] for r in rows])
    assert cats.tolist() == _load(hashed, "side_category").tolist()
    assert cat_unknown == 3 and cats.max() >= len(vocabs.side["category"].ids) + 1  # hashed past the vocabulary
    assert vocabs.item.num_rows == len(vocabs.item.ids) + 1 + 4


def test_action_bitmask_equals_prepare(hashed):
    encoder = Vocabularies.from_prepared(hashed).actions
    expected = [encoder.row({"click": r[4], "like": r[5]}) for r in prepared_order()]
    assert expected == _load(hashed, "action").tolist()
    assert encoder.row({"like": 1}) == 2 and encoder.row({}) == 0


def test_action_feature_goes_through_its_vocabulary(with_action_feature):
    vocabs = Vocabularies.from_prepared(with_action_feature)
    assert vocabs.actions.uses_vocabulary
    assert [vocabs.actions.row(action=r[6]) for r in prepared_order()] == _load(with_action_feature, "action").tolist()
    assert vocabs.actions.row(action="7") == 0  # never seen: the OOV row
    with pytest.raises(ValueError, match='expected "action"'):
        vocabs.actions.row({"click": 1})


def test_user_rows_are_prepared_index_plus_one(hashed):
    users, unknown = Vocabularies.from_prepared(hashed).user.rows(["b", "a", "stranger", "c"])
    assert users.tolist() == [2, 1, 0, 3] and unknown == 1


def test_unknown_task_names_are_errors():
    encoder = ActionEncoder(["click", "like"])
    with pytest.raises(ValueError, match=r"unknown task name\(s\) \['lik'\].*\['click', 'like'\]"):
        encoder.row({"lik": 1})
    with pytest.raises(ValueError, match="expected 0 or 1"):
        encoder.row({"like": 2})


def test_save_and_load_round_trip(hashed, tmp_path):
    vocabs = Vocabularies.from_prepared(hashed)
    vocabs.save(str(tmp_path / "v"))
    again = Vocabularies.load(str(tmp_path / "v"))
    assert again.tasks == vocabs.tasks and list(again.side) == ["category"]
    assert again.item.rows(["x", "zz"])[0].tolist() == vocabs.item.rows(["x", "zz"])[0].tolist()
    assert again.item.oov == "hash" and again.item.hash_buckets == 4 and again.user.oov == "oov"
    with open(tmp_path / "v" / "vocab_item.npy", "rb") as f:
        assert b"pickle" not in f.read()


def test_vocab_rows_function():
    vocab = np.array(["a", "c"])
    rows, seen = vocab_rows(np.array(["c", "b", "a"]), vocab, "hash", 4)
    assert rows.tolist() == [2, 3 + hash_bucket("b", 4), 1] and seen.tolist() == [True, False, True]
    assert vocab_rows(np.array(["a"]), np.array([], dtype=str))[0].tolist() == [0]
    assert table_rows(2, "oov", 4) == 3 and table_rows(2, "hash", 4) == 7
    with pytest.raises(ValueError, match="ids must be sorted"):
        Vocabulary("item", np.array(["b", "a"]))


def test_integer_vocabulary_takes_raw_ids_as_integers_and_counts_the_rest_unknown(tmp_path):
    vocab = Vocabulary("item", np.array([3, 20, 100], dtype=np.int64), oov="hash", hash_buckets=8)
    assert vocab.ids.dtype == np.int64
    rows, unknown = vocab.rows([20, "100", "3", "x", "3.0", "007", 7])
    assert rows[:3].tolist() == [2, 3, 1] and unknown == 4
    assert rows[3:].tolist() == [4 + hash_bucket(v, 8) for v in ("x", "3.0", "007", "7")]  # hashed as their text
    vocab.save(str(tmp_path))
    assert Vocabulary.load(str(tmp_path), "item").ids.dtype == np.int64
    with pytest.raises(ValueError, match="sorted"):
        Vocabulary("item", np.array([20, 3]))


def test_vocab_rows_on_integer_codes_matches_strings():
    ints, strings = np.array([1, 5, 10]), np.array(["1", "10", "5"])
    assert vocab_rows(np.array([10, 2, 5]), ints)[0].tolist() == [3, 0, 2]
    assert vocab_rows(np.array(["10", "2", "5"]), ints)[0].tolist() == [3, 0, 2]
    assert vocab_rows(np.array([10, 2]), strings)[0].tolist() == [2, 0]


@pytest.mark.parametrize("ids", [np.array(["a", "bb", "ccc"]), np.array([3, 17, 40], dtype=np.int64)])
@pytest.mark.parametrize("oov", ["oov", "hash"])
def test_an_id_longer_than_every_known_id_is_unknown_and_pads_nothing(ids, oov):
    vocab = Vocabulary("item", ids, oov, hash_buckets=8)
    huge = "x" * 1_000_000  # padded to the longest id this was 60 x 4 MB per request
    known = [str(v) for v in ids]
    rows, unknown = vocab.rows([known[1], huge, known[0], "9" * 25])
    expected, seen = vocab_rows(np.array([known[1], huge, known[0], "9" * 25]), ids, oov, 8)
    assert rows.tolist() == expected.tolist() and unknown == int((~seen).sum()) == 2
    if oov == "hash":
        assert rows[1] == len(ids) + 1 + hash_bucket(huge, 8)
