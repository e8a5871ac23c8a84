"""Ranking metrics computed from scores and binary labels."""

from __future__ import annotations

import math

import torch


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC AUC by the rank-sum formula, ties counted half; NaN when only one class is present."""
    scores, labels = scores.detach().double().flatten(), labels.detach().flatten() > 0.5
    n_pos = int(labels.sum())
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, scores.numel() + 1, dtype=torch.float64)
    # average ranks over ties
    unique, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    mean_rank = ends - (counts.double() - 1) / 2
    ranks[order] = mean_rank[inverse]
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def gauc(scores: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> float:
    """Per-group AUC weighted by the group's size, over groups that hold both classes."""
    scores, labels, groups = scores.detach().double().flatten(), labels.detach().flatten(), groups.flatten()
    order = torch.argsort(groups, stable=True)
    groups, scores, labels = groups[order], scores[order], labels[order]
    _, counts = torch.unique_consecutive(groups, return_counts=True)
    total, weight = 0.0, 0
    for s, y in zip(torch.split(scores, counts.tolist()), torch.split(labels, counts.tolist())):
        value = auc(s, y)
        if not math.isnan(value):
            total += value * len(s)
            weight += len(s)
    return total / weight if weight else math.nan


def log_loss(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean binary cross-entropy of sigmoid(logits)."""
    return float(torch.nn.functional.binary_cross_entropy_with_logits(logits.double(), labels.double()))


def normalized_entropy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Log loss divided by the entropy of the base rate (1.0 = no better than predicting the mean)."""
    p = float(labels.double().mean())
    if p in (0.0, 1.0):
        return math.nan
    base = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    return log_loss(logits, labels) / base


def calibration(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean predicted probability over the observed positive rate (1.0 = calibrated)."""
    positives = float(labels.double().sum())
    return float(torch.sigmoid(logits.double()).sum()) / positives if positives else math.nan


def _positives(labels: torch.Tensor) -> int:
    return int((labels > 0.5).sum())


def _class_note(labels: torch.Tensor) -> str:
    """Why a metric that needs both classes is undefined on ``labels`` ("" when it is defined)."""
    positives, count = _positives(labels), labels.numel()
    if count == 0:
        return "no candidates"
    if positives == 0:
        return "only negatives"
    return "only positives" if positives == count else ""


def undefined_notes(metrics: dict, labels: torch.Tensor) -> dict:
    """``{metric: reason}`` for each NaN metric of one task (e.g. ``{"auc": "only positives"}``)."""
    note = _class_note(labels)
    reasons = {
        "auc": note,
        "ne": note,
        "gauc": note or "no user with both classes",
        "calibration": "no positives",
        "logloss": note or "no candidates",
    }
    return {name: reasons[name] for name, value in metrics.items() if isinstance(value, float) and math.isnan(value)}


def _task_metrics(logits: torch.Tensor, labels: torch.Tensor, users: torch.Tensor) -> dict:
    metrics = {
        "auc": auc(logits, labels),
        "gauc": gauc(logits, labels, users),
        "logloss": log_loss(logits, labels),
        "ne": normalized_entropy(logits, labels),
        "calibration": calibration(logits, labels),
        "count": int(labels.shape[0]),
        "positives": _positives(labels),
    }
    notes = undefined_notes(metrics, labels)
    return {**metrics, "notes": notes} if notes else metrics


def ranking_metrics(logits: torch.Tensor, labels: torch.Tensor, users: torch.Tensor, tasks) -> dict:
    """AUC, GAUC, log loss, NE and calibration for each task column; a metric a split cannot
    define (one class only) is NaN, with the reason under ``notes`` (e.g. ``{"auc": "only positives"}``)."""
    return {task: _task_metrics(logits[:, i], labels[:, i], users) for i, task in enumerate(tasks)}
