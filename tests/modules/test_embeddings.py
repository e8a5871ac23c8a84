"""SequenceEmbedding: feature layout, side features, user context, dropout."""

import pytest
import torch
from torchrec import KeyedJaggedTensor

from dfgr_torchrec.config import SequenceEmbeddingConfig
from dfgr_torchrec.modules.embeddings import SequenceEmbedding

CFG = SequenceEmbeddingConfig(
    item_vocab_size=20,
    action_vocab_sizes={"click": 2, "like": 2},
    item_side_vocab_sizes={"category": 5},
    user_vocab_sizes={"user_id": 7},
    embedding_dim=8,
)


def _kjt(user_ids=(1, 2)):
    # two users: histories of 2 and 1, candidates 1 and 2, one user id each
    per_key = {
        "item_id": ([3, 4, 5], [2, 1]),
        "category": ([0, 1, 2], [2, 1]),
        "click": ([1, 0, 1], [2, 1]),
        "like": ([0, 0, 1], [2, 1]),
        "cand_item_id": ([6, 7, 3], [1, 2]),
        "cand_category": ([3, 4, 0], [1, 2]),
        "user_id": (list(user_ids), [1, 1]),
    }
    keys = CFG.feature_names
    assert sorted(keys) == sorted(per_key)
    return KeyedJaggedTensor.from_lengths_sync(
        keys=keys,
        values=torch.tensor([v for k in keys for v in per_key[k][0]]),
        lengths=torch.tensor([n for k in keys for n in per_key[k][1]]),
    )


def test_items_sum_item_side_and_user_context():
    torch.manual_seed(0)
    emb = SequenceEmbedding(CFG)
    out = emb(_kjt())
    tables = {name: emb.collection.embeddings[name].weight for name in ("item", "category", "click", "like", "user_id")}
    expected_item0 = tables["item"][3] + tables["category"][0] + tables["user_id"][1]
    torch.testing.assert_close(out.items.values()[0], expected_item0)
    expected_cand2 = tables["item"][3] + tables["category"][0] + tables["user_id"][2]  # user 2's candidate
    torch.testing.assert_close(out.candidates.values()[2], expected_cand2)
    torch.testing.assert_close(out.actions.values()[2], tables["click"][1] + tables["like"][1])
    assert out.candidates.lengths().tolist() == [1, 2]


def test_user_context_only_touches_its_user():
    torch.manual_seed(0)
    emb = SequenceEmbedding(CFG)
    a, b = emb(_kjt((1, 2))), emb(_kjt((5, 2)))
    assert not torch.allclose(a.items.values()[:2], b.items.values()[:2])
    torch.testing.assert_close(a.items.values()[2:], b.items.values()[2:])
    torch.testing.assert_close(a.candidates.values()[1:], b.candidates.values()[1:])


def test_missing_feature_is_named():
    emb = SequenceEmbedding(CFG)
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["item_id"], values=torch.tensor([1]), lengths=torch.tensor([1]))
    with pytest.raises(KeyError, match="cand_item_id"):
        emb(kjt)


def test_the_lookup_holds_no_interaction_parameter():
    """The placeholder action and the concat projection are DFGR's (DualFlowTokens), not the lookup's."""
    names = [name for name, _ in SequenceEmbedding(CFG).named_parameters()]
    assert names and all(name.startswith("collection.") for name in names)


def test_meta_device_allocates_nothing():
    emb = SequenceEmbedding(CFG, device=torch.device("meta"))
    assert all(p.device.type == "meta" for p in emb.parameters())


def test_embedding_dropout_only_in_training():
    cfg = SequenceEmbeddingConfig(
        item_vocab_size=20,
        action_vocab_sizes={"click": 2, "like": 2},
        item_side_vocab_sizes={"category": 5},
        user_vocab_sizes={"user_id": 7},
        embedding_dim=8,
        dropout=0.5,
    )
    torch.manual_seed(0)
    emb = SequenceEmbedding(cfg)
    train = emb(_kjt()).items.values()
    assert (train == 0).float().mean() > 0.2  # about half the entries dropped
    emb.eval()
    assert (emb(_kjt()).items.values() != 0).all()
    assert SequenceEmbedding(CFG).dropout is None  # off by default: no module
