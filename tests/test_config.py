import pytest

from dfgr_torchrec.config import (
    AttentionForm,
    InteractionConfig,
    RankingModelConfig,
    SequenceEmbeddingConfig,
    TaskConfig,
    fill_from_data,
    from_dict,
)
from dfgr_torchrec.features import DataSchema


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
        ({"norm_eps": 0.0}, "norm_eps"),
        ({"norm_eps": "small"}, "norm_eps"),
        ({"attention_scale_len": 0}, "attention_scale_len"),
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


def test_unsized_config_is_refused_where_a_model_is_built():
    config = from_dict(RankingModelConfig, {"embeddings": {}, "tasks": [{"name": "like"}]})  # sizes: from the data
    with pytest.raises(ValueError, match="item_vocab_size"):
        config.require_complete()
    with pytest.raises(ValueError, match="at least one task"):
        from_dict(RankingModelConfig, {"embeddings": {"item_vocab_size": 5}}).require_complete()


def test_fill_from_data_sizes_tables_and_orders_tasks():
    config = RankingModelConfig(tasks=[TaskConfig("buy", weight=3.0)])
    schema = DataSchema(tasks=["click", "buy"], item_rows=11, action_rows={"action": 4}, side_rows={"category": 3})
    filled = fill_from_data(config, schema)
    assert filled.embeddings.item_vocab_size == 11 and filled.embeddings.item_side_vocab_sizes == {"category": 3}
    assert [(t.name, t.weight) for t in filled.tasks] == [("click", 1.0), ("buy", 3.0)]
    assert config.embeddings.item_vocab_size is None  # the input is not modified
    with pytest.raises(ValueError, match=r"model\.tasks: unknown task\(s\) \['like'\]"):
        fill_from_data(RankingModelConfig(tasks=[TaskConfig("like")]), schema)


def test_nested_unknown_key_names_its_full_path():
    with pytest.raises(ValueError, match=r"^model\.interaction\.heads: unknown key"):
        from_dict(RankingModelConfig, {"interaction": {"heads": 2}}, "model")


def test_float_fields_read_yaml_exponents_without_a_dot():
    """YAML 1.1 reads 1e-6 as a string; a float field takes it as the number."""
    cfg = from_dict(InteractionConfig, {"norm_eps": "1e-6", "dropout": "0.1"})
    assert cfg.norm_eps == 1e-6 and cfg.dropout == 0.1
    with pytest.raises(ValueError, match=r"interaction\.norm_eps"):
        from_dict(RankingModelConfig, {"embeddings": {"item_vocab_size": 10}, "interaction": {"norm_eps": "tiny"}})
