"""Repeat matching: the latest strictly earlier occurrence, against a brute-force loop."""

import random

import torch

from dfgr_torchrec.ops.repeat import log_gap_buckets, previous_occurrence


def _ints(values):
    return torch.tensor(values, dtype=torch.int64)


def test_previous_occurrence_equals_a_brute_force_search():
    rng = random.Random(0)
    for _ in range(200):
        n_h, n_q = rng.randint(0, 12), rng.randint(0, 6)
        h_items, h_users = (
            _ints([rng.randint(0, 4) for _ in range(n_h)]),
            _ints(sorted(rng.randint(0, 2) for _ in range(n_h))),
        )
        h_keys = _ints([rng.randint(0, 5) for _ in range(n_h)])
        q_items, q_users = (
            _ints([rng.randint(0, 4) for _ in range(n_q)]),
            _ints([rng.randint(0, 2) for _ in range(n_q)]),
        )
        q_keys = _ints([rng.randint(0, 6) for _ in range(n_q)])
        got = previous_occurrence(h_items, h_users, h_keys, q_items, q_users, q_keys).tolist()
        for q in range(n_q):
            earlier = [
                (int(h_keys[j]), j)
                for j in range(n_h)
                if h_users[j] == q_users[q] and h_items[j] == q_items[q] and h_keys[j] < q_keys[q]
            ]
            assert got[q] == (max(earlier)[1] if earlier else -1)


def test_gap_buckets_are_log2_and_capped():
    assert log_gap_buckets(_ints([1, 2, 3, 4, 7, 8, 127, 128, 10**9]), 8).tolist() == [1, 2, 2, 3, 3, 4, 7, 8, 8]
