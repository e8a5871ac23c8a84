"""What DFGR and MetaGR share: token encodings, the block stack, and the two-flow loop."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from dfgr_torchrec.config import InteractionConfig, MaskMode
from dfgr_torchrec.modules.block import GenerativeBlock
from dfgr_torchrec.modules.encodings import PositionTimeEncoding, gaps_to_previous
from dfgr_torchrec.ops.attention import AttentionSpec
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
        self.output_norm = nn.LayerNorm(config.d_model, eps=config.norm_eps, device=device)

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
        positions = positions_in_sequence(offsets, total)
        if not self.session_mode:
            gaps = gaps_to_previous(timestamps, positions) if timestamps is not None else None
            return positions, gaps, positions
        if timestamps is None:
            raise ValueError(f"mask_mode='session' needs {what} timestamps")
        positions, gaps = session_layout(timestamps, positions, what)
        return positions, gaps, timestamps

    def candidate_layout(
        self,
        history_offsets: torch.Tensor,
        history_timestamps: Optional[torch.Tensor],
        candidate_offsets: torch.Tensor,
        candidate_timestamps: Optional[torch.Tensor],
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor, Optional[AttentionSpec]]:
        """Positions, time gaps and order keys of candidates appended after each user's history.

        A candidate is encoded like the fake token of the interaction that would come next:
        its position is the number of history interactions it sees (all of them by position;
        those with ``t_j < t_candidate`` in session mode) and its gap is measured from the
        last of those. Returns ``(positions, gaps, keys, spec)``; ``spec`` is the candidate ->
        history :class:`AttentionSpec` in session mode (already built to count), else None.
        """
        if (history_timestamps is None) != (candidate_timestamps is None):
            raise ValueError("give timestamps for both history and candidates, or for neither")
        if self.session_mode and candidate_timestamps is None:
            raise ValueError("mask_mode='session' needs history and candidate timestamps")
        candidate_lengths = candidate_offsets[1:] - candidate_offsets[:-1]
        total = int(candidate_offsets[-1].item())
        spec = None
        if self.session_mode:
            spec = AttentionSpec(
                candidate_offsets, history_offsets, candidate_timestamps, history_timestamps, strict=True
            )
            counts = spec.visible_counts()
            keys = candidate_timestamps
        else:
            counts = repeat_per_element(history_offsets[1:] - history_offsets[:-1], candidate_lengths, total)
            keys = counts
        gaps = None
        if candidate_timestamps is not None:
            first = repeat_per_element(history_offsets[:-1], candidate_lengths, total)
            last = (first + counts - 1).clamp(min=0)
            last_time = history_timestamps[last] if history_timestamps.numel() > 0 else torch.zeros_like(counts)
            gaps = torch.where(counts > 0, candidate_timestamps - last_time, torch.zeros_like(candidate_timestamps))
        return counts, gaps, keys, spec

    def run_two_flows(
        self,
        real: torch.Tensor,
        fake: torch.Tensor,
        real_spec: AttentionSpec,
        fake_spec: AttentionSpec,
        real_self_term: bool = False,
    ) -> torch.Tensor:
        """Runs the dual-flow recurrence through every block and returns the fake flow's output.

        Both flows share the block weights (one projection matmul over both). The real flow
        attends to itself under ``real_spec``; the fake flow's queries attend to the real
        flow's keys/values under ``fake_spec`` plus their own key/value (and so do the real
        queries when ``real_self_term``, for a strict ``real_spec``). After the last block
        nothing reads the real flow, so its attention is skipped there.
        """
        n_real = real.shape[0]
        for index, block in enumerate(self.blocks):
            u, q, k, v = block.project(torch.cat([real, fake]))
            fake_attention = block.attend(
                q[n_real:], k[:n_real], v[:n_real], fake_spec, self_k=k[n_real:], self_v=v[n_real:]
            )
            if index == len(self.blocks) - 1:
                fake = block.finish(fake, fake_attention, u[n_real:])
            else:
                real_k, real_v = k[:n_real], v[:n_real]
                real_attention = block.attend(
                    q[:n_real],
                    real_k,
                    real_v,
                    real_spec,
                    self_k=real_k if real_self_term else None,
                    self_v=real_v if real_self_term else None,
                )
                both = block.finish(torch.cat([real, fake]), torch.cat([real_attention, fake_attention]), u)
                real, fake = both[:n_real], both[n_real:]
        return self.output_norm(fake)


def session_layout(timestamps: torch.Tensor, positions: torch.Tensor, what: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Positions and time gaps in session mode, where same-timestamp interactions are one session.

    Every interaction of a session gets the position of the session's first interaction and
    the gap from the previous session, so a session's items are encoded exactly like
    candidates scored after the history that precedes the session (training equals inference).
    """
    starts_user = positions == 0
    previous = torch.roll(timestamps, 1)
    if bool(((timestamps < previous) & ~starts_user).any()):
        raise ValueError(f"{what} timestamps must be sorted (non-decreasing) within each user for mask_mode='session'")
    new_session = starts_user | (timestamps != previous)
    index = torch.arange(timestamps.shape[0], device=timestamps.device)
    session_start = torch.cummax(torch.where(new_session, index, torch.zeros_like(index)), dim=0).values
    session_positions = positions[session_start]
    before_start = (session_start - 1).clamp(min=0)
    gaps = torch.where(session_positions > 0, timestamps - timestamps[before_start], torch.zeros_like(timestamps))
    return session_positions, gaps
