"""``dfgr data synth``: synthetic interaction logs at any scale, deterministic by seed.

Every random number is a hash of ``(seed, stream, user or item, position, ...)``, so:

- nothing of size ``num_items`` is ever built: an item's latent vector and biases are hashed
  from its id on demand, so a vocabulary of 10**8 costs no memory;
- users are generated chunk by chunk and the output does not depend on the chunk size;
- the same config always writes the same bytes.

Items follow a power law (rank = id: low ids are popular) and so do sequence lengths. Each
action type ``k`` fires with probability
``sigmoid(type_bias_k + item_bias_k + affinity_scale * <user, item> + history_weight * <recent, item>)``,
where ``recent`` is a moving average of the items the user recently acted on (first action
type). A sequence model can read both the user's taste and their recent drift from the
history, which a popularity baseline cannot.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List

import numpy as np
import yaml
from tqdm import tqdm

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_STREAM_ITEM, _STREAM_LEN, _STREAM_USER, _STREAM_ACT, _STREAM_GAP, _STREAM_SESSION = range(1, 7)
_STREAM_ITEM_VEC, _STREAM_ITEM_BIAS, _STREAM_START = range(7, 10)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic is the point)."""
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def _hash(*keys: Any) -> np.ndarray:
    arrays = np.broadcast_arrays(*[np.asarray(k).astype(np.uint64) for k in keys])
    h = np.zeros(arrays[0].shape, dtype=np.uint64)
    for a in arrays:
        h = _mix(h ^ a)
    return h


