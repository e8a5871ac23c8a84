import pytest
import torch

LENGTHS = [3, 1, 6, 2]  # ragged, with a length-1 user
CANDIDATES = [2, 3, 1, 4]


def sorted_times_with_sessions(lengths, seed=0, start=1000):
    """Non-decreasing times per user with ties (sessions of items shown together)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        gaps = torch.randint(0, 3, (n,), generator=g) * 7  # 0 gaps make sessions
        out.append(start + torch.cumsum(gaps, 0))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)
