"""Training configs: composition from defaults, key=value overrides, validation naming the key."""

import glob
import os

import pytest

from dfgr_torchrec.recipes.config import load_train_config


def test_real_configs_load():
    paths = sorted(glob.glob("configs/train/*.yaml")) + ["configs/debug/dfgr_synthetic.yaml"]
    assert len(paths) >= 8
    for path in paths:
        config = load_train_config(path)
        assert os.path.exists(config.data.config), path
        assert config.model.interaction.d_model == config.model.embeddings.embedding_dim


def test_defaults_then_file_then_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "model: {embeddings: {embedding_dim: 8}, interaction: {d_model: 8, num_layers: 3}}\ntrain: {epochs: 5}\n"
    )
    (tmp_path / "run.yaml").write_text("defaults: [base.yaml]\nname: r\ntrain: {epochs: 2}\n")
    config = load_train_config(str(tmp_path / "run.yaml"), ["optim.lr=0.01", "model.interaction.num_layers=4"])
    assert config.train.epochs == 2  # the file beats its default
    assert config.model.interaction.num_layers == 4 and config.model.interaction.d_model == 8
    assert config.optim.lr == 0.01


@pytest.mark.parametrize(
    "override, key",
    [
        ("optim.lrr=1", r"optim\.lrr"),
        ("model.interaction.heads=2", r"model\.interaction\.heads"),
        ("train.pipeline=fast", r"train\.pipeline"),
        ("model.type=bert", r"model\.type"),
        ("nonsense", "key=value"),
    ],
)
def test_bad_keys_and_values_are_named(override, key):
    with pytest.raises(ValueError, match=key):
        load_train_config("configs/train/debug.yaml", [override])


def test_missing_default_is_named(tmp_path):
    (tmp_path / "run.yaml").write_text("defaults: [nowhere.yaml]\n")
    with pytest.raises(FileNotFoundError, match=r"nowhere\.yaml.*a default of"):
        load_train_config(str(tmp_path / "run.yaml"))


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.decay=step", "optim.decay: expected one of"),
        ("data.batch_size=0", "data.batch_size: expected a positive"),
        ("train.pipeline=fast", "train.pipeline: expected one of"),
        ("model.interaction.num_heads=0", "model.interaction.num_heads: expected a positive"),
        ("model.interaction.heads=2", "model.interaction.heads: unknown key"),
    ],
)
def test_errors_name_the_full_key_once(override, message):
    with pytest.raises(ValueError) as error:
        load_train_config("configs/train/debug.yaml", [override])
    assert str(error.value).startswith(f"configs/train/debug.yaml: {message}"), str(error.value)


HOOKS = ("crash_at_step", "stall_at_step", "wait_for_signal_at_step")


def test_test_hooks_are_not_config_keys_but_testing_overrides_set_them():
    import dataclasses

    from dfgr_torchrec.recipes.config import TrainSection, dump_config

    config = load_train_config("configs/train/debug.yaml", ["testing.crash_at_step=13", "testing.stall_at_step=2"])
    assert (config.testing.crash_at_step, config.testing.stall_at_step, config.testing.wait_for_signal_at_step) == (
        13,
        2,
        0,
    )
    assert load_train_config("configs/train/debug.yaml").testing.crash_at_step == 0
    documented = {f.name for f in dataclasses.fields(TrainSection)} | set(TrainSection.__doc__.split())
    written = dump_config(config)  # a run's config.yaml
    for hook in HOOKS:
        assert hook not in written and not any(hook in word for word in documented), hook
    with pytest.raises(ValueError) as error:  # the keys an unknown train.* key's message lists
        load_train_config("configs/train/debug.yaml", ["train.nope=1"])
    assert not any(hook in str(error.value) for hook in HOOKS)
    with pytest.raises(ValueError, match=r"testing.crash_at_step: expected an integer >= 0, got -1"):
        load_train_config("configs/train/debug.yaml", ["testing.crash_at_step=-1"])


def test_a_config_recorded_with_the_hooks_under_train_still_loads(tmp_path):
    recorded = tmp_path / "config.yaml"  # as runs recorded it before the hooks left train: (manifest configs)
    recorded.write_text(
        "defaults: [" + os.path.abspath("configs/train/debug.yaml") + "]\n"
        "train: {crash_at_step: 0, stall_at_step: 0, wait_for_signal_at_step: 0}\n"
    )
    config = load_train_config(str(recorded))
    assert config.testing.crash_at_step == 0 and not hasattr(config.train, "crash_at_step")
