import pytest
import torch

from dfgr_torchrec.serving.cache import HistoryCache
from dfgr_torchrec.serving.history import HistoryState


def _state(n, d=4, layers=2):
    t = torch.zeros(n, d)
    return HistoryState(
        tokens=t,
        timestamps=torch.zeros(n, dtype=torch.int64),
        order_keys=torch.arange(n),
        keys=torch.zeros(layers, n, 1, d),
        values=torch.zeros(layers, n, 1, d),
    )


def test_lru_by_bytes_holds_the_budget_and_counts():
    size = _state(10).nbytes
    cache = HistoryCache(max_bytes=3 * size)
    for user in "abc":
        cache.put(user, _state(10))
    assert cache.stats.bytes == 3 * size and len(cache) == 3
    assert cache.get("a") is not None  # a is now the most recent: b goes first
    cache.put("d", _state(10))
    assert "b" not in cache and {"a", "c", "d"} <= {u for u in "acd" if u in cache}
    assert cache.get("b") is None
    assert cache.stats.as_dict() == {"hits": 1, "misses": 1, "evictions": 1, "bytes": 3 * size, "entries": 3}
    cache.put("e", _state(25))  # bigger: two must go
    assert cache.stats.bytes <= 3 * size and cache.stats.evictions >= 3


def test_replacing_a_state_counts_its_bytes_once_and_oversized_states_are_not_kept():
    size = _state(10).nbytes
    cache = HistoryCache(max_bytes=2 * size)
    cache.put("a", _state(10))
    cache.put("a", _state(10))
    assert cache.stats.bytes == size and len(cache) == 1
    cache.put("huge", _state(100))
    assert "huge" not in cache and cache.stats.bytes <= 2 * size
    assert cache.pop("a") is None or cache.stats.bytes == 0


def test_budget_must_be_positive():
    with pytest.raises(ValueError, match="max_bytes"):
        HistoryCache(0)
