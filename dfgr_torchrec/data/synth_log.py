"""``dfgr data synth``: synthetic interaction logs at any scale, deterministic by seed.

The log is a TSV file with a header row ``user_id  item_id  timestamp  <one 0/1 column per
action type>``: rows grouped by user (ascending ids ``0..num_users-1``), each user's rows in
chronological order (unix seconds, non-decreasing), and a ``<log>.summary.json`` beside it.

How it is generated (the planted model):

- **Counter-based randomness.** Every random number is a splitmix64 hash of
  ``(seed, stream, user or item, position, ...)`` rather than a draw from a stateful generator,
  so a user's rows depend on nothing but the config and the user id: the output is the same
  bytes whatever ``chunk_users`` is, and the same config always writes the same file. (This
  replaces "one generator per (seed, chunk index)", which would tie the output to the chunking.)
- **No per-item tables.** An item's latent vector and its per-action biases are hashed from its
  id on demand (Box-Muller on hash bits), so ``num_items = 10**8`` costs no memory.
- **Items** follow a Zipf-like power law: a rank ``r >= 1`` is drawn from the continuous density
  ``~ r**-item_popularity_exponent`` on ``[1, num_items + 1)`` and floored, and **item id =
  rank - 1**, so low ids are the popular ones (kept on purpose: easy to inspect; the prepared
  data set re-indexes ids anyway). **Sequence lengths** follow the same kind of power law
  between ``min_seq_len`` and ``max_seq_len`` (``seq_len_exponent``).
- **Actions.** User ``u`` has a taste vector ``x_u ~ N(0, I)``; item ``i`` has ``v_i ~
  N(0, I / latent_dim)`` (so ``<x_u, v_i> ~ N(0, 1)``) and biases ``b_ik ~ N(0, 0.5**2)``.
  Action type ``k`` (its own Bernoulli, independent given the probability) fires with
  ``sigmoid(type_bias_k + b_ik + affinity_scale * <x_u, v_i> + history_weight * <h_ut, v_i>)``
  where ``type_bias_k = -0.5 - k`` (later action types are rarer: click > like > share) and
  ``h_ut`` is the mean vector of the last ``history_window`` items the user acted on
  positively (any action type) before this step, zero before the first. Which items a user
  sees is popularity only; what they do with them depends on taste and recent history, so a
  sequence model can beat a popularity baseline. `replay_probabilities` recomputes these exact
  probabilities for the rows of a generated log (the Bayes-optimal scores, an AUC ceiling).
- **Repeats** (``repeat_prob > 0``; off by default, and then nothing below runs, so every log
  written without it keeps its bytes). With probability ``repeat_prob`` the next item is not
  drawn from popularity but uniformly from the user's last ``repeat_window`` interactions; and
  whenever the item is among those (drawn so or by chance) the last action type (the rarest,
  "buy"-like) gets ``+repeat_boost`` on its logit, the full boost when an earlier occurrence in
  the window was acted on positively and half of it otherwise. The rule "the item occurs earlier
  in this user's history" then predicts the last task well; `replay_probabilities` includes it.
- **Time.** A user starts at ``start_time`` plus up to 30 days; with probability
  ``session_prob`` the next interaction shares the previous one's timestamp (shown together),
  otherwise it comes an exponential gap (mean one hour, at least one second) later. A session
  never holds the same item twice and at most 16 interactions, so no (user, item, timestamp)
  repeats and the effective chance is a little below ``session_prob``.

The work is vectorised per chunk of users: one step per sequence position, across the users
of the chunk still active at that position (sorted longest first, so they are a prefix), and
the rows are formatted to text by numpy, not per row in Python.

Determinism caveat: bytes are identical for the same config on the same numpy build and CPU
family; ``exp``/``log``/``cos`` may differ in the last ulp elsewhere, which changes an outcome
only on an exact threshold (vanishingly rare).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import yaml

from dfgr_torchrec.progress import progress as progress_bar

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB

# Independent hash streams (part of the key of every hash).
_STREAM_LEN, _STREAM_START, _STREAM_TASTE, _STREAM_STEP, _STREAM_ITEM = range(1, 6)
# Sub-streams of one (user, position) step hash.
_SUB_ITEM, _SUB_TIME, _SUB_ACT = 1, 2, 3
_SUB_REPEAT = 0x7E7E  # far above the action sub-streams (_SUB_ACT + j)

_MAX_SESSION = 16  # interactions sharing one timestamp at most
_START_SPREAD_S = 30 * 86_400  # users start within 30 days of start_time
_MEAN_GAP_S = 3600.0  # mean gap between sessions
_BITMAP_MAX_ITEMS = 2**27  # distinct items are counted with a bit set up to this vocabulary (16 MiB)
_RESERVED_COLUMNS = ("user_id", "item_id", "timestamp")
_ACTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# counter-based randomness


def _mix_int(x: int) -> int:
    """splitmix64 finaliser on a Python int."""
    x = (x + _GOLDEN) & _MASK
    x = ((x ^ (x >> 30)) * _M1) & _MASK
    x = ((x ^ (x >> 27)) * _M2) & _MASK
    return x ^ (x >> 31)


def _key(*parts: int) -> int:
    """A 64-bit key folded from integers (seed, stream, position...)."""
    h = 0
    for part in parts:
        h = _mix_int(h ^ (int(part) & _MASK))
    return h


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place on a uint64 array the caller owns (wrapping is the point)."""
    x += np.uint64(_GOLDEN)
    x ^= x >> np.uint64(30)
    x *= np.uint64(_M1)
    x ^= x >> np.uint64(27)
    x *= np.uint64(_M2)
    x ^= x >> np.uint64(31)
    return x


