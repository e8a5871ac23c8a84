"""A cache of users' history states under a memory budget, least recently used evicted first."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Dict, Hashable, Optional

from dfgr_torchrec.serving.history import HistoryState


@dataclass
class CacheStats:
    """Counters since the cache was made: lookups that found a state, lookups that did not,
    states evicted to stay under budget, and the bytes and states held now."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    bytes: int = 0
    entries: int = 0

    def as_dict(self) -> Dict[str, int]:
        return asdict(self)


class HistoryCache:
    """User key -> :class:`HistoryState` (or anything with ``nbytes``), holding at most
    ``max_bytes`` (LRU by bytes).

    A state larger than the whole budget is not kept (counted as an eviction).

    Args:
        max_bytes: the memory budget of all states together.

    Example::

        cache = HistoryCache(max_bytes=512 << 20)
        state = cache.get("u1")            # None on a miss
        if state is None:
            state = scorer.encode(batch)[0]
            cache.put("u1", state)
        cache.stats.as_dict()              # {'hits': 0, 'misses': 1, 'evictions': 0, 'bytes': ..., 'entries': 1}
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes: expected a positive number of bytes, got {max_bytes}")
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._states: "OrderedDict[Hashable, HistoryState]" = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, user: Hashable) -> bool:
        return user in self._states

    def get(self, user: Hashable) -> Optional[HistoryState]:
        state = self._states.get(user)
        if state is None:
            self.stats.misses += 1
            return None
        self._states.move_to_end(user)
        self.stats.hits += 1
        return state

    def put(self, user: Hashable, state: HistoryState) -> None:
        """Stores (or replaces) ``user``'s state, then evicts the least recently used over budget."""
        self.pop(user)
        self._states[user] = state
        self.stats.bytes += state.nbytes
        while self.stats.bytes > self.max_bytes and self._states:
            _, evicted = self._states.popitem(last=False)
            self.stats.bytes -= evicted.nbytes
            self.stats.evictions += 1
        self.stats.entries = len(self._states)

    def pop(self, user: Hashable) -> Optional[HistoryState]:
        """Removes ``user``'s state (not an eviction) and returns it."""
        state = self._states.pop(user, None)
        if state is not None:
            self.stats.bytes -= state.nbytes
            self.stats.entries = len(self._states)
        return state
