"""Thin helpers over fbgemm's jagged ops, with pure-torch equivalents where fbgemm is absent.

A jagged tensor here is ``values`` ``[total, ...]`` plus ``offsets`` ``[B + 1]``. Padding is
always to the batch's longest sequence, never to a fixed maximum.

fbgemm is optional here: a GPU box with only a CUDA torch (no CUDA fbgemm build) still imports
the attention op and its modules. :data:`HAS_FBGEMM` says which implementation runs; the
``torch_*`` functions are the fallbacks, tested equal to fbgemm's.
"""

from __future__ import annotations

import math

import torch

try:
    import fbgemm_gpu  # noqa: F401  (registers torch.ops.fbgemm)

    HAS_FBGEMM = True
except ImportError:  # pragma: no cover - exercised in a subprocess test
    HAS_FBGEMM = False


def lengths_to_offsets(lengths: torch.Tensor) -> torch.Tensor:
    """``[B]`` lengths -> ``[B + 1]`` offsets, starting at 0."""
    if HAS_FBGEMM:
        return torch.ops.fbgemm.asynchronous_complete_cumsum(lengths.to(torch.int64))
    return torch_lengths_to_offsets(lengths)


def torch_lengths_to_offsets(lengths: torch.Tensor) -> torch.Tensor:
    offsets = torch.zeros(lengths.shape[0] + 1, dtype=torch.int64, device=lengths.device)
    torch.cumsum(lengths.to(torch.int64), 0, out=offsets[1:])
    return offsets


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
    if not HAS_FBGEMM:
        return torch_to_padded(values, offsets, max_len, padding_value)
    inner = values.shape[1:]
    flat = values.reshape(values.shape[0], math.prod(inner))
    padded = torch.ops.fbgemm.jagged_to_padded_dense(flat, [offsets], [max_len], padding_value)
    return padded.view(padded.shape[0], max_len, *inner)


def to_jagged(padded: torch.Tensor, offsets: torch.Tensor, total: int) -> torch.Tensor:
    """``[B, max_len, *inner]`` -> ``[total, *inner]`` (differentiable)."""
    if not HAS_FBGEMM:
        return torch_to_jagged(padded, offsets, total)
    b, max_len = padded.shape[:2]
    inner = padded.shape[2:]
    flat = padded.reshape(b, max_len, math.prod(inner))
    values = torch.ops.fbgemm.dense_to_jagged(flat, [offsets], total)[0]
    return values.view(total, *inner)


def _padded_rows(offsets: torch.Tensor, max_len: int, total: int) -> tuple:
    """Each jagged element's row in the flattened ``[B * max_len]`` padded layout, and which elements fit.

    Elements past ``max_len`` in their sequence are cut, as fbgemm's ``jagged_to_padded_dense`` does.
    """
    lengths = offsets_to_lengths(offsets)
    owners = torch.repeat_interleave(torch.arange(lengths.shape[0], device=offsets.device), lengths, output_size=total)
    position = torch.arange(total, device=offsets.device) - offsets[:-1][owners]
    fits = position < max_len
    return owners * max_len + position, fits


def torch_to_padded(
    values: torch.Tensor, offsets: torch.Tensor, max_len: int, padding_value: float = 0.0
) -> torch.Tensor:
    """:func:`to_padded` in plain torch (differentiable)."""
    b, total = offsets.shape[0] - 1, values.shape[0]
    rows, fits = _padded_rows(offsets, max_len, total)
    inner = values.shape[1:]
    base = values.new_full((b * max_len, *inner), padding_value)
    if not bool(fits.all()):
        rows, values = rows[fits], values[fits]
    return base.index_copy(0, rows, values).view(b, max_len, *inner)


def torch_to_jagged(padded: torch.Tensor, offsets: torch.Tensor, total: int) -> torch.Tensor:
    """:func:`to_jagged` in plain torch (differentiable)."""
    b, max_len = padded.shape[:2]
    rows, fits = _padded_rows(offsets, max_len, total)
    flat = padded.reshape(b * max_len, *padded.shape[2:])
    if bool(fits.all()):
        return flat[rows]
    out = flat.new_zeros(total, *padded.shape[2:])
    return out.index_copy(0, torch.nonzero(fits).squeeze(1), flat[rows[fits]])


def interleave(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Row-interleaves two aligned jagged value tensors: a0, b0, a1, b1, ...

    Each sequence of length n becomes one of length 2n at offsets ``2 * offsets``, because
    the element order of ``first``/``second`` is already grouped by sequence.
    """
    return torch.stack([first, second], dim=1).reshape(first.shape[0] * 2, *first.shape[1:])
