import torch

from dfgr_torchrec.modules.encodings import PositionTimeEncoding, gaps_to_previous, time_gap_buckets
from dfgr_torchrec.modules.stack import session_layout


def test_time_gap_buckets_are_log2_and_capped():
    gaps = torch.tensor([0, 1, 2, 3, 4, 1000, 10**12])
    assert time_gap_buckets(gaps, 16).tolist() == [0, 1, 1, 2, 2, 9, 15]


def test_gaps_restart_per_sequence():
    times = torch.tensor([5, 7, 100, 103])
    positions = torch.tensor([0, 1, 0, 1])
    assert gaps_to_previous(times, positions).tolist() == [0, 2, 0, 3]


def test_session_layout_shares_position_and_gap_within_a_session():
    times = torch.tensor([5, 5, 9, 9, 9, 12, 1, 1])
    positions = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])
    pos, gaps = session_layout(times, positions, "history")
    assert pos.tolist() == [0, 0, 2, 2, 2, 5, 0, 0]
    assert gaps.tolist() == [0, 0, 4, 4, 4, 3, 0, 0]


def test_positions_beyond_the_table_share_the_last_row():
    enc = PositionTimeEncoding(4, max_seq_len=3, num_time_buckets=0)
    out = enc(torch.tensor([2, 5]), None)
    assert torch.equal(out[0], out[1])


def test_everything_off_returns_none():
    enc = PositionTimeEncoding(4, max_seq_len=3, num_time_buckets=0, use_position=False)
    assert enc(torch.tensor([0]), torch.tensor([1])) is None
