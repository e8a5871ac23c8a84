"""Thin helpers over fbgemm's jagged ops.

A jagged tensor here is ``values`` ``[total, ...]`` plus ``offsets`` ``[B + 1]``. Padding is
always to the batch's longest sequence, never to a fixed maximum.
"""

from __future__ import annotations

import math

import fbgemm_gpu  # noqa: F401  (registers torch.ops.fbgemm)
import torch


def lengths_to_offsets(lengths: torch.Tensor) -> torch.Tensor:
    """``[B]`` lengths -> ``[B + 1]`` offsets, starting at 0."""
    return torch.ops.fbgemm.asynchronous_complete_cumsum(lengths.to(torch.int64))


def offsets_to_lengths(offsets: torch.Tensor) -> torch.Tensor:
    return offsets[1:] - offsets[:-1]


def max_length(lengths: torch.Tensor) -> int:
    """Longest sequence in the batch (0 for an empty batch)."""
    return int(lengths.max().item()) if lengths.numel() > 0 else 0


def positions_in_sequence(offsets: torch.Tensor, total: int) -> torch.Tensor:
    """For every jagged element, its index inside its own sequence (0-based), ``[total]``."""
    lengths = offsets_to_lengths(offsets)
    starts = torch.repeat_interleave(offsets[:-1], lengths, output_size=total)
    return torch.arange(total, device=offsets.device, dtype=torch.int64) - starts


def repeat_per_element(per_sequence: torch.Tensor, lengths: torch.Tensor, total: int) -> torch.Tensor:
    """Broadcasts one value per sequence to each of that sequence's elements."""
    return torch.repeat_interleave(per_sequence, lengths, dim=0, output_size=total)


def to_padded(values: torch.Tensor, offsets: torch.Tensor, max_len: int, padding_value: float = 0.0) -> torch.Tensor:
    """``[total, *inner]`` -> ``[B, max_len, *inner]`` (differentiable)."""
    inner = values.shape[1:]
    flat = values.reshape(values.shape[0], math.prod(inner))
    padded = torch.ops.fbgemm.jagged_to_padded_dense(flat, [offsets], [max_len], padding_value)
    return padded.view(padded.shape[0], max_len, *inner)


def to_jagged(padded: torch.Tensor, offsets: torch.Tensor, total: int) -> torch.Tensor:
    """``[B, max_len, *inner]`` -> ``[total, *inner]`` (differentiable)."""
    b, max_len = padded.shape[:2]
    inner = padded.shape[2:]
    flat = padded.reshape(b, max_len, math.prod(inner))
    values = torch.ops.fbgemm.dense_to_jagged(flat, [offsets], total)[0]
    return values.view(total, *inner)


def interleave(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Row-interleaves two aligned jagged value tensors: a0, b0, a1, b1, ...

    Each sequence of length n becomes one of length 2n at offsets ``2 * offsets``, because
    the element order of ``first``/``second`` is already grouped by sequence.
    """
    return torch.stack([first, second], dim=1).reshape(first.shape[0] * 2, *first.shape[1:])