def _uniform(*keys: Any) -> np.ndarray:
    """Uniform in (0, 1), a pure function of the keys."""
    return ((_hash(*keys) >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def _normal(*keys: Any) -> np.ndarray:
    u1 = _uniform(*keys, 0)
    u2 = _uniform(*keys, 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)


def _power_law(u: np.ndarray, low: float, high: float, exponent: float) -> np.ndarray:
    """Inverse CDF of density ~ x**-exponent on [low, high)."""
    if abs(exponent - 1.0) < 1e-9:
        return low * (high / low) ** u
    a = 1.0 - exponent
    return (low**a + u * (high**a - low**a)) ** (1.0 / a)


@dataclass
class SynthConfig:
    """What to generate; every field is validated and named in errors."""

    num_users: int = 10_000
    num_items: int = 1_000_000
    item_popularity_exponent: float = 1.1
    min_seq_len: int = 10
    max_seq_len: int = 500
    seq_len_exponent: float = 1.5
    action_types: List[str] = field(default_factory=lambda: ["click", "like", "share"])
    latent_dim: int = 8
    affinity_scale: float = 2.0
    history_weight: float = 2.0
    session_prob: float = 0.2
    seed: int = 0
    start_time: int = 1_600_000_000
    chunk_users: int = 4096

    def __post_init__(self) -> None:
        def need(ok: bool, key: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"{key}: expected {expected}, got {getattr(self, key)!r}")

        for key in ("num_users", "num_items", "min_seq_len", "max_seq_len", "latent_dim", "chunk_users"):
            need(isinstance(getattr(self, key), int) and getattr(self, key) > 0, key, "a positive integer")
        need(self.num_items <= 10**9, "num_items", "at most 10**9")
        need(self.min_seq_len <= self.max_seq_len, "max_seq_len", f">= min_seq_len ({self.min_seq_len})")
        need(self.item_popularity_exponent > 0, "item_popularity_exponent", "a positive number")
        need(self.seq_len_exponent > 0, "seq_len_exponent", "a positive number")
        need(0.0 <= self.session_prob < 1.0, "session_prob", "a number in [0, 1)")
        need(len(self.action_types) > 0 and len(set(self.action_types)) == len(self.action_types), "action_types", "unique names")
        need(self.seed >= 0, "seed", "an integer >= 0")

    @property
    def type_bias(self) -> np.ndarray:
        """Later action types are rarer (e.g. like and share below click)."""
        return -0.5 - 1.0 * np.arange(len(self.action_types))


def item_vectors(config: SynthConfig, items: np.ndarray) -> np.ndarray:
    """``[n, latent_dim]`` latent vectors hashed from the item ids."""
    dims = np.arange(config.latent_dim)
    return _normal(config.seed, _STREAM_ITEM_VEC, items[:, None], dims[None, :]) / math.sqrt(config.latent_dim)


def item_bias(config: SynthConfig, items: np.ndarray) -> np.ndarray:
    """``[n, action types]`` per-item biases hashed from the item ids."""
    types = np.arange(len(config.action_types))
    return 0.5 * _normal(config.seed, _STREAM_ITEM_BIAS, items[:, None], types[None, :])


def action_probabilities(config: SynthConfig, users: np.ndarray, items: np.ndarray, recent: np.ndarray) -> np.ndarray:
    vec = item_vectors(config, items)
    logits = (
        config.type_bias[None, :]
        + item_bias(config, items)
        + config.affinity_scale * (users * vec).sum(-1, keepdims=True)
        + config.history_weight * (recent * vec).sum(-1, keepdims=True)
    )
    return 1.0 / (1.0 + np.exp(-logits))


def _chunk(config: SynthConfig, first: int, last: int) -> np.ndarray:
    """Rows ``[user, item, timestamp, actions...]`` of users ``first..last-1``, user-major."""
    cfg = config
    users = np.arange(first, last, dtype=np.int64)
    n = len(users)
    lengths = np.floor(
        _power_law(_uniform(cfg.seed, _STREAM_LEN, users), cfg.min_seq_len, cfg.max_seq_len + 1, cfg.seq_len_exponent)
    ).astype(np.int64).clip(cfg.min_seq_len, cfg.max_seq_len)
    taste = _normal(cfg.seed, _STREAM_USER, users[:, None], np.arange(cfg.latent_dim)[None, :])
    recent = np.zeros((n, cfg.latent_dim))
    previous = np.full(n, -1, dtype=np.int64)
    clock = cfg.start_time + (_uniform(cfg.seed, _STREAM_START, users) * 86_400 * 30).astype(np.int64)
    width = len(cfg.action_types)
    out = np.zeros((n, int(lengths.max()), 3 + width), dtype=np.int64)
    for t in range(int(lengths.max())):
        active = np.flatnonzero(lengths > t)
        u = users[active]
        items = np.floor(
            _power_law(_uniform(cfg.seed, _STREAM_ITEM, u, t), 1.0, cfg.num_items + 1.0, cfg.item_popularity_exponent)
        ).astype(np.int64).clip(1, cfg.num_items) - 1
        p = action_probabilities(cfg, taste[active], items, recent[active])
        acted = _uniform(cfg.seed, _STREAM_ACT, u[:, None], t, np.arange(width)[None, :]) < p
        gap = np.ceil(-np.log(_uniform(cfg.seed, _STREAM_GAP, u, t)) * 3600).astype(np.int64)
        same_session = (_uniform(cfg.seed, _STREAM_SESSION, u, t) < cfg.session_prob) & (t > 0)
        gap[same_session & (items != previous[active])] = 0  # a repeat of the last item is a new event
        previous[active] = items
        clock[active] += gap
        recent[active] = np.where(acted[:, :1], 0.7 * recent[active] + 0.3 * item_vectors(cfg, items), recent[active])
        out[active, t, 0] = u
        out[active, t, 1] = items
        out[active, t, 2] = clock[active]
        out[active, t, 3:] = acted
    return out[np.arange(out.shape[1])[None, :] < lengths[:, None]]


def generate(config: SynthConfig, out_path: str, progress: bool = True) -> Dict[str, Any]:
    """Writes the log as TSV (header ``user_id item_id timestamp <action types>``) and a summary JSON."""
    start = time.perf_counter()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = f"{out_path}.tmp"
    rows = 0
    positives = np.zeros(len(config.action_types), dtype=np.int64)
    with open(tmp, "w") as f, tqdm(total=config.num_users, unit="user", desc="synth", disable=not progress) as bar:
        f.write("\t".join(["user_id", "item_id", "timestamp", *config.action_types]) + "\n")
        for first in range(0, config.num_users, config.chunk_users):
            last = min(first + config.chunk_users, config.num_users)
            chunk = _chunk(config, first, last)
            np.savetxt(f, chunk, fmt="%d", delimiter="\t")
            rows += len(chunk)
            positives += chunk[:, 3:].sum(0)
            bar.update(last - first)
    os.replace(tmp, out_path)
    seconds = time.perf_counter() - start
    summary = {
        "path": out_path,
        "rows": rows,
        "users": config.num_users,
        "per_action": dict(zip(config.action_types, positives.tolist())),
        "bytes": os.path.getsize(out_path),
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds) if seconds > 0 else None,
        "config": asdict(config),
    }
    with open(f"{out_path}.summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def write_data_config(config: SynthConfig, log_path: str, yaml_path: str) -> None:
    """The data YAML that `dfgr data prepare` reads this log with."""
    data = {
        "name": f"synth-{config.num_users}u-{config.num_items}i-s{config.seed}",
        "source": {
            "path": log_path,
            "format": "tsv",
            "header": True,
            "columns": {"user": "user_id", "item": "item_id", "timestamp": "timestamp"},
            # a popular item can recur inside one session (same timestamp): counted, not kept twice
            "duplicates": "skip",
        },
        "actions": {name: {"column": name} for name in config.action_types},
        "split": {"valid_per_user": 1, "test_per_user": 1},
    }
    os.makedirs(os.path.dirname(os.path.abspath(yaml_path)), exist_ok=True)
    with open(yaml_path, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
