"""Analytic training FLOPs of the generative models, for the scaling study.

Counted per user from the history length ``N`` (multiply-adds count 2), for a model with
``L`` layers of width ``d``, ``H`` heads, query/key width ``a`` and value width ``v`` per head:

* a token through a block's projections: ``P = 2 d (2 H v + 2 H a)`` (``u, v, q, k``), and
  ``O = 2 H v d`` through its output projection;
* a visible (query, key) pair: ``A = 2 H (a + v)`` (the score, then the weighted value);
* the head: ``2 (d h_1 + h_1 h_2 + ... + h_k T)`` per scored token (``T`` tasks);
* DFGR's ``concat`` merge of item and action: ``C = 2 (2 D) d`` per token, two tokens (real and
  fake) per interaction (``D`` the embedding width; 0 with the ``sum`` merge; MetaGR never merges).

DFGR (two flows of ``N`` tokens through the same weights; the last layer skips the real flow's
attention and output, as :meth:`~dfgr_torchrec.modules.stack.GenerativeStack.run_two_flows`
does)::

    per layer l < L:  2N P + 2N O + A [N(N+1)/2 (real, causal) + N(N+1)/2 (fake: j < i, + self)]
    last layer:       2N P +  N O + A  N(N+1)/2
    head, merge:      N scored tokens, 2N C

MetaGR (``2N`` interleaved tokens, strict causal + self; the last layer queries items only)::

    per layer l < L:  2N P + 2N O + A N(2N+1)
    last layer:       2N P +  N O + A N^2
    head:             N scored tokens

Training = 3 x forward (the backward pass costs about twice the forward). Pair counts are the
position mask's; a session mask hides a few more pairs. Embedding lookups are not counted.
The padded backend computes more than this (every pair of the padded square); this counts the
work the model needs, which is what a scaling law is about.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import torch

from dfgr_torchrec.config import MergeOp, RankingModelConfig

BACKWARD_FACTOR = 3.0  # forward + backward


def _widths(config: RankingModelConfig):
    i = config.interaction
    d, h, a, v = i.d_model, i.num_heads, i.attention_dim, i.linear_dim
    project, output, pair = 2 * d * (2 * h * v + 2 * h * a), 2 * h * v * d, 2 * h * (a + v)
    dims = [d, *config.head_hidden_dims, len(config.tasks)]
    head = sum(2 * x * y for x, y in zip(dims[:-1], dims[1:]))
    return i.num_layers, float(project), float(output), float(pair), float(head)


def dfgr_forward_flops(config: RankingModelConfig, n: torch.Tensor) -> torch.Tensor:
    """Forward FLOPs of DFGR's training pass for histories of lengths ``n`` (``[B]``, per user)."""
    layers, p, o, a, head = _widths(config)
    n = n.to(torch.float64)
    causal = n * (n + 1) / 2
    inner = 2 * n * p + 2 * n * o + a * 2 * causal
    last = 2 * n * p + n * o + a * causal
    e = config.embeddings
    merge = 2 * (2 * e.embedding_dim) * config.interaction.d_model if e.merge == MergeOp.CONCAT else 0
    return (layers - 1) * inner + last + n * head + 2 * n * merge


def metagr_forward_flops(config: RankingModelConfig, n: torch.Tensor) -> torch.Tensor:
    """Forward FLOPs of MetaGR's training pass (``2N`` interleaved tokens) for lengths ``n``."""
    layers, p, o, a, head = _widths(config)
    n = n.to(torch.float64)
    inner = 2 * n * p + 2 * n * o + a * n * (2 * n + 1)
    last = 2 * n * p + n * o + a * n * n
    return (layers - 1) * inner + last + n * head


FORWARD_FLOPS: Dict[str, Callable[[RankingModelConfig, torch.Tensor], torch.Tensor]] = {
    "dfgr": dfgr_forward_flops,
    "metagr": metagr_forward_flops,
}


def training_flops(config: RankingModelConfig, lengths: torch.Tensor) -> Optional[float]:
    """FLOPs of one training pass (forward + backward) over users with history ``lengths``;
    None for a model type without a counter."""
    count = FORWARD_FLOPS.get(config.type)
    return None if count is None else BACKWARD_FACTOR * float(count(config, lengths).sum())


def _hstu_targets(lengths: torch.Tensor) -> torch.Tensor:
    from dfgr_torchrec.models.hstu import DEFAULT_NUM_TARGETS

    return torch.clamp(torch.minimum(lengths - 1, torch.full_like(lengths, DEFAULT_NUM_TARGETS)), min=1)


# model type -> (sequence tokens through the blocks, positions with a loss) per user of N interactions
EPOCH_TOKENS: Dict[str, Callable[[torch.Tensor], tuple]] = {
    "dfgr": lambda n: (2 * n, n),  # real + fake flow; a label at every position
    "metagr": lambda n: (2 * n, n),  # item + action tokens; a label at every item
    "hstu": lambda n: (n, _hstu_targets(n)),  # one token each; labels on the last targets only
}


def epoch_tokens(config: RankingModelConfig, lengths: torch.Tensor) -> Optional[Dict[str, int]]:
    """``{"tokens", "labels"}`` of one training pass over users with history ``lengths``: tokens
    through the sequence blocks and positions with a loss; None for a non-sequence model."""
    count = EPOCH_TOKENS.get(config.type)
    if count is None:
        return None
    tokens, labels = count(lengths)
    return {"tokens": int(tokens.sum()), "labels": int(labels.sum())}
