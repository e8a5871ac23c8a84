"""A prepared data set's split replayed as raw-id requests, to try ``dfgr score`` and to check that
serving reproduces the training recipe's evaluation.

Each user with candidates in the split becomes one request: the history the evaluation uses (the
most recent ``max_seq_len`` interactions before the candidates), in raw ids, and the candidates
with their times; the labels go to a separate JSONL file. Ids the data set maps to the OOV row
become ``"<unknown>"`` (with ``vocab.oov: hash`` the original id is gone, so such an id lands in
some bucket, not necessarily its own: the replay is exact only for the ``oov`` policy).

``python -m dfgr_torchrec.serving.replay --config CFG --split test --out requests.jsonl --labels labels.jsonl``
then ``python -m dfgr_torchrec.serving.replay --evaluate scores.jsonl --labels labels.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from dfgr_torchrec.data.dataset import PreparedData, SequenceDataset
from dfgr_torchrec.features import ACTION_FEATURE, ITEM_FEATURE, candidate_feature
from dfgr_torchrec.metrics import ranking_metrics

UNKNOWN = "<unknown>"


def _raw(vocab: np.ndarray, rows: np.ndarray) -> List[str]:
    return [str(vocab[r - 1]) if 0 < r <= len(vocab) else UNKNOWN for r in rows.tolist()]


def replay(
    data: PreparedData, split: str, max_seq_len: int, limit: Optional[int] = None
) -> Iterator[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """``(request, labels)`` per user of ``split``: raw ids as in the log, labels per task."""
    dataset = SequenceDataset(data, split, batch_size=1, max_seq_len=max_seq_len)
    vocab = {
        name: np.load(os.path.join(data.path, f"vocab_{name}.npy"), allow_pickle=False)
        for name in ["item", "user", *data.side]
    }
    action_path = os.path.join(data.path, f"vocab_{ACTION_FEATURE}.npy")  # only with an action column
    action_vocab = np.load(action_path, allow_pickle=False) if os.path.exists(action_path) else None
    for user in dataset.users[:limit]:
        batch = dataset.make_batch(np.array([user]))
        f = {k: batch.features[k].values().numpy() for k in batch.features.keys()}
        history = [
            {"item": i, "timestamp": t} for i, t in zip(_raw(vocab["item"], f[ITEM_FEATURE]), batch.timestamps.tolist())
        ]
        candidates = [
            {"item": i, "timestamp": t}
            for i, t in zip(
                _raw(vocab["item"], f[candidate_feature(ITEM_FEATURE)]), batch.candidate_timestamps.tolist()
            )
        ]
        for name in data.side:
            for x, raw in zip(history, _raw(vocab[name], f[name])):
                x[name] = raw
            for x, raw in zip(candidates, _raw(vocab[name], f[candidate_feature(name)])):
                x[name] = raw
        for x, row, labels in zip(history, f[ACTION_FEATURE].tolist(), batch.labels.tolist()):
            if action_vocab is not None:
                x["action"] = _raw(action_vocab, np.array([row]))[0]
            else:
                x["actions"] = {task: int(v) for task, v in zip(data.tasks, labels)}
        raw_user = str(vocab["user"][user])
        yield (
            {"user": raw_user, "history": history, "candidates": candidates},
            {"user": raw_user, "labels": batch.candidate_labels.tolist()},
        )


def evaluate(scores_path: str, labels_path: str, tasks: Optional[List[str]] = None) -> Dict[str, Any]:
    """AUC, GAUC, ... of ``dfgr score`` output against the replay's labels (matched by user);
    ``tasks`` default to the scores' own, in their order (the model's, as the labels)."""
    with open(labels_path) as f:
        labels = {row["user"]: row["labels"] for row in map(json.loads, f)}
    logits, targets, users = [], [], []
    with open(scores_path) as f:
        for index, result in enumerate(map(json.loads, f)):
            for score, label in zip(result["scores"], labels[result["user"]]):
                tasks = tasks or [key for key in score if key != "item"]
                p = torch.tensor([score[t] for t in tasks], dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
                logits.append(torch.log(p) - torch.log1p(-p))
                targets.append(label)
                users.append(index)
    return ranking_metrics(torch.stack(logits), torch.tensor(targets), torch.tensor(users), tasks)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m dfgr_torchrec.serving.replay", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", help="a training config: its data set and max_seq_len")
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    parser.add_argument("--out", help="requests JSONL to write")
    parser.add_argument("--labels", required=True, help="labels JSONL (written with --out, read with --evaluate)")
    parser.add_argument("--users", type=int, default=None, help="at most this many users")
    parser.add_argument("--evaluate", metavar="SCORES", help="score `dfgr score` output against --labels")
    parser.add_argument("--tasks", nargs="+", help="with --evaluate: the task names (default: every task scored)")
    args = parser.parse_args(argv)
    if args.evaluate:
        print(json.dumps(evaluate(args.evaluate, args.labels, args.tasks), indent=1))
        return
    from dfgr_torchrec.recipes.config import load_train_config
    from dfgr_torchrec.serving.compile import quiet_tracing_logs
    from dfgr_torchrec.serving.loading import prepared_data_of

    quiet_tracing_logs()  # building KeyedJaggedTensors would log torch.fx's is_fx_tracing notice
    config = load_train_config(args.config)
    data = prepared_data_of(config)
    with open(args.out, "w") as out, open(args.labels, "w") as lab:
        for request, labels in replay(data, args.split, config.data.max_seq_len, args.users):
            out.write(json.dumps(request) + "\n")
            lab.write(json.dumps(labels) + "\n")


if __name__ == "__main__":
    main()
