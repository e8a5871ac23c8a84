"""The one YAML loader: ``defaults:``, overrides, one-line errors; every shipped config loads through it."""

import glob
import pathlib
import subprocess
import sys

import pytest

from dfgr_torchrec.yaml_config import load_config, load_yaml_tree

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _write(tmp_path, files):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return str(tmp_path / next(iter(files)))


def test_defaults_merge_in_order_then_the_file_then_the_overrides(tmp_path):
    path = _write(
        tmp_path,
        {
            "run.yaml": "defaults: [a.yaml, sub/b.yaml]\nx: {keep: 1, mine: 2}\n",
            "a.yaml": "x: {keep: 0, a: 1}\nlist: [1]\n",
            "sub/b.yaml": "defaults: c.yaml\nlist: [2]\n",  # one path, relative to sub/
            "sub/c.yaml": "deep: {y: 1}\n",
        },
    )
    tree = load_yaml_tree(path, ["x.keep=5", "deep.z=[1, 2]", "new.key=true"])
    assert tree == {
        "x": {"keep": 5, "mine": 2, "a": 1},
        "list": [2],
        "deep": {"y": 1, "z": [1, 2]},
        "new": {"key": True},
    }


def test_a_cycle_is_one_line_naming_the_files(tmp_path):
    path = _write(tmp_path, {"a.yaml": "defaults: [b.yaml]\n", "b.yaml": "defaults: [a.yaml]\n"})
    with pytest.raises(ValueError) as error:
        load_yaml_tree(path)
    message = str(error.value)
    assert "\n" not in message and "defaults form a cycle" in message
    assert "a.yaml -> " in message and "b.yaml -> " in message


def test_a_missing_default_names_it_and_the_file_that_lists_it(tmp_path):
    path = _write(tmp_path, {"run.yaml": "defaults: [nowhere.yaml]\n"})
    with pytest.raises(FileNotFoundError) as error:
        load_yaml_tree(path)
    assert str(error.value) == f"{tmp_path}/nowhere.yaml: no such config file (a default of {path})"


@pytest.mark.parametrize(
    "text, message",
    [
        ("a: [1, 2\n", "line 2: not valid YAML"),
        ("defaults: {a: 1}\n", "defaults: expected a path or a list of paths, got {'a': 1}"),
        ("- 1\n", "expected a mapping at the top level, got list"),
        ("a: !!python/object:os.system {}\n", "refused"),
    ],
)
def test_a_bad_file_is_one_line_naming_it(tmp_path, text, message):
    path = _write(tmp_path, {"run.yaml": text})
    with pytest.raises(ValueError) as error:
        load_yaml_tree(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value), str(error.value)
    assert "\n" not in str(error.value)


def test_load_config_type_checks_and_names_the_file_and_key(tmp_path):
    from dfgr_torchrec.config import InteractionConfig

    path = _write(tmp_path, {"i.yaml": "defaults: [base.yaml]\nnum_heads: 4\n", "base.yaml": "d_model: 32\n"})
    config = load_config(InteractionConfig, path, ["num_layers=3"])
    assert (config.d_model, config.num_heads, config.num_layers) == (32, 4, 3)
    with pytest.raises(ValueError) as error:  # the dataclass's own check of the key: its own words
        load_config(InteractionConfig, path, ["num_layers=abc"])
    assert str(error.value) == f"{path}: num_layers: expected a positive integer, got 'abc'"
    with pytest.raises(ValueError) as error:  # float('abc') in its check: the type check's words
        load_config(InteractionConfig, path, ["dropout=abc"])
    assert str(error.value) == f"{path}: dropout: expected a number, got 'abc'"
    with pytest.raises(ValueError, match=r"i\.yaml: heads: unknown key"):
        load_config(InteractionConfig, path, ["heads=2"])


def _shipped(pattern):
    return sorted(glob.glob(str(ROOT / pattern)))


@pytest.mark.parametrize(
    "path", _shipped("configs/train/*.yaml") + _shipped("configs/debug/*.yaml") + _shipped("configs/model/*.yaml")
)
def test_every_shipped_train_config_loads(path, monkeypatch):
    from dfgr_torchrec.recipes.config import load_train_config

    monkeypatch.chdir(ROOT)
    load_train_config(path)


@pytest.mark.parametrize("path", _shipped("configs/data/*.yaml"))
def test_every_shipped_data_config_loads(path):
    from dfgr_torchrec.data.config import load_data_config

    load_data_config(path)  # checks the config only: the log need not be here


@pytest.mark.parametrize("path", _shipped("configs/study/*.yaml"))
def test_every_shipped_study_config_loads(path, monkeypatch):
    from dfgr_torchrec.study.config import load_study_config

    monkeypatch.chdir(ROOT)  # the studies name training configs relative to the repository
    assert load_study_config(path).model_runs()


def test_the_loaders_import_no_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from dfgr_torchrec.recipes.config import load_train_config\n"
        "from dfgr_torchrec.data.config import load_data_config\n"
        "from dfgr_torchrec.study.config import load_study_config\n"
        "load_train_config('configs/train/debug.yaml'); load_data_config('configs/data/kuairand-sample.yaml')\n"
        "load_study_config('configs/study/quick.yaml')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
