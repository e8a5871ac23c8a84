"""The two token sets of the dual flow, from any item lookup and action lookup.

DFGR's real flow reads each interaction as one token merged from its item and its true action;
the fake flow (and every candidate) reads the same item with a learned placeholder action.
:class:`DualFlowTokens` builds both from two jagged embedding lookups of the same interactions,
so :class:`~dfgr_torchrec.modules.dual_flow.DualFlowInteraction` can sit behind a user's own
``EmbeddingCollection``; DFGR's ranking model holds one behind its
:class:`~dfgr_torchrec.modules.embeddings.SequenceEmbedding`.

Example::

    tokens = DualFlowTokens(dim=32)                       # sum (or merge=MergeOp.CONCAT, a projection)
    real, fake = tokens(items, actions)                   # JaggedTensors [T, 32], jagged like items
    states = interaction(real, fake)
    candidate_tokens = tokens.placeholder_tokens(candidates)
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec.config import MergeOp


class PlaceholderAction(nn.Module):
    """The learned "action unknown" embedding of fake tokens and candidates."""

    def __init__(self, dim: int, device: Optional[torch.device] = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, device=device))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=0.02)


def merge_item_action(items: torch.Tensor, actions: torch.Tensor, projection: Optional[nn.Module]) -> torch.Tensor:
    """One token per interaction: ``items + actions``, or ``projection([items, actions])`` (concat)."""
    if projection is None:
        return items + actions
    return projection(torch.cat([items, actions], dim=-1))


class DualFlowTokens(nn.Module):
    """Real and fake tokens ``[T, d_model]`` from item and action embeddings ``[T, dim]``.

    Args:
        dim: the lookups' embedding width.
        merge: ``SUM`` (``d_model == dim``) or ``CONCAT`` (a linear projection of both to ``d_model``).
        d_model: the interaction's width (default ``dim``).
    """

    def __init__(
        self,
        dim: int,
        merge: MergeOp = MergeOp.SUM,
        d_model: Optional[int] = None,
        device: Optional[torch.device] = None,
    ) -> None:
        super().__init__()
        d_model = d_model or dim
        if MergeOp(merge) == MergeOp.SUM and d_model != dim:
            raise ValueError(
                f"d_model: merge 'sum' keeps the embedding width {dim}, got {d_model} (use merge 'concat')"
            )
        self.placeholder = PlaceholderAction(dim, device=device)
        self.merge_projection = nn.Linear(2 * dim, d_model, device=device) if MergeOp(merge) == MergeOp.CONCAT else None

    def forward(self, items: JaggedTensor, actions: JaggedTensor) -> Tuple[JaggedTensor, JaggedTensor]:
        """``(real, fake)``: item + true action, and item + placeholder action, jagged like ``items``."""
        if not torch.equal(items.lengths(), actions.lengths()):
            raise ValueError("items and actions must have the same lengths (one action embedding per interaction)")
        return _like(items, self.merge(items.values(), actions.values())), self.placeholder_tokens(items)

    def placeholder_tokens(self, items: JaggedTensor) -> JaggedTensor:
        """Item + placeholder action: the fake flow's tokens, and the candidates' at scoring time."""
        return _like(items, self.merge_placeholder(items.values()))

    def merge(self, items: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``[N, d_model]`` real tokens from item and action embeddings ``[N, dim]``."""
        return merge_item_action(items, actions, self.merge_projection)

    def merge_placeholder(self, items: torch.Tensor) -> torch.Tensor:
        """``[N, d_model]`` fake-flow / candidate tokens: the items with the placeholder action."""
        return merge_item_action(items, self.placeholder.weight.expand_as(items), self.merge_projection)


def _like(jt: JaggedTensor, values: torch.Tensor) -> JaggedTensor:
    return JaggedTensor(values=values, lengths=jt.lengths(), offsets=jt.offsets())


class PlaceholderMerge(nn.Module):
    """A merged-token model's candidate token (the item with the placeholder action) as a module:
    what an exported candidate graph holds. ``tokens``: the model's :class:`DualFlowTokens`."""

    def __init__(self, tokens: DualFlowTokens) -> None:
        super().__init__()
        self.tokens = tokens

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return self.tokens.merge_placeholder(items)
