import math

import torch

from dfgr_torchrec.metrics import auc


def _pairwise_auc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auc_matches_pairwise_definition_with_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (200,), generator=g).float()  # many ties
    labels = torch.rand(200, generator=g) < 0.3
    assert math.isclose(auc(scores, labels.float()), _pairwise_auc(scores.tolist(), labels.tolist()), rel_tol=1e-12)


def test_auc_extremes_and_single_class():
    assert auc(torch.tensor([0.1, 0.9]), torch.tensor([0.0, 1.0])) == 1.0
    assert auc(torch.tensor([0.9, 0.1]), torch.tensor([0.0, 1.0])) == 0.0
    assert math.isnan(auc(torch.tensor([0.1, 0.9]), torch.tensor([1.0, 1.0])))


def test_gauc_weights_users_by_size_and_skips_one_class_users():
    from dfgr_torchrec.metrics import gauc

    scores = torch.tensor([0.9, 0.1, 0.2, 0.8, 0.3, 0.5, 0.6])
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    users = torch.tensor([0, 0, 1, 1, 1, 2, 2])  # user 2 has one class only
    # user 0: AUC 1 (2 rows); user 1: positive 0.2 vs negatives 0.8, 0.3 -> 0 (3 rows)
    assert math.isclose(gauc(scores, labels, users), (1.0 * 2 + 0.0 * 3) / 5)


def test_log_loss_ne_and_calibration():
    from dfgr_torchrec.metrics import calibration, log_loss, normalized_entropy

    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    logits = torch.zeros(4)  # p = 0.5 = the base rate
    assert math.isclose(log_loss(logits, labels), math.log(2))
    assert math.isclose(normalized_entropy(logits, labels), 1.0)
    assert math.isclose(calibration(logits, labels), 1.0)


def test_ranking_metrics_count_candidates_and_positives_per_task():
    from dfgr_torchrec.metrics import ranking_metrics

    labels = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    metrics = ranking_metrics(torch.zeros(3, 2), labels, torch.tensor([0, 0, 1]), ["click", "buy"])
    assert (metrics["click"]["count"], metrics["click"]["positives"]) == (3, 2)
    assert (metrics["buy"]["count"], metrics["buy"]["positives"]) == (3, 1)
