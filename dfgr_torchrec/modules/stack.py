"""What DFGR and MetaGR share: token encodings, the block stack, and the two-flow loop."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from dfgr_torchrec.config import InteractionConfig, MaskMode
from dfgr_torchrec.modules.block import GenerativeBlock
from dfgr_torchrec.modules.encodings import PositionTimeEncoding, gaps_to_previous
from dfgr_torchrec.ops.attention import AttentionMask
from dfgr_torchrec.ops.jagged import positions_in_sequence, repeat_per_element


class GenerativeStack(nn.Module):
    """Encodings + ``num_layers`` :class:`GenerativeBlock` + a final LayerNorm."""

    def __init__(self, config: InteractionConfig, device: Optional[torch.device] = None) -> None:
        super().__init__()
        self.config = config
        self.encoding = PositionTimeEncoding(
            config.d_model,
            config.max_seq_len,
            config.num_time_buckets,
            use_position=config.use_position_encoding,
            device=device,
        )
        self.blocks = nn.ModuleList([GenerativeBlock(config, device=device) for _ in range(config.num_layers)])
        self.output_norm = nn.LayerNorm(config.d_model, device=device)

    @property
    def session_mode(self) -> bool:
        return self.config.mask_mode == MaskMode.SESSION

    def encode(self, values: torch.Tensor, positions: torch.Tensor, time_gaps: Optional[torch.Tensor]) -> torch.Tensor:
        encoding = self.encoding(positions, time_gaps)
        return values if encoding is None else values + encoding

    def history_layout(
        self, offsets: torch.Tensor, total: int, timestamps: Optional[torch.Tensor], what: str
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
        """Positions, time gaps and order keys (positions, or timestamps in session mode)."""
        if self.session_mode and timestamps is None:
            raise ValueError(f"mask_mode='session' needs {what} timestamps")
        positions = positions_in_sequence(offsets, total)
        gaps = gaps_to_previous(timestamps, positions) if timestamps is not None else None
        keys = timestamps if self.session_mode else positions
        return positions, gaps, keys

    def candidate_layout(
        self,
        history_offsets: torch.Tensor,
        history_timestamps: Optional[torch.Tensor],
        candidate_lengths: torch.Tensor,
        candidate_timestamps: Optional[torch.Tensor],
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Positions and time gaps of candidates appended after each user's history.

        Every candidate sits at position ``len(history)``, and its time gap is measured from
        the last history interaction: exactly what the fake token of the next interaction gets.
        """
        if (history_timestamps is None) != (candidate_timestamps is None):
            raise ValueError("give timestamps for both history and candidates, or for neither")
        if self.session_mode and candidate_timestamps is None:
            raise ValueError("mask_mode='session' needs history and candidate timestamps")
        total = int(candidate_lengths.sum().item())
        history_lengths = history_offsets[1:] - history_offsets[:-1]
        positions = repeat_per_element(history_lengths, candidate_lengths, total)
        gaps = None
        if candidate_timestamps is not None:
            has_history = history_lengths > 0
            last_index = (history_offsets[1:] - 1).clamp(min=0)
            last_time = history_timestamps[last_index] if history_timestamps.numel() > 0 else history_lengths * 0
            last_time = repeat_per_element(last_time, candidate_lengths, total)
            has_history = repeat_per_element(has_history, candidate_lengths, total)
            gaps = torch.where(has_history, candidate_timestamps - last_time, torch.zeros_like(candidate_timestamps))
        return positions, gaps

    def run_two_flows(
        self,
        real: torch.Tensor,
        fake: torch.Tensor,
        real_mask: AttentionMask,
        fake_mask: AttentionMask,
    ) -> torch.Tensor:
        """Runs the dual-flow recurrence through every block and returns the fake flow's output.

        Both flows share the block weights (one projection matmul over both). The real flow
        attends to itself under ``real_mask``; the fake flow's queries attend to the real
        flow's keys/values under ``fake_mask`` plus their own key/value. After the last block
        nothing reads the real flow, so its attention is skipped there.
        """
        n_real = real.shape[0]
        for index, block in enumerate(self.blocks):
            u, q, k, v = block.project(torch.cat([real, fake]))
            fake_attention = block.attend(
                q[n_real:], k[:n_real], v[:n_real], fake_mask, self_k=k[n_real:], self_v=v[n_real:]
            )
            if index == len(self.blocks) - 1:
                fake = block.finish(fake, fake_attention, u[n_real:])
            else:
                real_attention = block.attend(q[:n_real], k[:n_real], v[:n_real], real_mask)
                both = block.finish(torch.cat([real, fake]), torch.cat([real_attention, fake_attention]), u)
                real, fake = both[:n_real], both[n_real:]
        return self.output_norm(fake)
