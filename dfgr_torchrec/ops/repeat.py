"""Repeat matching on jagged sequences: which earlier history interaction holds the same item.

For every query (a fake-flow token, a candidate) :func:`previous_occurrence` finds the latest
history interaction of the same user with the same item and a strictly smaller order key
(position, or time in session mode), hash-free: one lexicographic sort of history and queries
together by ``(user, item, key, history after query)`` and a segment scan (a running maximum of
history positions that is valid only inside the query's ``(user, item)`` run). No Python loop
over tokens; everything is plain torch on flat (jagged) tensors.

Example::

    match = previous_occurrence(h_items, h_users, h_keys, q_items, q_users, q_keys)  # [Q], -1: none
    gaps = log_gap_buckets(q_index - h_index[match], num_buckets=8)
"""

from __future__ import annotations

import torch


def _lexsort(columns) -> torch.Tensor:
    """The permutation that sorts rows by ``columns`` (first = most significant), stably."""
    order = torch.arange(columns[0].shape[0], device=columns[0].device)
    for column in reversed(columns):
        order = order[torch.sort(column[order], stable=True).indices]
    return order


def previous_occurrence(
    h_items: torch.Tensor,
    h_users: torch.Tensor,
    h_keys: torch.Tensor,
    q_items: torch.Tensor,
    q_users: torch.Tensor,
    q_keys: torch.Tensor,
) -> torch.Tensor:
    """``[Q]`` int64: for each query, the index into the history of the latest interaction with the
    same user and item and ``h_keys[j] < q_keys[q]`` (the largest key; of equal keys, the last
    index), or -1 when there is none. All arguments are flat int64 tensors."""
    n_h = h_items.shape[0]
    items = torch.cat([h_items, q_items]).to(torch.int64)
    users = torch.cat([h_users, q_users]).to(torch.int64)
    keys = torch.cat([h_keys, q_keys]).to(torch.int64)
    is_history = torch.cat(
        [torch.ones(n_h, dtype=torch.int64, device=items.device), torch.zeros_like(q_items, dtype=torch.int64)]
    )
    # at equal keys a query sorts before the history rows: they are not strictly earlier
    order = _lexsort([users, items, keys, is_history])
    s_users, s_items, s_hist = users[order], items[order], is_history[order].bool()
    position = torch.arange(order.shape[0], device=items.device)
    last_history = torch.cummax(torch.where(s_hist, position, torch.full_like(position, -1)), dim=0).values
    new_run = torch.ones_like(s_hist)
    if order.shape[0] > 1:
        new_run[1:] = (s_users[1:] != s_users[:-1]) | (s_items[1:] != s_items[:-1])
    run_start = torch.cummax(torch.where(new_run, position, torch.zeros_like(position)), dim=0).values
    found = last_history >= run_start
    match = torch.where(found, order[last_history.clamp(min=0)], torch.full_like(order, -1))
    out = torch.full_like(q_items, -1, dtype=torch.int64)
    is_query = ~s_hist
    out[order[is_query] - n_h] = match[is_query]
    return out


def log_gap_buckets(gaps: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """``1 + min(floor(log2(gap)), num_buckets - 1)`` for gaps >= 1 (1 -> 1, 2-3 -> 2, 4-7 -> 3, ...)."""
    gaps = gaps.clamp(min=1).to(torch.int64)
    exponent = torch.zeros_like(gaps)  # floor(log2) by shifting: exact for int64, no float rounding
    shifted = gaps.clone()
    for _ in range(max(num_buckets - 1, 0)):
        shifted = shifted >> 1
        exponent = exponent + (shifted > 0).to(torch.int64)
    return 1 + exponent.clamp(max=num_buckets - 1)
