"""Evaluation is collective-safe: ranks holding different numbers of users finish together; the
metrics by the candidate item's training count are the metrics of those candidates."""

import dataclasses
import json
import os
import pathlib
import subprocess

import pytest
import torch
import torch.distributed as dist
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec.data.synthetic_batches import SyntheticSequences
from dfgr_torchrec.metrics import ranking_metrics
from dfgr_torchrec.training.evaluation import ITEM_COUNT_SLICES, evaluate
from tests.processes import recipe_torchrun

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not (ROOT.parent / "shared" / "data").exists(), reason="../shared/data is absent")


def test_metrics_by_item_train_count_are_those_of_the_sliced_candidates():
    world = SyntheticSequences(num_items=300, num_tasks=2, seed=5)
    batches = [
        dataclasses.replace(
            world.batch(8, 3, 10, 6, torch.Generator().manual_seed(i)), user_ids=torch.arange(8) + 8 * i
        )
        for i in range(4)
    ]
    counts = torch.randint(0, 80, (300,), generator=torch.Generator().manual_seed(0))
    counts[::7] = 0  # some cold items

    def score(batch):  # any deterministic score of the candidate
        items = batch.features["cand_item_id"].values().float()
        return JaggedTensor(
            values=torch.stack([torch.sin(items), torch.cos(items * 0.3)], dim=1), lengths=batch.candidate_lengths
        )

    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        metrics = evaluate(score, batches, ["a", "b"], "test", torch.device("cpu"), counts.numpy())
    finally:
        dist.destroy_process_group()
    items = torch.cat([b.features["cand_item_id"].values() for b in batches])
    logits = torch.cat([score(b).values() for b in batches])
    labels = torch.cat([b.candidate_labels for b in batches])
    users = torch.cat([b.candidate_user_ids for b in batches])
    sliced = metrics["by_item_train_count"]
    assert list(sliced) == [name for name, _, _ in ITEM_COUNT_SLICES]
    assert sum(m["a"]["count"] for m in sliced.values()) == metrics["candidates"] == len(items)
    cold = counts[items] == 0
    assert 0 < int(cold.sum()) < len(items)
    expected = ranking_metrics(logits[cold], labels[cold], users[cold], ["a", "b"])
    assert sliced["0"]["b"]["count"] == int(cold.sum())
    for task in ("a", "b"):
        for name in ("auc", "logloss"):
            assert sliced["0"][task][name] == pytest.approx(expected[task][name], nan_ok=True)


def _train(out, *overrides, nproc):
    cmd = recipe_torchrun(
        "--config",
        "configs/train/debug.yaml",
        "data.config=configs/data/taobao-sample.yaml",
        "train.epochs=1",
        f"output_dir={out}",
        *overrides,
        nproc=nproc,
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_uneven_evaluation_split_finishes_on_two_ranks(tmp_path):
    # The Taobao sample has 43 users with test candidates: 22 and 21 per rank, so with 21 users per
    # batch rank 0 holds 2 batches and rank 1 one. Before padding this hung in the sharded lookup.
    two = _train(tmp_path / "two", "data.eval_batch_size=21", nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    one = _train(tmp_path / "one", "data.eval_batch_size=21", nproc=1)
    assert one.returncode == 0, one.stderr[-3000:]
    metrics = [json.loads((tmp_path / n / "debug" / "metrics_final.json").read_text()) for n in ("two", "one")]
    assert metrics[0]["candidates"] == metrics[1]["candidates"] > 0  # every candidate scored once, none twice
    for m in metrics:  # the test metrics come with the slices by the item's training count
        task = next(iter(m["tasks"]))
        assert sum(s[task]["count"] for s in m["by_item_train_count"].values()) == m["candidates"]
