import dataclasses
import pathlib

import pytest
import yaml

from dfgr_torchrec.config import (
    MODEL_CONFIGS,
    ArchModelConfig,
    AttentionForm,
    HSTUModelConfig,
    InteractionConfig,
    LogRegModelConfig,
    RankingModelConfig,
    SequenceEmbeddingConfig,
    TaskConfig,
    config_keys,
    fill_from_data,
    from_dict,
    model_config,
    model_config_from_dict,
    retype,
    to_plain,
)
from dfgr_torchrec.features import DataSchema
from dfgr_torchrec.recipes.config import config_dict, load_train_config


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


# Each model type's config holds only the keys that type reads (config.MODEL_CONFIGS)

DFGR_YAML = str(pathlib.Path(__file__).resolve().parents[1] / "configs/train/dfgr_kuairand.yaml")


def _dfgr():
    return RankingModelConfig(
        embeddings=SequenceEmbeddingConfig(item_vocab_size=9, embedding_dim=8),
        interaction=InteractionConfig(d_model=8, mask_mode="session", dropout=0.2, num_layers=3),
        tasks=[TaskConfig("a")],
        bias_terms=True,
    )


def test_every_builtin_type_has_a_config_and_the_registry_types_agree():
    from dfgr_torchrec.config import BUILTIN_MODELS

    assert set(MODEL_CONFIGS) >= set(BUILTIN_MODELS)
    assert {"interaction.dropout", "interaction.mask_mode", "head_hidden_dims"} <= set(config_keys(ArchModelConfig))
    assert "interaction.d_model" not in config_keys(ArchModelConfig)
    assert set(config_keys(LogRegModelConfig)) == {"type", "embeddings", "tasks", "interaction.mask_mode", "rate_prior"}
    assert "num_targets" in config_keys(HSTUModelConfig) and "num_targets" not in config_keys(RankingModelConfig)


@pytest.mark.parametrize(
    "kind, node, key",
    [
        ("dcn", {"interaction": {"num_layers": 4}}, "model.interaction.num_layers"),
        ("dcn", {"bias_terms": True}, "model.bias_terms"),
        ("logreg", {"head_hidden_dims": [8]}, "model.head_hidden_dims"),
        ("dfgr", {"num_targets": 3}, "model.num_targets"),
        ("hstu", {"rate_terms": True}, "model.rate_terms"),
        ("bias", {"interaction": {"dropout": 0.1}}, "model.interaction.dropout"),
    ],
)
def test_a_key_the_type_does_not_read_is_an_error_naming_it(kind, node, key):
    with pytest.raises(ValueError, match=rf"^{key}: not read by model type '{kind}' \(\w+ reads embeddings, tasks"):
        model_config_from_dict({"type": kind, **node})


def test_in_a_yaml_file_the_error_names_the_file(tmp_path):
    path = tmp_path / "dcn.yaml"
    path.write_text(f"defaults: [{DFGR_YAML}]\nmodel: {{type: dcn}}\n")
    with pytest.raises(ValueError, match=rf"^{path}: model.bias_terms, model.interaction.attention_dim, .*not read by"):
        load_train_config(str(path))


def test_an_override_of_the_type_re_targets_the_file_and_lists_what_it_left_out():
    config = load_train_config(DFGR_YAML, ["model.type=dcn"])
    assert isinstance(config.model, ArchModelConfig)
    assert config.model.interaction.mask_mode.value == "session" and config.model.interaction.dropout == 0.1
    assert "model.bias_terms" in config.left_out and "model.interaction.num_layers" in config.left_out
    assert "model.interaction.dropout" not in config.left_out
    recorded = config_dict(config)["model"]
    assert set(recorded["interaction"]) == {"mask_mode", "dropout"} and "bias_terms" not in recorded
    assert load_train_config(DFGR_YAML).left_out == []


def test_a_recorded_run_config_with_every_types_keys_still_loads(tmp_path):
    """An older version wrote every type's keys into a run's config.yaml (num_targets: null for DFGR)."""
    old = config_dict(load_train_config(DFGR_YAML))
    old["model"].update(num_targets=None)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old))
    with pytest.raises(ValueError, match="model.num_targets: not read by model type 'dfgr'"):
        load_train_config(str(path))
    config = load_train_config(str(path), recorded=True)
    assert config.left_out == ["model.num_targets"] and isinstance(config.model, RankingModelConfig)


def test_retype_keeps_what_the_new_type_reads():
    dcn = retype(_dfgr(), "dcn")
    assert isinstance(dcn, ArchModelConfig) and dcn.type == "dcn"
    assert dcn.interaction.mask_mode.value == "session" and dcn.interaction.dropout == 0.2
    assert dcn.embeddings == _dfgr().embeddings and dcn.tasks == _dfgr().tasks
    hstu = retype(_dfgr(), "hstu")
    assert hstu.interaction == _dfgr().interaction and hstu.num_targets is None
    assert to_plain(retype(dcn, "dfgr")).keys() == to_plain(_dfgr()).keys()


def test_a_config_class_refuses_a_type_it_does_not_configure():
    with pytest.raises(ValueError, match=r"type: .*model type 'dcn' takes ArchModelConfig"):
        RankingModelConfig(type="dcn")
    with pytest.raises(ValueError, match="rate_prior: expected a number > 0"):
        model_config("logreg", rate_prior=0)
    assert model_config("logreg", rate_prior=5.0).rate_prior == 5.0
    assert dataclasses.replace(model_config("hstu"), num_targets=3).num_targets == 3


def test_a_registered_type_takes_the_config_it_names():
    from torch import nn

    from dfgr_torchrec.models import MODELS, register_model

    class Tiny(nn.Module):
        def __init__(self, config, device=None):
            super().__init__()

    try:
        register_model("tiny_dcn", Tiny, config=ArchModelConfig)
        assert isinstance(model_config_from_dict({"type": "tiny_dcn"}), ArchModelConfig)
        with pytest.raises(ValueError, match="model.bias_terms: not read by model type 'tiny_dcn'"):
            model_config_from_dict({"type": "tiny_dcn", "bias_terms": False})
    finally:
        from dfgr_torchrec.config import MODEL_TYPES

        for table in (MODELS, MODEL_TYPES, MODEL_CONFIGS):
            table.pop("tiny_dcn", None)
