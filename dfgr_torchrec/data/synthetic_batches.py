"""Generated behaviour sequences with a planted signal, for demos, tests and benchmarks.

Each item has a latent vector and a per-task bias; each user a latent preference. The chance
that a user takes action ``t`` on an item is ``sigmoid(bias_t(item) + scale * <user, item>)``,
so a sequence model that reads a user's past actions can infer the preference and beat a
per-item popularity baseline. Actions are stored as one bitmask id per interaction
(``action`` feature, ``2 ** num_tasks`` rows): bit ``t`` set when task ``t`` fired.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, NamedTuple, Optional

import torch
from torchrec import KeyedJaggedTensor

from dfgr_torchrec.batch import SequenceBatch
from dfgr_torchrec.features import ACTION_FEATURE, ITEM_FEATURE, candidate_feature


class _Stream(NamedTuple):
    """Consecutive interactions of one user: item ids, ``[n, tasks]`` labels, timestamps."""

    items: torch.Tensor
    labels: torch.Tensor
    times: torch.Tensor


@dataclass
class SyntheticSequences:
    """A deterministic world of items and users to draw batches from.

    Args:
        num_items: item vocabulary.
        num_tasks: action types (one binary task each).
        latent_dim: width of the planted user/item vectors.
        affinity_scale: how strongly the user-item affinity drives actions.
        session_prob: chance that an interaction shares the previous one's timestamp.
        seed: seeds the world (items); batches take their own generator.
    """

    num_items: int = 1000
    num_tasks: int = 1
    latent_dim: int = 8
    affinity_scale: float = 2.0
    session_prob: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        g = torch.Generator().manual_seed(self.seed)
        self.item_vectors = torch.randn(self.num_items, self.latent_dim, generator=g) / self.latent_dim**0.5
        self.item_bias = torch.randn(self.num_items, self.num_tasks, generator=g) * 0.5

    @property
    def action_vocab_size(self) -> int:
        return 2**self.num_tasks

    def _labels(self, users: torch.Tensor, items: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        affinity = (users * self.item_vectors[items]).sum(-1, keepdim=True) * self.affinity_scale
        p = torch.sigmoid(self.item_bias[items] + affinity)
        return (torch.rand(p.shape, generator=g) < p).to(torch.float32)

    def _draw_items(self, total: int, popularity: torch.distributions.Pareto, g: torch.Generator) -> torch.Tensor:
        """``total`` item ids with power-law popularity: low ids are popular."""
        u = torch.rand(total, generator=g)
        ranks = (popularity.icdf(u.clamp(max=0.999999)) - 1.0) * 10.0
        return ranks.to(torch.int64).clamp(max=self.num_items - 1)

    def _draw_times(self, total: int, g: torch.Generator) -> torch.Tensor:
        """``total`` non-decreasing timestamps; a gap is 0 (same session) with ``session_prob``."""
        gaps = torch.randint(1, 3600, (total,), generator=g)
        gaps[torch.rand(total, generator=g) < self.session_prob] = 0
        return 1_600_000_000 + torch.cumsum(gaps, 0)

    def _stream(
        self, user: torch.Tensor, total: int, popularity: torch.distributions.Pareto, g: torch.Generator
    ) -> _Stream:
        """``total`` consecutive interactions of the user with preference ``user``."""
        items = self._draw_items(total, popularity, g)
        labels = self._labels(user.expand(total, -1), items, g)
        return _Stream(items, labels, self._draw_times(total, g))

    def batch(
        self,
        batch_size: int,
        min_len: int,
        max_len: int,
        num_candidates: int,
        generator: torch.Generator,
        lengths: Optional[torch.Tensor] = None,
    ) -> SequenceBatch:
        """Draws ``batch_size`` users with history lengths in ``[min_len, max_len]``.

        Candidates are the interactions that come next in each user's stream (so they carry
        true labels) and share one request timestamp after the history. ``lengths`` fixes
        the history lengths instead of drawing them.
        """
        g = generator
        if lengths is None:
            lengths = torch.randint(min_len, max_len + 1, (batch_size,), generator=g)
        elif lengths.shape != (batch_size,):
            raise ValueError(f"lengths: expected shape ({batch_size},), got {tuple(lengths.shape)}")
        total_per_user = lengths + num_candidates
        users = torch.randn(batch_size, self.latent_dim, generator=g)
        popularity = torch.distributions.Pareto(1.0, 1.2)
        streams = [self._stream(users[b], int(total_per_user[b]), popularity, g) for b in range(batch_size)]
        return self._assemble(streams, lengths, num_candidates)

    def _assemble(self, streams: List[_Stream], lengths: torch.Tensor, num_candidates: int) -> SequenceBatch:
        """Splits each user's stream into history and candidates and packs them into a batch."""
        ns = [int(n) for n in lengths]
        history = torch.cat([s.items[:n] for s, n in zip(streams, ns)])
        labels = torch.cat([s.labels[:n] for s, n in zip(streams, ns)])
        bits = (2 ** torch.arange(self.num_tasks)).to(torch.float32)
        actions = (labels @ bits).to(torch.int64)
        cand_items = torch.cat([s.items[n:] for s, n in zip(streams, ns)])
        cand_lengths = torch.full((len(streams),), num_candidates, dtype=torch.int64)
        features = KeyedJaggedTensor.from_lengths_sync(
            keys=[ITEM_FEATURE, ACTION_FEATURE, candidate_feature(ITEM_FEATURE)],
            values=torch.cat([history, actions, cand_items]),
            lengths=torch.cat([lengths, lengths, cand_lengths]),
        )
        return SequenceBatch(
            features=features,
            timestamps=torch.cat([s.times[:n] for s, n in zip(streams, ns)]),
            labels=labels,
            candidate_timestamps=torch.cat([_request_times(s.times, n, num_candidates) for s, n in zip(streams, ns)]),
            candidate_labels=torch.cat([s.labels[n:] for s, n in zip(streams, ns)]),
        )


def _request_times(times: torch.Tensor, n: int, num_candidates: int) -> torch.Tensor:
    """The candidates' shared timestamp: one second after the last of the ``n`` history events."""
    request_time = times[n - 1] + 1 if n > 0 else times[0]
    return request_time.expand(num_candidates).clone()
