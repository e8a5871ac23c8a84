"""The context token helpers: one row placed before each user's sequence, and its time."""

import torch
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec.modules.context_token import context_timestamps, prepend_per_user, with_context_token


def test_prepend_puts_one_row_before_each_sequence_including_empty_ones():
    values = torch.arange(10.0).reshape(5, 2)  # users of 2, 0 and 3 rows
    lengths = torch.tensor([2, 0, 3])
    first = -torch.arange(1.0, 7.0).reshape(3, 2)
    out, new_lengths, kept = prepend_per_user(values, lengths, first)
    assert new_lengths.tolist() == [3, 1, 4]
    expected = torch.cat([first[0:1], values[0:2], first[1:2], first[2:3], values[2:5]])
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    torch.testing.assert_close(out[kept], values, atol=0, rtol=0)
    assert kept.tolist() == [False, True, True, False, False, True, True, True]


def test_context_time_is_one_unit_before_the_first_interaction_else_the_earliest_candidate():
    history = JaggedTensor(values=torch.tensor([10, 12, 30]), lengths=torch.tensor([2, 0, 1, 0]))
    candidates = JaggedTensor(values=torch.tensor([15, 8, 7, 25]), lengths=torch.tensor([1, 2, 1, 0]))
    assert context_timestamps(history).tolist() == [9, -1, 29, -1]  # without history or candidates: 0 - 1
    # the history decides whenever there is one (a candidate before it changes nothing)
    assert context_timestamps(history, candidates).tolist() == [9, 6, 29, -1]


def test_with_context_token_moves_tokens_and_times_together():
    tokens = JaggedTensor(values=torch.ones(3, 4), lengths=torch.tensor([1, 2]))
    times = JaggedTensor(values=torch.tensor([5, 8, 9]), lengths=torch.tensor([1, 2]))
    context = torch.zeros(2, 4)
    out, out_times, kept = with_context_token(tokens, context, times, context_timestamps(times))
    assert out.lengths().tolist() == out_times.lengths().tolist() == [2, 3]
    assert out_times.values().tolist() == [4, 5, 7, 8, 9]
    assert out.values()[:, 0].tolist() == [0, 1, 0, 1, 1]
    assert kept.sum().item() == 3
