"""The scale generator: deterministic, chunk-independent, huge vocabularies for free, a real signal."""

import math

import numpy as np
import pytest
import torch

from dfgr_torchrec.data import synth
from dfgr_torchrec.data.config import load_data_config
from dfgr_torchrec.data.prepare import prepare
from dfgr_torchrec.metrics import auc


def _log(tmp_path, name="log.tsv", **kwargs):
    config = synth.SynthConfig(**{"num_users": 200, "num_items": 5000, "min_seq_len": 5, "max_seq_len": 40, **kwargs})
    path = tmp_path / name
    summary = synth.generate(config, str(path), progress=False)
    return config, path, summary


def _rows(path):
    return np.loadtxt(path, dtype=np.int64, delimiter="\t", skiprows=1, ndmin=2)


def test_same_config_same_bytes_whatever_the_chunking(tmp_path):
    _, a, _ = _log(tmp_path, "a.tsv", chunk_users=64)
    _, b, _ = _log(tmp_path, "b.tsv", chunk_users=64)
    _, c, _ = _log(tmp_path, "c.tsv", chunk_users=7)
    assert a.read_bytes() == b.read_bytes() == c.read_bytes()
    _, d, _ = _log(tmp_path, "d.tsv", seed=1)
    assert a.read_bytes() != d.read_bytes()


def test_log_shape(tmp_path):
    config, path, summary = _log(tmp_path)
    rows = _rows(path)
    assert summary["rows"] == len(rows)
    users, items, times = rows[:, 0], rows[:, 1], rows[:, 2]
    assert (np.diff(users) >= 0).all(), "rows grouped by user"
    same_user = np.diff(users) == 0
    assert (np.diff(times)[same_user] >= 0).all(), "chronological per user"
    lengths = np.bincount(users)
    assert lengths.min() >= 5 and lengths.max() <= 40 and len(lengths) == 200
    assert items.min() >= 0 and items.max() < 5000
    assert set(np.unique(rows[:, 3:])) <= {0, 1}
    assert summary["per_action"]["click"] > summary["per_action"]["share"], "later action types are rarer"


def test_huge_vocabulary_costs_nothing(tmp_path):
    _, path, summary = _log(tmp_path, num_users=20, num_items=10**8)
    assert _rows(path)[:, 1].max() < 10**8 and summary["rows"] > 0


def test_the_planted_signal_beats_popularity(tmp_path):
    config, path, _ = _log(tmp_path, num_users=400, num_items=2000, max_seq_len=60)
    rows = _rows(path)
    users, items, clicks = rows[:, 0], rows[:, 1], rows[:, 3]
    taste = synth._normal(config.seed, synth._STREAM_USER, users[:, None], np.arange(config.latent_dim)[None, :])
    affinity = (taste * synth.item_vectors(config, items)).sum(-1)
    popularity = np.bincount(items, minlength=2000)[items].astype(float)
    signal_auc = auc(torch.tensor(affinity), torch.tensor(clicks))
    popularity_auc = auc(torch.tensor(popularity), torch.tensor(clicks))
    assert signal_auc > 0.65 and signal_auc > popularity_auc + 0.1, (signal_auc, popularity_auc)


def test_data_config_feeds_prepare(tmp_path):
    config, path, _ = _log(tmp_path)
    yaml_path = tmp_path / "data.yaml"
    synth.write_data_config(config, str(path), str(yaml_path))
    data_config = load_data_config(str(yaml_path))
    data_config.output_dir = str(tmp_path / "prepared")
    prepared = prepare(data_config, progress=False)
    report = __import__("json").load(open(f"{prepared}/report.json"))
    assert report["rows_read"] == len(_rows(path)) and report["users"] == 200
    assert list(report["per_action"]) == config.action_types


@pytest.mark.parametrize(
    "kwargs, key",
    [({"num_users": 0}, "num_users"), ({"max_seq_len": 2, "min_seq_len": 5}, "max_seq_len"),
     ({"session_prob": 1.0}, "session_prob"), ({"action_types": ["a", "a"]}, "action_types")],
)
def test_bad_config_names_the_field(kwargs, key):
    with pytest.raises(ValueError, match=key):
        synth.SynthConfig(**kwargs)


def test_power_law_stays_in_range():
    u = np.linspace(1e-9, 1 - 1e-9, 1001)
    for exponent in (0.5, 1.0, 1.5):
        x = synth._power_law(u, 1.0, 100.0, exponent)
        assert x.min() >= 1.0 - 1e-9 and x.max() <= 100.0 + 1e-9 and (np.diff(x) >= 0).all()
    assert math.isclose(synth._uniform(0, 1, 2).item(), synth._uniform(0, 1, 2).item())
