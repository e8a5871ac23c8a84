"""The scale generator: deterministic, chunk-independent, huge vocabularies for free, a real signal."""

import dataclasses
import json
import tracemalloc

import numpy as np
import pytest
import torch
import yaml

from dfgr_torchrec.data import synth_log as synth
from dfgr_torchrec.data.config import load_data_config
from dfgr_torchrec.data.prepare import prepare
from dfgr_torchrec.metrics import auc

SMALL = {"num_users": 200, "num_items": 5000, "min_seq_len": 5, "max_seq_len": 40}


def _log(tmp_path, name="log.tsv", **kwargs):
    config = synth.SynthConfig(**{**SMALL, **kwargs})
    path = tmp_path / name
    summary = synth.generate(config, str(path), progress=False)
    return config, path, summary


def _rows(path):
    return np.loadtxt(path, dtype=np.int64, delimiter="\t", skiprows=1, ndmin=2)


def _auc(scores, labels):
    return auc(torch.as_tensor(np.asarray(scores, dtype=np.float64)), torch.as_tensor(labels))


def test_same_config_same_bytes_whatever_the_chunking(tmp_path):
    _, a, summary = _log(tmp_path, "a.tsv", chunk_users=64)
    _, b, _ = _log(tmp_path, "b.tsv", chunk_users=64)
    _, c, _ = _log(tmp_path, "c.tsv", chunk_users=7)
    _, d, _ = _log(tmp_path, "d.tsv", chunk_users=10_000)
    assert a.read_bytes() == b.read_bytes() == c.read_bytes() == d.read_bytes()
    _, e, _ = _log(tmp_path, "e.tsv", chunk_users=64, seed=1)
    assert a.read_bytes() != e.read_bytes()
    assert json.loads((tmp_path / "a.tsv.summary.json").read_text())["rows"] == summary["rows"]
    assert not list(tmp_path.glob("*.tmp"))


def test_log_layout_and_summary(tmp_path):
    config, path, summary = _log(tmp_path)
    assert path.read_text().split("\n", 1)[0] == "user_id\titem_id\ttimestamp\tclick\tlike\tshare"
    rows = _rows(path)
    users, items, times, actions = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3:]
    assert (np.diff(users) >= 0).all(), "rows grouped by user, ascending"
    same_user = np.diff(users) == 0
    assert (np.diff(times)[same_user] >= 0).all(), "chronological per user"
    assert (times >= config.start_time).all()
    lengths = np.bincount(users)
    assert len(lengths) == 200 and lengths.min() >= 5 and lengths.max() <= 40
    assert np.median(lengths) < lengths.mean(), "power-law lengths: many short, a few long"
    assert items.min() >= 0 and items.max() < 5000
    assert set(np.unique(actions)) <= {0, 1}
    assert (np.diff(times)[same_user] == 0).any(), "some interactions shown together (sessions)"
    assert len(np.unique(rows[:, :3], axis=0)) == len(rows), "no (user, item, timestamp) twice"

    assert summary["rows"] == len(rows) and summary["users"] == 200
    assert summary["distinct_items"] == len(np.unique(items))
    assert summary["per_action"] == dict(zip(config.action_types, actions.sum(0).tolist()))
    assert summary["bytes"] == path.stat().st_size
    assert summary["per_action"]["click"] > summary["per_action"]["like"] > summary["per_action"]["share"]


def test_popular_items_are_low_ids_and_sessions_follow_session_prob(tmp_path):
    _, path, _ = _log(tmp_path, session_prob=0.0)
    rows = _rows(path)
    same_user = np.diff(rows[:, 0]) == 0
    assert (np.diff(rows[:, 2])[same_user] > 0).all(), "session_prob 0: every interaction its own time"
    counts = np.bincount(rows[:, 1], minlength=5000)
    assert counts[:10].sum() > counts[10:100].sum() / 3 > counts[1000:1090].sum()