def _hash(key: int, ids: np.ndarray) -> np.ndarray:
    """``mix(key ^ id)`` for non-negative integer ids: a fresh uint64 array."""
    h = np.asarray(ids, dtype=np.int64).astype(np.uint64)
    h ^= np.uint64(key)
    return _mix(h)


def _sub(h: np.ndarray, sub: int) -> np.ndarray:
    """An independent hash derived from ``h`` for sub-stream ``sub``."""
    return _mix(h ^ np.uint64(_key(0x5B, sub)))


def _uniform53(h: np.ndarray) -> np.ndarray:
    """Uniform in (0, 1) from the top 53 bits."""
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def _uniform32_pair(h: np.ndarray):
    """Two uniforms in (0, 1) from the two 32-bit halves."""
    hi = ((h >> np.uint64(32)).astype(np.float64) + 0.5) * 2.0**-32
    lo = ((h & np.uint64(0xFFFFFFFF)).astype(np.float64) + 0.5) * 2.0**-32
    return hi, lo


def _normals(base: np.ndarray, count: int) -> np.ndarray:
    """``[count, len(base)]`` standard normals hashed from ``base`` (two per hash, Box-Muller)."""
    pairs = (count + 1) // 2
    h = np.stack([_sub(base, j) for j in range(pairs)])
    u1, u2 = _uniform32_pair(h)
    r = np.sqrt(-2.0 * np.log(u1))
    theta = (2.0 * math.pi) * u2
    return np.concatenate([r * np.cos(theta), r * np.sin(theta)])[:count]


