"""Block tables: each user's jagged rows cut into fixed-size blocks, with the order-key range of each block.

A kernel program handles one block of one user; it finds the other side's blocks of the same
user through ``user_blocks`` and skips the blocks whose key range no row of its own block can
see. Nothing is padded to the batch's longest sequence: a batch of ragged users gets exactly
``sum_b ceil(L_b / block)`` programs per head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dfgr_torchrec.ops.jagged import offsets_to_lengths


@dataclass(frozen=True)
class BlockTable:
    """The blocks of one jagged side (queries or keys) at one block size.

    Attributes:
        user_blocks: ``[B + 1]`` int32: user ``b`` owns blocks ``user_blocks[b]:user_blocks[b + 1]``.
        start, end: ``[NB]`` int32: the block's first row and one past its last (absolute rows).
        user: ``[NB]`` int32: the owning user.
        key_min, key_max: ``[NB]`` int64: the smallest and largest order key in the block.
    """

    user_blocks: torch.Tensor
    start: torch.Tensor
    end: torch.Tensor
    user: torch.Tensor
    key_min: torch.Tensor
    key_max: torch.Tensor

    @property
    def num_blocks(self) -> int:
        return self.start.shape[0]


def block_table(offsets: torch.Tensor, keys: torch.Tensor, block: int) -> BlockTable:
    """The :class:`BlockTable` of the jagged side ``offsets``/``keys`` with ``block`` rows per block."""
    device = offsets.device
    offsets = offsets.to(torch.int64)
    lengths = offsets_to_lengths(offsets)
    counts = (lengths + block - 1) // block
    user_blocks = torch.zeros(counts.shape[0] + 1, dtype=torch.int64, device=device)
    torch.cumsum(counts, 0, out=user_blocks[1:])
    num_blocks = int(user_blocks[-1].item()) if counts.numel() else 0
    users = torch.repeat_interleave(torch.arange(counts.shape[0], device=device), counts, output_size=num_blocks)
    index_in_user = torch.arange(num_blocks, device=device) - user_blocks[:-1][users]
    start = offsets[:-1][users] + index_in_user * block
    end = torch.minimum(start + block, offsets[1:][users])
    # each row's block, for the per-block min/max of its keys
    total = keys.shape[0]
    row_users = torch.repeat_interleave(torch.arange(lengths.shape[0], device=device), lengths, output_size=total)
    row_block = user_blocks[:-1][row_users] + (torch.arange(total, device=device) - offsets[:-1][row_users]) // block
    big = torch.iinfo(torch.int64).max
    key_min = torch.full((num_blocks,), big, dtype=torch.int64, device=device)
    key_max = torch.full((num_blocks,), -big, dtype=torch.int64, device=device)
    key_min.scatter_reduce_(0, row_block, keys.to(torch.int64), reduce="amin")
    key_max.scatter_reduce_(0, row_block, keys.to(torch.int64), reduce="amax")
    as32 = lambda t: t.to(torch.int32).contiguous()  # noqa: E731
    return BlockTable(as32(user_blocks), as32(start), as32(end), as32(users), key_min, key_max)
