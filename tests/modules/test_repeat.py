"""The repeat codes of history tokens and candidates: the earlier action and the log2 gap."""

import torch

from dfgr_torchrec.modules import repeat as repeat_ops


def _ints(values):
    return torch.tensor(values, dtype=torch.int64)


def test_history_codes_hold_the_earlier_action_and_gap():
    items, actions, lengths = _ints([7, 8, 7, 7, 9, 9]), _ints([2, 0, 1, 3, 1, 0]), _ints([4, 2])
    codes = repeat_ops.history_codes(items, actions, lengths, None)
    # user 0: item 7 at 0, 2, 3 -> token 2 sees token 0 (action 2, gap 2), token 3 sees token 2 (action 1, gap 1)
    assert codes.tolist() == [[0, 0], [0, 0], [3, 2], [2, 1], [0, 0], [2, 1]]
    # session mode: tokens 2 and 3 share a time, so token 3 sees token 0 only, from the session's start
    times = _ints([1, 2, 3, 3, 1, 2])
    assert repeat_ops.history_codes(items, actions, lengths, times).tolist()[3] == [3, 2]


def test_candidate_codes_see_the_whole_history_or_the_earlier_times():
    h_items, h_actions, h_lengths = _ints([7, 8, 7]), _ints([2, 0, 1]), _ints([3, 0])
    c_items, c_lengths = _ints([7, 5, 7]), _ints([2, 1])
    codes = repeat_ops.candidate_codes(h_items, h_actions, h_lengths, None, c_items, c_lengths, None)
    assert codes.tolist() == [[2, 1], [0, 0], [0, 0]]
    timed = repeat_ops.candidate_codes(
        h_items, h_actions, h_lengths, _ints([1, 2, 5]), c_items, c_lengths, _ints([5, 5, 9])
    )
    assert timed.tolist()[0] == [3, 2]  # t=5 sees the interaction at t=1 only (3 interactions ago)