def test_huge_vocabulary_costs_no_memory(tmp_path):
    tracemalloc.start()
    try:
        config, path, summary = _log(tmp_path, num_users=50, num_items=10**8, max_seq_len=100)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # An item table would be 10**8 x 8 floats (6.4 GB); the distinct-item bit set is 12.5 MB.
    assert peak < 32 * 2**20, peak
    items = _rows(path)[:, 1]
    assert items.max() < 10**8 and items.max() > 10**6 and summary["distinct_items"] == len(np.unique(items))
    _, path, summary = _log(tmp_path, "huge.tsv", num_users=5, num_items=10**12)
    assert summary["distinct_items"] is None and _rows(path)[:, 1].max() < 10**12


def test_replay_gives_the_generating_probabilities(tmp_path):
    config, path, _ = _log(tmp_path)
    rows = _rows(path)
    generated = synth._chunk(config, 0, config.num_users, keep_probabilities=True)["probabilities"].T
    replayed = synth.replay_probabilities(config, rows[:, 0], rows[:, 1], rows[:, 3:])
    np.testing.assert_allclose(replayed, generated, rtol=0, atol=1e-12)
    assert np.abs(replayed.mean(0) - rows[:, 3:].mean(0)).max() < 0.03, "calibrated"
    split_user = rows[:, 0].copy()
    split_user[-1] = 0  # user 0's rows in two places
    with pytest.raises(ValueError, match="grouped by user"):
        synth.replay_probabilities(config, split_user, rows[:, 1], rows[:, 3:])


def test_the_planted_signal_beats_popularity_and_history_matters(tmp_path):
    config, path, _ = _log(tmp_path, num_users=400, num_items=2000, max_seq_len=60)
    rows = _rows(path)
    users, items, actions = rows[:, 0], rows[:, 1], rows[:, 3:]
    clicks = actions[:, 0]
    oracle = synth.replay_probabilities(config, users, items, actions)[:, 0]
    no_history = synth.replay_probabilities(dataclasses.replace(config, history_weight=0.0), users, items, actions)[
        :, 0
    ]
    shown = np.bincount(items, minlength=2000)
    clicked = np.bincount(items, weights=clicks, minlength=2000)
    popularity = shown[items].astype(float)
    item_ctr = (clicked[items] - clicks + 2.0) / (shown[items] - 1 + 5.0)  # leave-one-out, smoothed
    oracle_auc, no_history_auc = _auc(oracle, clicks), _auc(no_history, clicks)
    baseline_auc = max(_auc(popularity, clicks), _auc(item_ctr, clicks))
    assert oracle_auc > 0.8 and oracle_auc > baseline_auc + 0.2, (oracle_auc, baseline_auc)
    assert oracle_auc > no_history_auc + 0.005, (oracle_auc, no_history_auc)
    # The taste signal alone, as hashed vectors: users click items close to their taste.
    affinity = (synth.user_vectors(config, users) * synth.item_vectors(config, items)).sum(1)
    assert _auc(affinity, clicks) > baseline_auc + 0.15


