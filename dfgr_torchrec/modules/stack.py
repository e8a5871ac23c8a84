"""What every generative stack shares (layouts, encodings, the scoring pass), and DFGR/MetaGR's block stack."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from dfgr_torchrec.config import InteractionConfig, MaskMode
from dfgr_torchrec.modules.block import GenerativeBlock
from dfgr_torchrec.modules.encodings import PositionTimeEncoding, gaps_to_previous
from dfgr_torchrec.modules.layer_loop import FinalRows, run_layers
from dfgr_torchrec.modules.layout import INTERLEAVED, ONE_TOKEN, TokenLayout
from dfgr_torchrec.ops.attention import AttentionSpec
from dfgr_torchrec.ops.jagged import interleave, positions_in_sequence, repeat_per_element


class TokenStack(nn.Module):
    """What every generative stack shares: its :class:`TokenLayout`, the position/time encodings, the
    layouts of histories and of candidates appended after them, and the scoring pass.

    A subclass provides ``config`` (:class:`InteractionConfig`), ``encoding``
    (:class:`PositionTimeEncoding`), ``blocks`` (what :func:`run_layers` runs) and ``output_norm``.
    """

    layout: TokenLayout = ONE_TOKEN
    config: InteractionConfig
    encoding: PositionTimeEncoding
    output_norm: nn.Module

    @property
    def session_mode(self) -> bool:
        return self.config.mask_mode == MaskMode.SESSION

    @property
    def cache_blocker(self) -> Optional[str]:
        """Why a history of this stack cannot be cached (its keys would depend on the candidates), or None."""
        return None

    def batch_scale_len(self, lengths: torch.Tensor) -> Optional[int]:
        """The pointwise normaliser of a batch whose users have ``lengths`` tokens; None: the blocks' constant."""
        return None

    def encode(self, values: torch.Tensor, positions: torch.Tensor, time_gaps: Optional[torch.Tensor]) -> torch.Tensor:
        encoding = self.encoding(positions, time_gaps)
        return values if encoding is None else values + encoding

    def history_input(self, tokens: torch.Tensor) -> torch.Tensor:
        """A history's tokens as the model hands them over -> the stack's own (HSTU's embedding MLPs)."""
        return tokens

    def candidate_input(self, candidates: torch.Tensor) -> torch.Tensor:
        """Candidate tokens as the model hands them over -> the stack's own."""
        return candidates

    def encode_candidates(
        self, candidates: torch.Tensor, positions: torch.Tensor, time_gaps: Optional[torch.Tensor]
    ) -> torch.Tensor:
        return self.encode(self.candidate_input(candidates), positions, time_gaps)

    def encode_history(
        self, tokens: torch.Tensor, positions: torch.Tensor, time_gaps: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """``[N * t, d]`` a history's encoded tokens from ``tokens`` ``[N, d]`` (``[N, 2, d]`` interleaved)."""
        tokens = self.history_input(tokens)
        if self.layout.tokens_per_interaction == 1:
            return self.encode(tokens, positions, time_gaps)
        return interleave(
            self.encode(tokens[:, 0], positions, time_gaps), self.encode(tokens[:, 1], positions, time_gaps)
        )

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

    def score_pass(
        self,
        history: torch.Tensor,
        history_offsets: torch.Tensor,
        history_times: Optional[torch.Tensor],
        candidates: torch.Tensor,
        candidate_offsets: torch.Tensor,
        candidate_times: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """The final state ``[M, d]`` of every candidate appended after its user's history.

        Args:
            history: ``[N, d]`` unencoded history tokens (``[N, 2, d]``: item and action, interleaved or
                HSTU's, which its ``history_input`` merges).
            history_offsets: ``[B + 1]`` offsets of the interactions.
            candidates: ``[M, d]`` unencoded candidate tokens; ``candidate_offsets`` ``[B + 1]``.
            history_times, candidate_times: int64 times of both, or None for both.
        """
        if history_offsets.shape != candidate_offsets.shape:
            raise ValueError(
                f"history has {history_offsets.numel() - 1} users but candidates have {candidate_offsets.numel() - 1}"
            )
        layout = self.layout
        h_positions, h_gaps, h_keys = self.history_layout(history_offsets, history.shape[0], history_times, "history")
        c_positions, c_gaps, c_keys, c_spec = self.candidate_layout(
            history_offsets, history_times, candidate_offsets, candidate_times
        )
        token_offsets, token_keys = history_offsets * layout.tokens_per_interaction, layout.token_keys(h_keys)
        if c_spec is None or layout.tokens_per_interaction != 1:
            c_keys = layout.candidate_keys(c_keys)
            c_spec = AttentionSpec(candidate_offsets, token_offsets, c_keys, token_keys, strict=True)
        history_lengths = token_offsets[1:] - token_offsets[:-1]
        out = run_layers(
            self.blocks,
            self.encode_history(history, h_positions, h_gaps),
            self.encode_candidates(candidates, c_positions, c_gaps),
            real_spec=AttentionSpec(token_offsets, token_offsets, token_keys, token_keys, strict=layout.strict),
            fake_spec=c_spec,
            real_self_term=layout.self_term,
            scale_len=self.batch_scale_len(history_lengths + (candidate_offsets[1:] - candidate_offsets[:-1])),
        )
        return self.output_norm(out.fake)


class GenerativeStack(TokenStack):
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


def dual_flow_states(
    stack: TokenStack,
    real: torch.Tensor,
    fake: torch.Tensor,
    offsets: torch.Tensor,
    timestamps: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """DFGR's training pass on plain tensors (``DualFlowInteraction.forward`` wraps it): the real flow
    causal over ``real`` ``[T, d]``, the fake flow ``fake`` ``[T, d]`` over earlier real tokens plus
    itself; returns the fake flow's final states ``[T, d]``."""
    positions, gaps, keys = stack.history_layout(offsets, real.shape[0], timestamps, "history")
    out = run_layers(
        stack.blocks,
        stack.encode(real, positions, gaps),
        stack.encode(fake, positions, gaps),
        real_spec=AttentionSpec(offsets, offsets, keys, keys, strict=False),
        fake_spec=AttentionSpec(offsets, offsets, keys, keys, strict=True),
    )
    return stack.output_norm(out.fake)


def interleaved_states(
    stack: TokenStack,
    items: torch.Tensor,
    actions: torch.Tensor,
    offsets: torch.Tensor,
    timestamps: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """MetaGR's training pass on plain tensors (``MetaGRInteraction.forward`` wraps it): ``2T`` tokens
    ``item_i, action_i`` (:data:`INTERLEAVED`); returns the item tokens' final states ``[T, d]``."""
    positions, gaps, keys = stack.history_layout(offsets, items.shape[0], timestamps, "history")
    tokens = interleave(stack.encode(items, positions, gaps), stack.encode(actions, positions, gaps))
    token_offsets, token_keys = 2 * offsets, INTERLEAVED.token_keys(keys)
    # only item tokens are read after the last block: it queries with those alone
    item_spec = AttentionSpec(offsets, token_offsets, token_keys[0::2], token_keys, strict=True)
    out = run_layers(
        stack.blocks,
        tokens,
        real_spec=AttentionSpec(token_offsets, token_offsets, token_keys, token_keys, strict=True),
        real_self_term=True,
        final_rows=FinalRows(slice(0, None, 2), item_spec),
    )
    return stack.output_norm(out.real_rows)


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
