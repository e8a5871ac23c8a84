"""Pointwise samples: each target's pooled history is exactly what DFGR's fake token may see."""

import pytest
import torch
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec.modules.embeddings import SequenceEmbeddings
from dfgr_torchrec.modules.pointwise import candidate_samples, prefix_mean, training_samples
from tests.modules.conftest import CANDIDATES, LENGTHS, sorted_times_with_sessions

D = 3


def _embeddings(seed=0):
    g = torch.Generator().manual_seed(seed)
    n, m = sum(LENGTHS), sum(CANDIDATES)
    return SequenceEmbeddings(
        items=JaggedTensor(values=torch.randn(n, D, generator=g), lengths=torch.tensor(LENGTHS)),
        actions=JaggedTensor(values=torch.randn(n, D, generator=g), lengths=torch.tensor(LENGTHS)),
        candidates=JaggedTensor(values=torch.randn(m, D, generator=g), lengths=torch.tensor(CANDIDATES)),
        users=torch.randn(len(LENGTHS), D, generator=g),
    )


def _brute_mean(values, rows):
    return values[rows].mean(0) if rows else torch.zeros(D)


def test_prefix_mean_by_hand():
    values = torch.tensor([[1.0], [2.0], [4.0], [8.0]])
    out = prefix_mean(values, torch.tensor([0, 0, 2, 1]), torch.tensor([0, 2, 2, 3]))
    assert out.flatten().tolist() == pytest.approx([0.0, 1.5, 6.0, 14 / 3])


def test_training_targets_pool_only_earlier_interactions_and_sessions():
    emb = _embeddings()
    times = sorted_times_with_sessions(LENGTHS)
    for session in (False, True):
        samples = training_samples(emb, times, session)
        starts = [sum(LENGTHS[:b]) for b in range(len(LENGTHS))]
        row = 0
        for b, n in enumerate(LENGTHS):
            for i in range(n):
                t = starts[b] + i
                seen = [starts[b] + j for j in range(n) if (times[starts[b] + j] < times[t] if session else j < i)]
                torch.testing.assert_close(samples.history_items[row], _brute_mean(emb.items.values(), seen))
                torch.testing.assert_close(samples.history_actions[row], _brute_mean(emb.actions.values(), seen))
                assert samples.visible[row] == len(seen) and samples.owner[row] == b
                torch.testing.assert_close(samples.user[row], emb.users[b])
                row += 1


def test_candidates_pool_the_history_they_may_see():
    emb = _embeddings(1)
    h_times = sorted_times_with_sessions(LENGTHS)
    g = torch.Generator().manual_seed(2)
    c_times = torch.randint(int(h_times.min()), int(h_times.max()) + 2, (sum(CANDIDATES),), generator=g)
    for session in (False, True):
        samples = candidate_samples(emb, h_times, c_times, session)
        h_start, row = 0, 0
        for n, m in zip(LENGTHS, CANDIDATES):
            for _ in range(m):
                rows = [h_start + j for j in range(n) if (not session or h_times[h_start + j] < c_times[row])]
                torch.testing.assert_close(samples.history_items[row], _brute_mean(emb.items.values(), rows))
                torch.testing.assert_close(samples.target[row], emb.candidates.values()[row])
                row += 1
            h_start += n
