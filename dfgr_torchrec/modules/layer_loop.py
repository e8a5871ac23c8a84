"""The one layer loop: every generative stack's training pass, candidate scoring, history cache
and exported graph run their tokens through :func:`run_layers`.

Two sets of tokens go through the same blocks. The *real* flow (a history) attends to itself
(and to keys/values cached from earlier calls); the *fake* flow (DFGR's fake tokens, candidates,
HSTU's targets) attends to the real flow plus its own key/value, never to another fake token.
One projection matmul serves both per layer. After the last layer nothing reads the real flow,
so its attention is skipped there, except for the rows a caller asks for (MetaGR's item tokens).

A block is anything with ``project(x) -> (u, q, k, v)``, ``attend(q, k, v, spec, self_k, self_v,
scale_len)`` and ``finish(x, attention, u)``: :class:`~dfgr_torchrec.modules.block.GenerativeBlock`
and :class:`~dfgr_torchrec.modules.stu.STULayer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Protocol, Sequence, Tuple, Union

import torch

from dfgr_torchrec.ops.attention import AttentionSpec, DenseSpec

Spec = Union[AttentionSpec, DenseSpec]


class LayerBlock(Protocol):
    def project(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]: ...

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        spec: Spec,
        self_k: Optional[torch.Tensor] = None,
        self_v: Optional[torch.Tensor] = None,
        scale_len: Optional[int] = None,
    ) -> torch.Tensor: ...

    def finish(self, x: torch.Tensor, attention: torch.Tensor, u: torch.Tensor) -> torch.Tensor: ...


@dataclass
class FinalRows:
    """Real-flow rows whose state after the last layer the caller reads (``rows`` of the real
    tokens, querying under ``spec``); MetaGR's training pass reads its item tokens this way."""

    rows: Union[slice, torch.Tensor]
    spec: Spec


@dataclass
class LayerOutputs:
    fake: Optional[torch.Tensor]  # [F, d] the fake flow after the last layer (before the output norm)
    real_rows: Optional[torch.Tensor]  # the FinalRows' states after the last layer
    keys: Optional[torch.Tensor]  # [L, R, H, d_qk] the real tokens' keys at each layer (keep_kv)
    values: Optional[torch.Tensor]  # [L, R, H, d_v]


def run_layers(
    blocks: Sequence[LayerBlock],
    real: torch.Tensor,
    fake: Optional[torch.Tensor] = None,
    *,
    real_spec: Optional[Spec] = None,
    fake_spec: Optional[Spec] = None,
    real_self_term: bool = False,
    cached: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    final_rows: Optional[FinalRows] = None,
    keep_kv: bool = False,
    scale_len: Optional[int] = None,
) -> LayerOutputs:
    """Runs ``real`` (``[R, d]``, may be empty) and ``fake`` (``[F, d]`` or None) through ``blocks``.

    Args:
        real_spec: real queries over the real keys (``cached`` first, then ``real``'s own).
        fake_spec: fake queries over the same keys; each fake token also sees its own key/value.
        real_self_term: real queries also see their own key/value (a strict ``real_spec``).
        cached: ``([L, C, H, d_qk], [L, C, H, d_v])`` keys/values of real tokens before ``real``.
        final_rows: real rows to carry through the last layer's attention.
        keep_kv: return every layer's keys/values of ``real`` (what a history cache stores).
        scale_len: the pointwise normaliser of this call, for blocks whose normaliser depends on
            the batch (HSTU's); None: the block's own constant.
    """
    n = real.shape[0]
    keys: List[torch.Tensor] = []
    values: List[torch.Tensor] = []
    real_out = None
    for index, block in enumerate(blocks):
        x = real if fake is None else (fake if n == 0 else torch.cat([real, fake]))
        u, q, k, v = block.project(x)
        real_k, real_v = k[:n], v[:n]
        if keep_kv:
            keys.append(real_k)
            values.append(real_v)
        all_k, all_v = _with_cached(cached, index, real_k, real_v)
        fake_attention = None
        if fake is not None:
            fake_attention = block.attend(q[n:], all_k, all_v, fake_spec, k[n:], v[n:], scale_len=scale_len)
        if index == len(blocks) - 1:
            if final_rows is not None:
                r = final_rows.rows
                own = (real_k[r], real_v[r]) if real_self_term else (None, None)
                attention = block.attend(q[:n][r], all_k, all_v, final_rows.spec, *own, scale_len=scale_len)
                real_out = block.finish(real[r], attention, u[:n][r])
            fake = None if fake is None else block.finish(fake, fake_attention, u[n:])
            break
        parts = [] if fake_attention is None else [fake_attention]
        if n > 0 or fake is None:
            own = (real_k, real_v) if real_self_term else (None, None)
            parts.insert(0, block.attend(q[:n], all_k, all_v, real_spec, *own, scale_len=scale_len))
        x = block.finish(x, parts[0] if len(parts) == 1 else torch.cat(parts), u)
        real, fake = x[:n], (None if fake is None else x[n:])
    stacked = (torch.stack(keys), torch.stack(values)) if keep_kv else (None, None)
    return LayerOutputs(fake, real_out, *stacked)


def _with_cached(
    cached: Optional[Tuple[torch.Tensor, torch.Tensor]], index: int, k: torch.Tensor, v: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    if cached is None:
        return k, v
    if k.shape[0] == 0:
        return cached[0][index], cached[1][index]
    return torch.cat([cached[0][index], k]), torch.cat([cached[1][index], v])