def _power_law(u: np.ndarray, low: float, high: float, exponent: float) -> np.ndarray:
    """Inverse CDF of the density ``~ x**-exponent`` on ``[low, high)``."""
    if abs(exponent - 1.0) < 1e-9:
        return low * (high / low) ** u
    a = 1.0 - exponent
    return (low**a + u * (high**a - low**a)) ** (1.0 / a)


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Column-wise dot product of ``[d, n]`` arrays, summed in a fixed order (chunk-independent bits)."""
    acc = a[0] * b[0]
    for j in range(1, a.shape[0]):
        acc += a[j] * b[j]
    return acc


# --------------------------------------------------------------------------------------------
# config


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, (bool, np.bool_)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float range
        return False


@dataclass
class SynthConfig:
    """What to generate. Every field is validated on construction; errors name the field."""

    num_users: int = 10_000
    num_items: int = 1_000_000  # up to 10**12; nothing of this size is ever built
    item_popularity_exponent: float = 1.1  # Zipf-like exponent of item ranks (0: uniform)
    min_seq_len: int = 10
    max_seq_len: int = 500
    seq_len_exponent: float = 1.5  # power-law exponent of sequence lengths (0: uniform)
    action_types: List[str] = field(default_factory=lambda: ["click", "like", "share"])
    latent_dim: int = 8
    affinity_scale: float = 2.0  # weight of <user taste, item vector> in every action's logit
    history_weight: float = 3.0  # weight of <mean of recent positive items, item vector>
    history_window: int = 5  # how many recent positively acted-on items make that mean
    session_prob: float = 0.2  # chance the next interaction shares the previous timestamp
    repeat_prob: float = 0.0  # chance the next item is one of the user's last repeat_window items (0: off)
    repeat_window: int = 128  # how many recent interactions a repeat is drawn from and matched against
    repeat_boost: float = 6.0  # added to the last action type's logit of a repeated item (half if never acted on)
    seed: int = 0
    start_time: int = 1_600_000_000  # unix seconds
    chunk_users: int = 4096  # users generated per chunk (memory vs per-step overhead; no effect on output)

    def __post_init__(self) -> None:
        def need(ok: bool, key: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"{key}: expected {expected}, got {getattr(self, key)!r}")

        ints = {  # key: (minimum, maximum)
            "num_users": (1, 2**40),
            "num_items": (1, 10**12),
            "min_seq_len": (1, 10**7),
            "max_seq_len": (1, 10**7),
            "latent_dim": (1, 4096),
            "history_window": (1, 4096),
            "repeat_window": (1, 4096),
            "seed": (0, 2**63 - 1),
            "start_time": (0, 2**40),
            "chunk_users": (1, 2**24),
        }
        for key, (low, high) in ints.items():
            value = getattr(self, key)
            need(_is_int(value) and low <= value <= high, key, f"an integer in [{low}, {high}]")
            setattr(self, key, int(value))
        need(self.min_seq_len <= self.max_seq_len, "max_seq_len", f"an integer >= min_seq_len ({self.min_seq_len})")
        for key in ("item_popularity_exponent", "seq_len_exponent"):
            need(_is_number(getattr(self, key)) and getattr(self, key) >= 0, key, "a finite number >= 0")
        need(_is_number(self.repeat_prob) and 0.0 <= self.repeat_prob <= 1.0, "repeat_prob", "a number in [0, 1]")
        for key in ("affinity_scale", "history_weight", "repeat_boost"):
            need(_is_number(getattr(self, key)), key, "a finite number")
        need(_is_number(self.session_prob) and 0.0 <= self.session_prob < 1.0, "session_prob", "a number in [0, 1)")
        floats = ("item_popularity_exponent", "seq_len_exponent", "affinity_scale", "history_weight", "session_prob")
        for key in (*floats, "repeat_prob", "repeat_boost"):
            setattr(self, key, float(getattr(self, key)))
        names = self.action_types
        need(
            isinstance(names, (list, tuple))
            and len(names) > 0
            and all(isinstance(n, str) and _ACTION_NAME.match(n) for n in names)
            and len(set(names)) == len(names)
            and not set(names) & set(_RESERVED_COLUMNS),
            "action_types",
            f"a non-empty list of unique column names (letters, digits, _ . -), none of {_RESERVED_COLUMNS}",
        )
        self.action_types = list(names)

    @property
    def type_bias(self) -> np.ndarray:
        """``-0.5 - k`` for the k-th action type: later types are rarer (like, share below click)."""
        return -0.5 - np.arange(len(self.action_types), dtype=np.float64)


# --------------------------------------------------------------------------------------------
# the planted model


def _user_taste(config: SynthConfig, users: np.ndarray) -> np.ndarray:
    """``[latent_dim, n]`` user taste vectors, N(0, I)."""
    return _normals(_hash(_key(config.seed, _STREAM_TASTE), users), config.latent_dim)


def _item_features(config: SynthConfig, items: np.ndarray):
    """``([latent_dim, n] item vectors, [action types, n] item biases)`` hashed from item ids."""
    d, w = config.latent_dim, len(config.action_types)
    z = _normals(_hash(_key(config.seed, _STREAM_ITEM), items), d + w)
    return z[:d] * (1.0 / math.sqrt(d)), 0.5 * z[d:]


def user_vectors(config: SynthConfig, users: np.ndarray) -> np.ndarray:
    """``[n, latent_dim]`` taste vectors of the given user ids."""
    return _user_taste(config, np.asarray(users)).T.copy()


def item_vectors(config: SynthConfig, items: np.ndarray) -> np.ndarray:
    """``[n, latent_dim]`` latent vectors of the given item ids (hashed, no table)."""
    return _item_features(config, np.asarray(items))[0].T.copy()


def item_biases(config: SynthConfig, items: np.ndarray) -> np.ndarray:
    """``[n, action types]`` per-action biases of the given item ids (hashed, no table)."""
    return _item_features(config, np.asarray(items))[1].T.copy()


def _probabilities(config: SynthConfig, taste, vec, bias, recent, repeat=None) -> np.ndarray:
    """``[action types, n]`` action probabilities; all arguments are column-major ``[*, n]``;
    ``repeat`` (``[n]``) is added to the last action type's logit."""
    shared = config.affinity_scale * _dot(taste, vec)
    shared += config.history_weight * _dot(recent, vec)
    logits = bias + config.type_bias[:, None]
    logits += shared
    if repeat is not None:
        logits[-1] += repeat
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-logits))


