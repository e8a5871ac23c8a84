"""Data YAMLs through the one loader: ``defaults:``, overrides, errors naming the file and the key."""

import dataclasses

import pytest
import yaml

from dfgr_torchrec.data.config import SideFeatureConfig, load_data_config

BASE = {
    "name": "base",
    "source": {"path": "logs/events.tsv", "format": "tsv", "columns": {"user": "u", "item": "i", "timestamp": "t"}},
    "actions": {"click": {"column": "click"}},
    "split": {"valid_per_user": 1, "test_per_user": 1},
}


def _files(tmp_path, top):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "mine.yaml").write_text(top)
    return str(tmp_path / "mine.yaml")


def test_a_data_config_composes_from_defaults_and_takes_overrides(tmp_path):
    path = _files(tmp_path, "defaults: [base.yaml]\nname: mine\nsource: {timestamp_unit: ms}\n")
    config = load_data_config(path, ["source.engine=python", "split.test_per_user=2"])
    assert config.name == "mine" and config.source.timestamp_unit == "ms" and config.source.engine == "python"
    assert config.source.path == "logs/events.tsv" and config.source.delimiter == "\t"  # from the default
    assert (config.split.valid_per_user, config.split.test_per_user) == (1, 2)
    assert list(config.actions) == ["click"]


@pytest.mark.parametrize(
    "top, overrides, message",
    [
        (
            "defaults: [base.yaml]\nsplit: {valid_per_user: many}\n",
            [],
            "split.valid_per_user: expected an integer >= 0",
        ),
        (
            "defaults: [base.yaml]\n",
            ['source.header="false"'],
            "source.header: expected a boolean (true or false, unquoted)",
        ),
        ("defaults: [base.yaml]\n", ["vocab.hash_buckets=lots"], "vocab.hash_buckets: expected a positive integer"),
        ("defaults: [base.yaml]\n", ["source.colums={}"], "source.colums: unknown key"),
        ("defaults: [base.yaml]\n", ["source.side_features=[a]"], "source.side_features: expected a mapping"),
        (
            "defaults: [base.yaml]\n",
            ["source.side_features={duration: {column: d, bucket: linear}}"],
            "source.side_features.duration.bucket: expected 'log2', got 'linear'",
        ),
        (
            "defaults: [base.yaml]\n",
            ["source.side_features={duration: {column: d}}"],
            "source.side_features.duration: missing required key(s): bucket",
        ),
        (
            "defaults: [base.yaml]\n",
            ["source.side_features={duration: {column: d, bucket: log2, step: 2}}"],
            "source.side_features.duration.step: unknown key(s)",
        ),
        (
            "defaults: [base.yaml]\n",
            ["source.side_features={duration: 1.5}"],
            "source.side_features.duration: expected a column name or a 0-based column index or a mapping",
        ),
        (
            "defaults: [base.yaml]\n",
            ["source.header=false", "source.columns={user: 0, item: 1, timestamp: 2}"]
            + ["actions.click.column=3", "source.side_features={duration: {column: d, bucket: log2}}"],
            "source.columns.duration: expected a 0-based column index (header: false)",
        ),
        ("# nothing yet\n", [], "DataConfig: missing required key(s): name, source, actions"),
        (
            "name: x\nsource: {path: p, columns: {user: u}}\nactions: {click: {column: c}}\n",
            [],
            "source.columns: missing required key(s): item, timestamp",
        ),
    ],
)
def test_a_type_error_names_the_file_and_the_key(tmp_path, top, overrides, message):
    path = _files(tmp_path, top)
    with pytest.raises(ValueError) as error:
        load_data_config(path, overrides)
    assert str(error.value).startswith(f"{path}: {message}"), str(error.value)
    assert "\n" not in str(error.value)


def test_side_features_plain_and_bucketed(tmp_path):
    """The plain ``{name: column}`` form is kept as it was (same config key); a bucketed one is a
    :class:`SideFeatureConfig`, its column read like any other."""
    path = _files(tmp_path, "defaults: [base.yaml]\nsource: {side_features: {category: c}}\n")
    plain = load_data_config(path)
    assert plain.source.side_features == {"category": "c"} and plain.source.side_buckets == {}
    bucketed = load_data_config(path, ["source.side_features.duration={column: d, bucket: log2}"])
    assert list(bucketed.source.side_features) == ["category", "duration"]
    assert bucketed.source.side_features["duration"] == SideFeatureConfig(column="d", bucket="log2")
    assert bucketed.source.side_columns == {"category": "c", "duration": "d"}
    assert bucketed.source.side_buckets == {"duration": "log2"}
    assert plain.config_key() != bucketed.config_key()
    assert dataclasses.asdict(plain.source)["side_features"] == {"category": "c"}  # what the config key hashes


def test_a_missing_default_and_a_cycle_are_one_line(tmp_path):
    path = _files(tmp_path, "defaults: [gone.yaml]\n")
    with pytest.raises(FileNotFoundError, match=r"gone\.yaml: no such config file \(a default of .*mine\.yaml\)"):
        load_data_config(path)
    (tmp_path / "mine.yaml").write_text("defaults: [base.yaml]\n")
    (tmp_path / "base.yaml").write_text("defaults: [mine.yaml]\n")
    with pytest.raises(ValueError, match="defaults form a cycle: .*mine.yaml -> .*base.yaml -> .*mine.yaml"):
        load_data_config(path)


def test_dfgr_data_prepare_takes_overrides_and_reports_one_line(tmp_path, capsys):
    from dfgr_torchrec.cli import main

    path = _files(tmp_path, "defaults: [base.yaml]\n")
    assert main(["data", "prepare", "--config", path, "split.valid_per_user=-1"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"dfgr data: error: {path}: split.valid_per_user: expected an integer >= 0, got -1"
