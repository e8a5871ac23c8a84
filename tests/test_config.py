import pytest

from dfgr_torchrec.config import (
    AttentionForm,
    InteractionConfig,
    RankingModelConfig,
    SequenceEmbeddingConfig,
    TaskConfig,
    from_dict,
)


def test_strings_become_enums():
    cfg = InteractionConfig(attention_form="softmax", mask_mode="session")
    assert cfg.attention_form is AttentionForm.SOFTMAX


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"num_layers": 0}, "num_layers"),
        ({"attention_form": "linear"}, "attention_form"),
        ({"mask_mode": "day"}, "mask_mode"),
        ({"dropout": 1.5}, "dropout"),
        ({"num_time_buckets": -1}, "num_time_buckets"),
    ],
)
def test_bad_interaction_values_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        InteractionConfig(**kwargs)


def test_unknown_keys_are_errors_naming_the_key():
    with pytest.raises(ValueError, match=r"interaction\.num_layer\b"):
        from_dict(
            RankingModelConfig,
            {"embeddings": {"item_vocab_size": 10}, "interaction": {"num_layer": 2}},
        )


def test_nested_mapping_builds_the_whole_config():
    cfg = from_dict(
        RankingModelConfig,
        {
            "embeddings": {"item_vocab_size": 10, "embedding_dim": 8, "action_vocab_sizes": {"a": 2}},
            "interaction": {"d_model": 8},
            "tasks": [{"name": "like"}, {"name": "buy", "weight": 2.0}],
        },
    )
    assert cfg.task_names == ["like", "buy"] and cfg.interaction.d_model == 8


def test_sum_merge_needs_matching_widths():
    with pytest.raises(ValueError, match="d_model"):
        RankingModelConfig(embeddings=SequenceEmbeddingConfig(item_vocab_size=10, embedding_dim=8, merge="sum"))


def test_concat_merge_allows_other_widths():
    cfg = RankingModelConfig(
        embeddings=SequenceEmbeddingConfig(item_vocab_size=10, embedding_dim=8, merge="concat"),
        interaction=InteractionConfig(d_model=16),
    )
    assert cfg.interaction.d_model == 16


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"item_vocab_size": 0}, "item_vocab_size"),
        ({"item_vocab_size": 5, "action_vocab_sizes": {}}, "action_vocab_sizes"),
        ({"item_vocab_size": 5, "action_vocab_sizes": {"a": 0}}, "action_vocab_sizes.a"),
        ({"item_vocab_size": 5, "item_side_vocab_sizes": {"action": 3}}, "unique feature names"),
        ({"item_vocab_size": 5, "merge": "mul"}, "merge"),
    ],
)
def test_bad_embedding_values_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        SequenceEmbeddingConfig(**kwargs)


def test_duplicate_tasks_rejected():
    with pytest.raises(ValueError, match="unique task names"):
        RankingModelConfig(
            embeddings=SequenceEmbeddingConfig(item_vocab_size=5, embedding_dim=64),
            tasks=[TaskConfig("like"), TaskConfig("like")],
        )


def test_missing_required_key_is_named():
    with pytest.raises(ValueError, match="item_vocab_size"):
        from_dict(RankingModelConfig, {"embeddings": {}})