class _History:
    """Per user, the vectors of the last ``window`` positively acted-on items (a ring buffer)."""

    def __init__(self, window: int, dim: int, n: int) -> None:
        self.buf = np.zeros((window, dim, n))
        self.pos = np.zeros(n, dtype=np.int64)
        self.count = np.zeros(n, dtype=np.int64)

    def mean(self, k: int) -> np.ndarray:
        """``[dim, k]`` mean over the first ``k`` users (zero before their first positive)."""
        total = self.buf[0, :, :k].copy()
        for slot in range(1, self.buf.shape[0]):
            total += self.buf[slot, :, :k]
        return total / np.maximum(self.count[:k], 1)

    def push(self, rows: np.ndarray, vec: np.ndarray) -> None:
        """Appends ``vec`` (``[dim, len(rows)]``) to the given users' windows."""
        pos = self.pos[rows]
        self.buf[pos, :, rows] = vec.T
        self.pos[rows] = (pos + 1) % self.buf.shape[0]
        self.count[rows] = np.minimum(self.count[rows] + 1, self.buf.shape[0])


class _Seen:
    """Per user, the last ``repeat_window`` items and whether each was acted on (a ring buffer):
    what repeats are drawn from and what boosts the last action type."""

    def __init__(self, config: SynthConfig, n: int) -> None:
        self.prob, self.boost_size = config.repeat_prob, config.repeat_boost
        self.items = np.full((config.repeat_window, n), -1, dtype=np.int64)
        self.acted = np.zeros((config.repeat_window, n), dtype=bool)
        self.pos = np.zeros(n, dtype=np.int64)
        self.count = np.zeros(n, dtype=np.int64)

    def draw(self, h: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``items`` with a repeat in place of the first ``len(items)`` users' draws where one is drawn."""
        k = len(items)
        want, pick = _uniform32_pair(_sub(h, _SUB_REPEAT))
        rows = np.flatnonzero((want < self.prob) & (self.count[:k] > 0))
        slot = np.minimum(np.floor(pick[rows] * self.count[rows]).astype(np.int64), self.count[rows] - 1)
        out = items.copy()
        out[rows] = self.items[slot, rows]
        return out

    def boost(self, items: np.ndarray) -> np.ndarray:
        """``[k]`` the last action type's extra logit for the first ``k`` users' items."""
        k = len(items)
        match = self.items[:, :k] == items[None, :]
        seen, acted = match.any(0), (match & self.acted[:, :k]).any(0)
        return np.where(acted, self.boost_size, np.where(seen, 0.5 * self.boost_size, 0.0))

    def push(self, items: np.ndarray, positive: np.ndarray) -> None:
        k = len(items)
        pos, rows = self.pos[:k], np.arange(k)
        self.items[pos, rows] = items
        self.acted[pos, rows] = positive
        self.pos[:k] = (pos + 1) % self.items.shape[0]
        self.count[:k] = np.minimum(self.count[:k] + 1, self.items.shape[0])


def _lengths(config: SynthConfig, users: np.ndarray) -> np.ndarray:
    u = _uniform53(_hash(_key(config.seed, _STREAM_LEN), users))
    x = _power_law(u, config.min_seq_len, config.max_seq_len + 1.0, config.seq_len_exponent)
    return np.clip(np.floor(x).astype(np.int64), config.min_seq_len, config.max_seq_len)


@dataclass
class _ChunkLayout:
    """A chunk's users, and the same users sorted longest first so that the users still
    active at step ``t`` are a prefix ``[:active_at[t]]``."""

    users_in_order: np.ndarray
    lengths_in_order: np.ndarray
    users: np.ndarray  # sorted longest first
    lengths: np.ndarray
    row_start: np.ndarray  # first output row of each (sorted) user
    rows: int
    active_at: np.ndarray  # users active at each step


def _chunk_layout(config: SynthConfig, first: int, last: int) -> _ChunkLayout:
    users_in_order = np.arange(first, last, dtype=np.int64)
    lengths_in_order = _lengths(config, users_in_order)
    row_start_in_order = np.concatenate([[0], np.cumsum(lengths_in_order)[:-1]])
    order = np.argsort(-lengths_in_order, kind="stable")
    lengths = lengths_in_order[order]
    return _ChunkLayout(
        users_in_order=users_in_order,
        lengths_in_order=lengths_in_order,
        users=users_in_order[order],
        lengths=lengths,
        row_start=row_start_in_order[order],
        rows=int(lengths_in_order.sum()),
        active_at=np.searchsorted(-lengths, -np.arange(int(lengths.max())), side="left"),
    )


class _Clock:
    """Per user, the current timestamp and the items shown in the current session."""

    def __init__(self, config: SynthConfig, users: np.ndarray) -> None:
        self.session_prob = config.session_prob
        self.time = config.start_time + np.floor(
            _uniform53(_hash(_key(config.seed, _STREAM_START), users)) * _START_SPREAD_S
        ).astype(np.int64)
        self.session_items = np.full((_MAX_SESSION, len(users)), -1, dtype=np.int64)
        self.session_size = np.zeros(len(users), dtype=np.int64)

    def _continues(self, t: int, session_u: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Which of the first ``len(items)`` users stay in their session: drawn so, the session
        not full, and the item not already shown in it."""
        k = len(items)
        size = self.session_size[:k]
        cont = np.zeros(k, dtype=bool)
        if t > 0:
            want = np.flatnonzero((session_u < self.session_prob) & (size < _MAX_SESSION))
            if len(want):
                repeat = np.zeros(len(want), dtype=bool)
                for slot in range(int(size[want].max())):
                    repeat |= (self.session_items[slot, want] == items[want]) & (slot < size[want])
                cont[want] = ~repeat
        return cont

    def step(self, t: int, h: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Timestamps of step ``t`` of the first ``len(items)`` users: the session's (same
        timestamp) or a new session's, a gap later."""
        k = len(items)
        gap_u, session_u = _uniform32_pair(_sub(h, _SUB_TIME))
        cont = self._continues(t, session_u, items)
        gap = np.maximum(np.ceil(-np.log(gap_u) * _MEAN_GAP_S), 1.0).astype(np.int64)
        if t > 0:
            self.time[:k] += np.where(cont, 0, gap)
        slot = np.where(cont, self.session_size[:k], 0)
        self.session_items[slot, np.arange(k)] = items
        self.session_size[:k] = slot + 1
        return self.time[:k]


def _step_hash(step_key: np.ndarray, t: int) -> np.ndarray:
    """The hash of step ``t`` of each of the given users (from their step keys)."""
    h = step_key ^ np.uint64(_key(t))
    _mix(h)
    return h


def _draw_items(config: SynthConfig, h: np.ndarray) -> np.ndarray:
    """Item ids from the popularity power law (id = rank - 1)."""
    rank = _power_law(_uniform53(_sub(h, _SUB_ITEM)), 1.0, config.num_items + 1.0, config.item_popularity_exponent)
    return np.clip(np.floor(rank).astype(np.int64), 1, config.num_items) - 1


def _draw_actions(h: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``[action types, n]`` booleans, each action fired with its probability in ``p``."""
    w = p.shape[0]
    draws = [u for j in range((w + 1) // 2) for u in _uniform32_pair(_sub(h, _SUB_ACT + j))][:w]
    return np.stack(draws) < p


def _chunk_columns(layout: _ChunkLayout, num_actions: int, keep_probabilities: bool) -> Dict[str, np.ndarray]:
    """The output columns of a chunk: ``user`` filled in, the others to be written step by step."""
    result = {
        "user": np.repeat(layout.users_in_order, layout.lengths_in_order),
        "item": np.empty(layout.rows, dtype=np.int64),
        "timestamp": np.empty(layout.rows, dtype=np.int64),
        "actions": np.empty((num_actions, layout.rows), dtype=np.uint8),
    }
    if keep_probabilities:
        result["probabilities"] = np.empty((num_actions, layout.rows))
    return result


def _chunk(config: SynthConfig, first: int, last: int, keep_probabilities: bool = False) -> Dict[str, np.ndarray]:
    """The rows of users ``first..last-1``, user-major: ``user``, ``item``, ``timestamp``
    (``[rows]`` int64), ``actions`` (``[action types, rows]`` uint8) and, when asked,
    ``probabilities`` (``[action types, rows]``, what each action was drawn with)."""
    cfg = config
    layout = _chunk_layout(cfg, first, last)
    taste = _user_taste(cfg, layout.users)
    step_key = _hash(_key(cfg.seed, _STREAM_STEP), layout.users)
    clock = _Clock(cfg, layout.users)
    history = _History(cfg.history_window, cfg.latent_dim, len(layout.users))
    result = _chunk_columns(layout, len(cfg.action_types), keep_probabilities)
    seen = _Seen(cfg, len(layout.users)) if cfg.repeat_prob > 0 else None

    for t, k in enumerate(layout.active_at.tolist()):
        h = _step_hash(step_key[:k], t)
        items = _draw_items(cfg, h) if seen is None else seen.draw(h, _draw_items(cfg, h))
        vec, bias = _item_features(cfg, items)
        p = _probabilities(cfg, taste[:, :k], vec, bias, history.mean(k), None if seen is None else seen.boost(items))
        acted = _draw_actions(h, p)
        times = clock.step(t, h, items)
        positive = np.flatnonzero(acted.any(0))
        history.push(positive, vec[:, positive])
        if seen is not None:
            seen.push(items, acted.any(0))

        at = layout.row_start[:k] + t
        result["item"][at] = items
        result["timestamp"][at] = times
        result["actions"][:, at] = acted
        if keep_probabilities:
            result["probabilities"][:, at] = p
    return result


def replay_probabilities(
    config: SynthConfig, user_ids: np.ndarray, item_ids: np.ndarray, actions: np.ndarray
) -> np.ndarray:
    """The exact probabilities each row's actions were drawn with, ``[rows, action types]``.

    ``user_ids``, ``item_ids`` and ``actions`` (``[rows, action types]`` 0/1) are the columns of
    a log written by `generate` with ``config`` (or any log in that layout: rows grouped by
    user, chronological); the history term is rebuilt from the earlier rows of each user.
    """
    cfg = config
    users_col = np.asarray(user_ids, dtype=np.int64)
    items_col = np.asarray(item_ids, dtype=np.int64)
    acts = np.asarray(actions).reshape(len(users_col), -1) != 0
    w, d = len(cfg.action_types), cfg.latent_dim
    if acts.shape[1] != w:
        raise ValueError(f"actions: expected {w} columns ({cfg.action_types}), got {acts.shape[1]}")
    out = np.empty((w, len(users_col)))
    if len(users_col) == 0:
        return out.T
    start = np.flatnonzero(np.concatenate([[True], users_col[1:] != users_col[:-1]]))
    if len(np.unique(users_col[start])) != len(start):
        raise ValueError("user_ids: expected rows grouped by user (each user's rows contiguous)")
    length = np.diff(np.concatenate([start, [len(users_col)]]))
    order = np.argsort(-length, kind="stable")
    start, length = start[order], length[order]
    taste = _user_taste(cfg, users_col[start])
    history = _History(cfg.history_window, d, len(start))
    seen = _Seen(cfg, len(start)) if cfg.repeat_prob > 0 else None
    active_at = np.searchsorted(-length, -np.arange(int(length.max())), side="left")
    for t, k in enumerate(active_at.tolist()):
        at = start[:k] + t
        vec, bias = _item_features(cfg, items_col[at])
        repeat = None if seen is None else seen.boost(items_col[at])
        out[:, at] = _probabilities(cfg, taste[:, :k], vec, bias, history.mean(k), repeat)
        positive = np.flatnonzero(acts[at].any(1))
        history.push(positive, vec[:, positive])
        if seen is not None:
            seen.push(items_col[at], acts[at].any(1))
    return out.T.copy()


# --------------------------------------------------------------------------------------------
# writing


def _tsv_bytes(columns: Sequence[np.ndarray]) -> bytes:
    """Non-negative integer columns as TSV lines, formatted by numpy (no per-row Python)."""
    n = len(columns[0])
    if n == 0:
        return b""
    widths = [len(str(int(c.max()))) for c in columns]
    line = np.zeros((n, sum(widths) + len(columns)), dtype=np.uint8)  # 0 = no character
    pos = 0
    for c, width in zip(columns, widths):
        quotient, digit = np.divmod(c.astype(np.int64), 10)
        line[:, pos + width - 1] = digit + 48  # the last digit is always written (0 -> "0")
        for i in range(width - 2, -1, -1):  # the others only while the number has them
            present = quotient > 0
            quotient, digit = np.divmod(quotient, 10)
            line[:, pos + i] = (digit + 48) * present
        pos += width
        line[:, pos] = 9  # tab
        pos += 1
    line[:, pos - 1] = 10  # newline instead of the last tab
    flat = line.ravel()
    return flat[flat != 0].tobytes()


class _DistinctItems:
    """A bit per item id, for vocabularies up to ``_BITMAP_MAX_ITEMS`` (else counts nothing)."""

    def __init__(self, num_items: int) -> None:
        self.bits = np.zeros((num_items + 7) // 8, dtype=np.uint8) if num_items <= _BITMAP_MAX_ITEMS else None

    def add(self, items: np.ndarray) -> None:
        if self.bits is None or len(items) == 0:
            return
        unique = np.unique(items)
        byte = unique >> 3
        mask = (np.uint8(1) << (unique & 7).astype(np.uint8)).astype(np.uint8)
        first = np.flatnonzero(np.concatenate([[True], byte[1:] != byte[:-1]]))
        self.bits[byte[first]] |= np.bitwise_or.reduceat(mask, first)

    def count(self) -> Optional[int]:
        return None if self.bits is None else int(_POPCOUNT[self.bits].sum(dtype=np.int64))


def generate(config: SynthConfig, out_path: str, progress: bool = True) -> Dict[str, Any]:
    """Writes the log (TSV with a header) chunk by chunk, and ``<out_path>.summary.json``.

    Returns the summary: ``rows``, ``users``, ``distinct_items`` (None above 2**27 items),
    ``per_action`` positive counts, ``mean_seq_len``, ``bytes``, ``seconds``, ``rows_per_s``,
    ``path`` and the ``config``. The log is written to ``<out_path>.tmp`` and renamed.
    """
    start = time.perf_counter()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = f"{out_path}.tmp"
    rows = 0
    positives = np.zeros(len(config.action_types), dtype=np.int64)
    distinct = _DistinctItems(config.num_items)
    try:
        with (
            open(tmp, "wb") as f,
            progress_bar(total=config.num_users, unit="user", desc="synth", enabled=progress) as bar,
        ):
            f.write(("\t".join([*_RESERVED_COLUMNS, *config.action_types]) + "\n").encode())
            for first in range(0, config.num_users, config.chunk_users):
                last = min(first + config.chunk_users, config.num_users)
                chunk = _chunk(config, first, last)
                f.write(_tsv_bytes([chunk["user"], chunk["item"], chunk["timestamp"], *chunk["actions"]]))
                rows += len(chunk["item"])
                positives += chunk["actions"].sum(1, dtype=np.int64)
                distinct.add(chunk["item"])
                bar.update(last - first)
                bar.set_postfix(rows=rows, refresh=False)
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    seconds = time.perf_counter() - start
    summary = {
        "path": out_path,
        "rows": rows,
        "users": config.num_users,
        "distinct_items": distinct.count(),
        "per_action": dict(zip(config.action_types, positives.tolist())),
        "mean_seq_len": round(rows / config.num_users, 3),
        "bytes": os.path.getsize(out_path),
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds) if seconds > 0 else None,
        "config": asdict(config),
    }
    with open(f"{out_path}.summary.json", "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    return summary


def write_data_config(config: SynthConfig, log_path: str, yaml_path: str) -> None:
    """The data YAML that ``dfgr data prepare`` reads this log with (one task per action type)."""
    data = {
        "name": f"synth-{config.num_users}u-{config.num_items}i-s{config.seed}",
        "source": {
            "path": str(log_path),
            "format": "tsv",
            "header": True,
            "columns": {"user": "user_id", "item": "item_id", "timestamp": "timestamp"},
        },
        "actions": {name: {"column": name} for name in config.action_types},
        "split": {"valid_per_user": 1, "test_per_user": 1},
    }
    comment = (
        f"# written by dfgr data synth ({config.num_users} users, {config.num_items} items, seed {config.seed});\n"
        "# each action type becomes a task and a bit of the action bitmask\n"
    )
    os.makedirs(os.path.dirname(os.path.abspath(yaml_path)), exist_ok=True)
    with open(yaml_path, "w") as f:
        f.write(comment + yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
