"""Position and time-gap encodings added to every token."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def time_gap_buckets(gaps: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """Log2 buckets of non-negative time gaps: 0 -> 0, [1, 2) -> 1, [2, 4) -> 2, ..."""
    gaps = gaps.clamp(min=0).to(torch.float64)
    buckets = torch.floor(torch.log2(gaps + 1.0)).to(torch.int64)
    return buckets.clamp(max=num_buckets - 1)


def gaps_to_previous(timestamps: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """For jagged timestamps, ``t_i - t_{i-1}`` inside each sequence (0 for the first element)."""
    previous = torch.roll(timestamps, 1)
    return torch.where(positions > 0, timestamps - previous, torch.zeros_like(timestamps))


class PositionTimeEncoding(nn.Module):
    """Learned absolute-position and time-gap embeddings, summed into one additive encoding.

    Positions count interactions from the start of the (truncated) sequence, so a candidate
    scored after ``n`` history interactions gets position ``n``: the same encoding the
    training-time fake token at position ``n`` gets.

    Args:
        dim: encoding width (the model width).
        max_seq_len: size of the position table; later positions share the last row.
        num_time_buckets: log2 time-gap buckets, 0 disables time encoding.
        use_position: whether to add the position embedding.
        device: where to allocate (``"meta"`` for DistributedModelParallel).
    """

    def __init__(
        self,
        dim: int,
        max_seq_len: int,
        num_time_buckets: int,
        use_position: bool = True,
        device: Optional[torch.device] = None,
    ) -> None:
        super().__init__()
        self.max_seq_len = max_seq_len
        self.num_time_buckets = num_time_buckets
        # Plain parameters (not nn.Embedding) so that DistributedModelParallel, which calls
        # reset_parameters on modules that own meta parameters, applies this init.
        self.position = nn.Parameter(torch.empty(max_seq_len, dim, device=device)) if use_position else None
        self.time_gap = (
            nn.Parameter(torch.empty(num_time_buckets, dim, device=device)) if num_time_buckets > 0 else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for table in (self.position, self.time_gap):
            if table is not None:
                nn.init.normal_(table, std=0.02)

    def forward(self, positions: torch.Tensor, time_gaps: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """Returns ``[total, dim]`` or None when every encoding is off."""
        encoding = None
        if self.position is not None:
            encoding = F.embedding(positions.clamp(max=self.max_seq_len - 1), self.position)
        if self.time_gap is not None and time_gaps is not None:
            gap = F.embedding(time_gap_buckets(time_gaps, self.num_time_buckets), self.time_gap)
            encoding = gap if encoding is None else encoding + gap
        elif self.time_gap is not None and self.training and torch.is_grad_enabled():
            # No timestamps, no time encoding; the table stays in the autograd graph with a zero
            # gradient, so DistributedDataParallel's check that every parameter gets one passes.
            zero = self.time_gap[:1].sum() * 0.0
            encoding = zero.expand(positions.shape[0], self.time_gap.shape[1]) if encoding is None else encoding + zero
        return encoding
