"""The logreg baseline: smoothed training-split item rates, causal user rates, a closed-form fit."""

import pathlib

import numpy as np
import pytest
import torch

from dfgr_torchrec.batch import make_sequence_batch
from dfgr_torchrec.config import (
    BiasModelConfig,
    HistoryMaskConfig,
    LogRegModelConfig,
    SequenceEmbeddingConfig,
    TaskConfig,
    from_dict,
)
from dfgr_torchrec.data.config import DataConfig
from dfgr_torchrec.data.dataset import PreparedData, SequenceDataset
from dfgr_torchrec.data.prepare import TEST, TRAIN, prepare
from dfgr_torchrec.metrics import auc
from dfgr_torchrec.models import build_model
from dfgr_torchrec.models.logreg import RateFeatures, TrainingRates
from tests.data.conftest import write_config
from tests.processes import train_then_eval_only

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"


def _planted_log(path, users=150, items=60, events=30, seed=0):
    """Clicks and likes drawn from a user propensity plus an item propensity (the signal both
    ``bias`` and ``logreg`` can find), one event per time step."""
    rng = np.random.default_rng(seed)
    user_bias, item_bias = rng.normal(0, 1.0, users), rng.normal(0, 1.5, items)
    lines = ["u\ti\tt\tclick\tlike"]
    for u in range(users):
        for step, i in enumerate(rng.integers(0, items, events)):
            p = 1 / (1 + np.exp(-(user_bias[u] + item_bias[i])))
            click = int(rng.random() < p)
            like = int(click and rng.random() < 0.6)
            lines.append(f"u{u}\ti{i}\t{step}\t{click}\t{like}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("planted")
    config = write_config(tmp, _planted_log(tmp / "log.tsv"), split={"valid_per_user": 3, "test_per_user": 5})
    return PreparedData(prepare(from_dict(DataConfig, config), progress=False))


def _logreg(data, session=False, prior=10.0):
    mode = "session" if session else "position"
    config = LogRegModelConfig(rate_prior=prior, interaction=HistoryMaskConfig(mask_mode=mode))
    return build_model(config, data.schema(), data=data)


def _candidate_features(model, data, split):
    dataset = SequenceDataset(data, split, batch_size=64, max_seq_len=200, shuffle=False)
    return torch.cat([model.features(dataset.make_batch(u), candidates=True) for u in dataset.batch_users()])


def test_item_rates_count_the_training_rows_only(planted):
    rates = TrainingRates.of(planted)
    train = np.asarray(planted.split) == TRAIN
    items, labels = np.asarray(planted.item), np.asarray(planted.labels, dtype=np.float64)
    assert rates.rows.sum() == train.sum()
    first = int(items[train][0])
    assert rates.positives[first].tolist() == labels[train & (items == first)].sum(0).tolist()
    np.testing.assert_allclose(rates.global_rate.numpy(), labels[train].mean(0))


def test_a_test_label_changes_no_feature(planted):
    model = _logreg(planted)
    before = {split: _candidate_features(model, planted, split) for split in ("valid", "test")}
    fitted = [t.clone() for t in model.fitted]

    flipped = np.array(planted.labels, copy=True)
    flipped[np.asarray(planted.split) == TEST] = 1 - flipped[np.asarray(planted.split) == TEST]
    planted.labels, original = flipped, planted.labels
    try:
        other = _logreg(planted)
        for split in ("valid", "test"):
            torch.testing.assert_close(_candidate_features(other, planted, split), before[split], rtol=0, atol=0)
        for a, b in zip(fitted, other.fitted):
            torch.testing.assert_close(a, b, rtol=0, atol=0)  # the fit read no test row either
        # ... while a training label does move the item rates
        flipped[np.flatnonzero(np.asarray(planted.split) == TRAIN)[0]] ^= 1
        assert not torch.equal(TrainingRates.of(planted).positives, other.features.rates.positives)
    finally:
        planted.labels = original


def _hand_batch(labels, timestamps):
    n = len(labels)
    return make_sequence_batch(
        history={"item_id": [[1] * n], "action": [[0] * n]},
        timestamps=[timestamps],
        labels=[[[y] for y in labels]],
        candidates={"item_id": [[1]]},
        candidate_timestamps=[[timestamps[-1] + 1]],
        candidate_labels=[[[0.0]]],
        num_tasks=1,
    )


@pytest.mark.parametrize("session", [False, True])
def test_the_user_rate_reads_only_earlier_labels(session):
    features = RateFeatures(prior=2.0, session=session)
    features.fit(TrainingRates(torch.zeros(3), torch.zeros(3, 1), torch.tensor([0.5], dtype=torch.float64)))
    times = [0, 1, 1, 2, 3]  # the 2nd and 3rd share a session
    base = features(_hand_batch([0, 0, 0, 0, 0], times))
    for k in range(5):
        changed = [0.0] * 5
        changed[k] = 1.0
        after = features(_hand_batch(changed, times))
        moved = (after != base).any(1).tolist()
        sees = [j > k and not (session and times[j] == times[k]) for j in range(5)]
        assert moved == sees, (k, moved)
    user_rate = features(_hand_batch([1, 1, 1, 1, 1], times), candidates=True)[0, 1]
    assert float(user_rate) == pytest.approx(np.log(6 / 1))  # (5 + 2 * 0.5) / (5 + 2) = 6 / 7, as a logit


def test_a_training_row_leaves_itself_out_of_its_item():
    features = RateFeatures(prior=4.0, session=False)
    global_rate = torch.tensor([0.25], dtype=torch.float64)
    features.fit(TrainingRates(torch.tensor([0.0, 1.0]), torch.tensor([[0.0], [1.0]]), global_rate))
    batch = _hand_batch([1.0], [0])  # item 1: seen once in training, with this very label
    x = features(batch)
    assert float(x[0, 0]) == 0.0 and float(x[0, 2]) == 0.0  # no other row: the global rate, log(1 + 0)
    candidate = features(batch, candidates=True)  # a candidate is no training row: it sees the count
    assert float(candidate[0, 0]) > 0 and float(candidate[0, 2]) == pytest.approx(np.log(2))


def test_it_beats_or_equals_bias_on_a_planted_log(planted):
    torch.manual_seed(0)
    logreg = _logreg(planted).eval()
    bias = build_model(BiasModelConfig(), planted.schema(user_id=True))
    optimizer = torch.optim.Adam(bias.parameters(), lr=0.05)
    train = SequenceDataset(planted, "train", batch_size=32, max_seq_len=200, user_id=True)
    for epoch in range(8):
        train.set_epoch(epoch)
        for users in train.batch_users():
            loss = bias(train.make_batch(users)).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    test = SequenceDataset(planted, "test", batch_size=200, max_seq_len=200, user_id=True)
    batch = test.make_batch(test.batch_users()[0])
    with torch.no_grad():
        scores = {name: m.score_candidates(batch).values()[:, 0] for name, m in (("logreg", logreg), ("bias", bias))}
    got = {name: auc(s, batch.candidate_labels[:, 0]) for name, s in scores.items()}
    assert got["logreg"] > 0.7 and got["logreg"] >= got["bias"] - 0.005, got


def test_the_fit_is_the_same_on_every_build(planted):
    """Every rank builds it from the same prepared folder: the same statistics and weights."""
    a, b = _logreg(planted), _logreg(planted)
    assert torch.equal(a.features.rates.positives, b.features.rates.positives)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_without_the_data_it_says_how_to_build_it():
    config = LogRegModelConfig(
        embeddings=SequenceEmbeddingConfig(item_vocab_size=5, action_vocab_sizes={"action": 2}),
        tasks=[TaskConfig("a")],
    )
    with pytest.raises(RuntimeError, match=r"data=prepared_data"):
        build_model(config).score_candidates(_hand_batch([1.0], [0]))
    with pytest.raises(ValueError, match="rate_prior"):
        LogRegModelConfig(rate_prior=0)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent")
def test_it_trains_and_evaluates_through_the_recipe_on_two_processes(tmp_path):
    args = ["--config", "configs/train/debug.yaml", f"output_dir={tmp_path}", "model.type=logreg"]
    args += ["data.num_workers=0", "train.epochs=1"]
    final = train_then_eval_only(args, tmp_path / "debug", ROOT)
    mean_auc = np.mean([t["auc"] for t in final["tasks"].values()])
    assert mean_auc > 0.75, mean_auc  # the fitted start already scores: bias and dfgr reach about 0.75 here
