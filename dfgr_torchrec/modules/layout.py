"""How a generative stack lays out an interaction as tokens: declared once, read by training,
candidate scoring, the history cache and the exported graph."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dfgr_torchrec.ops.jagged import interleave


@dataclass(frozen=True)
class TokenLayout:
    """Tokens per interaction and who sees whom among them.

    Attributes:
        tokens_per_interaction: 1 (DFGR, HSTU: item and action in one token) or 2 (MetaGR:
            ``item_i, action_i`` interleaved, with order keys ``2k, 2k + 1``).
        strict: a history token sees the tokens with a strictly smaller order key plus itself
            (its self term), instead of every token with a key ``<=`` its own.
    """

    tokens_per_interaction: int = 1
    strict: bool = False

    @property
    def self_term(self) -> bool:
        """A strict history sees itself through the self term."""
        return self.strict

    def token_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """``[N * t]`` the order keys of a history's tokens from its interactions' keys ``[N]``."""
        return keys if self.tokens_per_interaction == 1 else interleave(2 * keys, 2 * keys + 1)

    def candidate_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """A candidate is an item token placed after the history it sees (key ``2k`` interleaved)."""
        return keys if self.tokens_per_interaction == 1 else 2 * keys

    def context_token(self, context: torch.Tensor) -> torch.Tensor:
        """The user's context token ``[B, d]`` as a history interaction: as it is with one token
        per interaction, the item token followed by a zero action token when interleaved."""
        return context if self.tokens_per_interaction == 1 else torch.stack([context, torch.zeros_like(context)], 1)


ONE_TOKEN = TokenLayout()
INTERLEAVED = TokenLayout(tokens_per_interaction=2, strict=True)
