"""The HSTU-style block that both DFGR flows (and the MetaGR baseline) run through."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from dfgr_torchrec.config import InteractionConfig
from dfgr_torchrec.ops.attention import AttentionSpec, DenseSpec, jagged_attention


def split_uvqk(
    uvqk: torch.Tensor, num_heads: int, attention_dim: int, linear_dim: int
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[T, H*dv + H*dv + H*dqk + H*dqk]`` (the ``u, v, q, k`` projection, in that order) ->
    ``u [T, H*dv]``, ``q, k [T, H, dqk]``, ``v [T, H, dv]``."""
    h = num_heads
    u, v, q, k = torch.split(uvqk, [h * linear_dim, h * linear_dim, h * attention_dim, h * attention_dim], dim=-1)
    return u, q.reshape(-1, h, attention_dim), k.reshape(-1, h, attention_dim), v.reshape(-1, h, linear_dim)


class GenerativeBlock(nn.Module):
    """One sequential-transduction block: project, attend, gate, project back, add.

    ``x -> LayerNorm -> Linear -> SiLU -> (u, q, k, v)``; attention (given from outside, since
    the flows decide who attends to whom); ``x + Linear(LayerNorm(attn) * u)``. Splitting
    :meth:`project`, :meth:`attend` and :meth:`finish` lets DFGR run its two flows through the
    same weights with one matmul over both flows' tokens.

    Args:
        config: the interaction hyper-parameters.
        device: where to allocate (``"meta"`` for DistributedModelParallel).
    """

    def __init__(self, config: InteractionConfig, device: Optional[torch.device] = None) -> None:
        super().__init__()
        self.config = config
        h = config.num_heads
        self._split = [h * config.linear_dim, h * config.linear_dim, h * config.attention_dim, h * config.attention_dim]
        self.input_norm = nn.LayerNorm(config.d_model, eps=config.norm_eps, device=device)
        self.uvqk = nn.Linear(config.d_model, sum(self._split), device=device)
        self.attention_norm = nn.LayerNorm(h * config.linear_dim, eps=config.norm_eps, device=device)
        self.output = nn.Linear(h * config.linear_dim, config.d_model, device=device)
        self.dropout = nn.Dropout(config.dropout)

    def project(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[T, d_model]`` -> ``u [T, H*dv]``, ``q [T, H, dqk]``, ``k [T, H, dqk]``, ``v [T, H, dv]``."""
        c = self.config
        return split_uvqk(F.silu(self.uvqk(self.input_norm(x))), c.num_heads, c.attention_dim, c.linear_dim)

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        spec: AttentionSpec | DenseSpec,
        self_k: Optional[torch.Tensor] = None,
        self_v: Optional[torch.Tensor] = None,
        scale_len: Optional[int] = None,
    ) -> torch.Tensor:
        """Attention under ``spec``; returns ``[T_q, H*dv]`` (``scale_len``: None, the config's constant)."""
        out = jagged_attention(
            q,
            k,
            v,
            spec,
            form=self.config.attention_form,
            scale_len=scale_len or self.config.pointwise_scale_len,
            self_k=self_k,
            self_v=self_v,
            kernel=self.config.kernel,
        )
        return out.flatten(1)

    def finish(self, x: torch.Tensor, attention: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Residual update of ``x`` from the attention output gated by ``u``."""
        return x + self.dropout(self.output(self.attention_norm(attention) * u))