def test_data_config_has_the_agreed_shape_and_feeds_prepare(tmp_path):
    config, path, _ = _log(tmp_path)
    yaml_path = tmp_path / "data.yaml"
    synth.write_data_config(config, str(path), str(yaml_path))
    assert yaml.safe_load(yaml_path.read_text()) == {
        "name": "synth-200u-5000i-s0",
        "source": {
            "path": str(path),
            "format": "tsv",
            "header": True,
            "columns": {"user": "user_id", "item": "item_id", "timestamp": "timestamp"},
        },
        "actions": {"click": {"column": "click"}, "like": {"column": "like"}, "share": {"column": "share"}},
        "split": {"valid_per_user": 1, "test_per_user": 1},
    }
    assert "  click: {column: click}\n" in yaml_path.read_text()
    data_config = load_data_config(str(yaml_path))
    data_config.output_dir = str(tmp_path / "prepared")
    prepared = prepare(data_config, progress=False)
    report = json.loads(open(f"{prepared}/report.json").read())
    assert report["rows_read"] == len(_rows(path)) and report["users"] == 200
    assert list(report["per_action"]) == config.action_types


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"num_users": 0}, "num_users"),
        ({"num_users": True}, "num_users"),
        ({"num_items": 2.5}, "num_items"),
        ({"item_popularity_exponent": -1}, "item_popularity_exponent"),
        ({"item_popularity_exponent": "1.1"}, "item_popularity_exponent"),
        ({"min_seq_len": 0}, "min_seq_len"),
        ({"max_seq_len": 2, "min_seq_len": 5}, "max_seq_len"),
        ({"seq_len_exponent": float("nan")}, "seq_len_exponent"),
        ({"action_types": []}, "action_types"),
        ({"action_types": ["a", "a"]}, "action_types"),
        ({"action_types": ["click", "user_id"]}, "action_types"),
        ({"action_types": ["two words"]}, "action_types"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"affinity_scale": float("inf")}, "affinity_scale"),
        ({"history_weight": None}, "history_weight"),
        ({"history_window": 0}, "history_window"),
        ({"session_prob": 1.0}, "session_prob"),
        ({"seed": -1}, "seed"),
        ({"start_time": -5}, "start_time"),
        ({"chunk_users": 0}, "chunk_users"),
    ],
)
def test_bad_config_names_the_field(kwargs, key):
    with pytest.raises(ValueError, match=rf"^{key}: expected"):
        synth.SynthConfig(**kwargs)


def test_tsv_formatting_matches_python():
    columns = [np.array([0, 9, 10, 99, 100, 123456789012]), np.array([1, 0, 1, 0, 1, 0]), np.zeros(6, dtype=np.int64)]
    expected = "".join("\t".join(str(int(c[i])) for c in columns) + "\n" for i in range(6))
    assert synth._tsv_bytes(columns).decode() == expected
    assert synth._tsv_bytes([np.zeros(0, dtype=np.int64)]) == b""


REPEATS = {"repeat_prob": 0.3, "action_types": ["view", "cart", "buy"]}


def test_planted_repeats_are_deterministic_and_replayed(tmp_path):
    config, a, _ = _log(tmp_path, "a.tsv", chunk_users=64, **REPEATS)
    _, b, _ = _log(tmp_path, "b.tsv", chunk_users=7, **REPEATS)
    _, plain, _ = _log(tmp_path, "plain.tsv", chunk_users=64, action_types=REPEATS["action_types"])
    assert a.read_bytes() == b.read_bytes() != plain.read_bytes()
    rows = _rows(a)
    generated = synth._chunk(config, 0, config.num_users, keep_probabilities=True)["probabilities"].T
    replayed = synth.replay_probabilities(config, rows[:, 0], rows[:, 1], rows[:, 3:])
    np.testing.assert_allclose(replayed, generated, rtol=0, atol=1e-12)


def test_planted_repeats_make_the_repeat_rule_predict_the_last_action(tmp_path):
    _, path, _ = _log(tmp_path, **REPEATS)
    _, plain_path, _ = _log(tmp_path, "plain.tsv", action_types=REPEATS["action_types"])

    def rule_auc(rows):
        seen = np.zeros(len(rows), dtype=bool)
        first = np.unique(rows[:, :2], axis=0, return_index=True)[1]  # each (user, item)'s first row
        seen[np.setdiff1d(np.arange(len(rows)), first)] = True
        return seen.mean(), _auc(seen, rows[:, -1]), _auc(seen, rows[:, 3])

    rate, buy, view = rule_auc(_rows(path))
    plain_rate, plain_buy, _ = rule_auc(_rows(plain_path))
    assert rate > plain_rate + 0.1, (rate, plain_rate)
    assert buy > 0.7 and buy > plain_buy + 0.15 and abs(view - 0.5) < 0.1, (buy, plain_buy, view)


def test_repeat_settings_are_checked():
    with pytest.raises(ValueError, match="repeat_prob"):
        synth.SynthConfig(repeat_prob=1.5)
    with pytest.raises(ValueError, match="repeat_window"):
        synth.SynthConfig(repeat_window=0)
