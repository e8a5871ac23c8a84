"""The jagged attention interface: one spec of who sees whom, one dispatcher, several backends.

Every attention in DFGR and MetaGR is the same operation: queries of one jagged set attend
to keys/values of another jagged set of the same users, where query ``i`` may see key ``j``
iff ``kv_keys[j] < q_keys[i]`` (``strict``) or ``kv_keys[j] <= q_keys[i]``, plus, optionally, one
extra key/value of its own (the fake token's or candidate's ``self`` term). Keys are
positions or timestamps, so one op serves causal self-attention, the fake->real flow,
session masks and candidate scoring.

The interface holds no padded tensor: an :class:`AttentionSpec` is offsets and order keys.
Each backend derives what it needs (a dense mask, tile bounds, ...) and may cache it in
``spec.backend_cache`` for the other layers that reuse the spec.

Backends (:class:`AttentionKernel`):
- ``triton`` (:mod:`dfgr_torchrec.ops.triton`): fused kernels straight on the jagged values, one
  program per (user block, head), skipping key blocks the block cannot see; forward and backward,
  memory ``O(T H d)``. The GPU path; on CPU it runs only under Triton's interpreter (tests).
- ``tiled`` (:mod:`dfgr_torchrec.ops.tiled`): query x key tiles batched over users, skipping the
  tiles the mask hides, with an online softmax and a backward that recomputes each tile; memory
  ``O(B H L tile)`` instead of the padded square. Any device.
- ``padded`` (:mod:`dfgr_torchrec.ops.padded`): pads to the batch's longest sequence and runs
  batched matmuls on the ``[B, H, L, L]`` score square; fastest for short sequences.
- ``reference`` (:mod:`dfgr_torchrec.ops.reference`): a per-sequence loop with no padding; slow
  and obviously correct, the ground truth the tests compare every other backend against.
- ``auto`` (the default): ``triton`` on CUDA when Triton imports, else ``tiled`` from
  :data:`TILED_FROM_LEN` keys up, else ``padded`` (:func:`resolve_kernel`).

A :class:`DenseSpec` (one user, a ``[T_q, T_kv]`` visibility matrix) runs the same math as dense
matmuls with no jagged op and no data-dependent shape: the single-user graph that serving exports.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

import torch

from dfgr_torchrec.ops.jagged import max_length, offsets_to_lengths
from dfgr_torchrec.ops.kinds import AttentionForm, AttentionKernel


@dataclass(eq=False)
class AttentionSpec:
    """Which keys each query sees, for one (query set, key set) pair of the same users.

    Query ``i`` sees key ``j`` of the same user iff ``kv_keys[j] < q_keys[i]`` when ``strict``,
    ``<=`` otherwise. Reusable across layers (backends cache what they derive in it).

    Args:
        q_offsets: ``[B + 1]`` offsets of the queries.
        kv_offsets: ``[B + 1]`` offsets of the keys/values.
        q_keys: ``[total_q]`` int64 order keys of the queries (positions or timestamps).
        kv_keys: ``[total_kv]`` int64 order keys of the keys.
        strict: ``<`` when True, ``<=`` when False.

    Example::

        spec = AttentionSpec(offsets, offsets, positions, positions, strict=False)  # causal
        out = jagged_attention(q, k, v, spec, form=AttentionForm.POINTWISE, scale_len=1024)
    """

    q_offsets: torch.Tensor
    kv_offsets: torch.Tensor
    q_keys: torch.Tensor
    kv_keys: torch.Tensor
    strict: bool
    backend_cache: Dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.q_offsets.shape != self.kv_offsets.shape:
            raise ValueError(
                f"q_offsets and kv_offsets must describe the same users, got {tuple(self.q_offsets.shape)} "
                f"vs {tuple(self.kv_offsets.shape)}"
            )

    @property
    def num_users(self) -> int:
        return self.q_offsets.shape[0] - 1

    @property
    def q_total(self) -> int:
        return self.q_keys.shape[0]

    @property
    def kv_total(self) -> int:
        return self.kv_keys.shape[0]

    @property
    def max_q_len(self) -> int:
        return self._cached("max_q_len", lambda: max_length(offsets_to_lengths(self.q_offsets)))

    @property
    def max_kv_len(self) -> int:
        return self._cached("max_kv_len", lambda: max_length(offsets_to_lengths(self.kv_offsets)))

    def visible_counts(self) -> torch.Tensor:
        """``[total_q]`` int64: how many keys each query sees (its self term not counted).

        A merge of queries and keys by ``(user, key)``, O((Q + K) log(Q + K)), no mask.
        """
        return self._cached("visible_counts", self._count_visible)

    def _count_visible(self) -> torch.Tensor:
        device = self.q_keys.device
        q_users = _owners(self.q_offsets, self.q_total)
        kv_users = _owners(self.kv_offsets, self.kv_total)
        # Stable sorts by key, then by user; on equal keys a query comes before the keys it must
        # not see (strict: queries first) or after the keys it sees (not strict: keys first).
        q_first = self.strict
        q_flag = torch.zeros(self.q_total, dtype=torch.int64, device=device)
        kv_flag = torch.ones(self.kv_total, dtype=torch.int64, device=device)
        parts = [(self.q_keys, q_users, q_flag), (self.kv_keys, kv_users, kv_flag)]
        keys, users, is_kv = (torch.cat(t) for t in zip(*(parts if q_first else parts[::-1])))
        order = torch.sort(keys, stable=True).indices
        order = order[torch.sort(users[order], stable=True).indices]
        kv_sorted = is_kv[order]
        kv_before = torch.cumsum(kv_sorted, 0) - kv_sorted  # keys (of all users) ahead of each element
        position = torch.empty_like(order)
        position[order] = torch.arange(order.numel(), device=device)
        q_index = torch.arange(self.q_total, device=device) + (0 if q_first else self.kv_total)
        return kv_before[position[q_index]] - self.kv_offsets[:-1][q_users]

    def _cached(self, name: str, build: Callable[[], Any]) -> Any:
        key = f"spec.{name}"
        if key not in self.backend_cache:
            self.backend_cache[key] = build()
        return self.backend_cache[key]


@dataclass(eq=False)
class DenseSpec:
    """One user's who-sees-whom as a matrix: query ``i`` sees key ``j`` iff ``visible[i, j]``.

    What :func:`jagged_attention` takes in a graph that ``torch.export`` traces (serving's
    :class:`~dfgr_torchrec.serving.graph.CandidateGraph`): every query and key belongs to one
    user, so no offsets, and the backend is :func:`~dfgr_torchrec.ops.dense.dense_attention`.

    Args:
        visible: ``[T_q, T_kv]`` bool.
    """

    visible: torch.Tensor


def _owners(offsets: torch.Tensor, total: int) -> torch.Tensor:
    """The user index of every jagged element, ``[total]``."""
    users = torch.arange(offsets.shape[0] - 1, device=offsets.device)
    return torch.repeat_interleave(users, offsets_to_lengths(offsets), output_size=total)


Backend = Callable[..., torch.Tensor]

# ``kernel: auto`` runs the tiled backend (where Triton cannot run) when the batch's longest key
# sequence has at least this many tokens, the padded one below it. Chosen on 2 CPU threads from
# `dfgr bench attention --kernels padded tiled` (results/bench/attention_kernels_2threads*.json: from
# 512 tokens the tiled step took 0.2x to 0.67x the padded one); above it the padded square's
# ``[B, H, L, L]`` scores grow quadratically, so it is never chosen there on any device.
TILED_FROM_LEN = 512


def resolve_kernel(kernel: AttentionKernel, spec: "AttentionSpec", device: torch.device) -> AttentionKernel:
    """The backend ``kernel`` stands for on this call (only ``auto`` depends on the call)."""
    if kernel != AttentionKernel.AUTO:
        return kernel
    if device.type == "cuda" and _triton_imports():
        return AttentionKernel.TRITON
    if device.type != "meta" and spec.max_kv_len >= TILED_FROM_LEN:  # meta: shapes only, no tile plan
        return AttentionKernel.TILED
    return AttentionKernel.PADDED


@functools.lru_cache(maxsize=None)
def _triton_imports() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _backends() -> Dict[AttentionKernel, Backend]:
    from dfgr_torchrec.ops.padded import padded_attention
    from dfgr_torchrec.ops.reference import reference_attention
    from dfgr_torchrec.ops.tiled import tiled_attention
    from dfgr_torchrec.ops.triton import triton_attention

    return {
        AttentionKernel.PADDED: padded_attention,
        AttentionKernel.REFERENCE: reference_attention,
        AttentionKernel.TILED: tiled_attention,
        AttentionKernel.TRITON: triton_attention,
    }


def jagged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: "AttentionSpec | DenseSpec",
    *,
    form: AttentionForm,
    scale_len: int,
    self_k: Optional[torch.Tensor] = None,
    self_v: Optional[torch.Tensor] = None,
    kernel: AttentionKernel = AttentionKernel.AUTO,
) -> torch.Tensor:
    """Masked multi-head attention over jagged sequences.

    Args:
        q: ``[total_q, H, d_qk]`` queries.
        k: ``[total_kv, H, d_qk]`` keys; ``v``: ``[total_kv, H, d_v]`` values.
        spec: who sees whom (:class:`AttentionSpec`; a :class:`DenseSpec` for one user, dense math).
        form: ``POINTWISE`` computes ``sum_j SiLU(q.k_j / sqrt(d)) v_j / scale_len``;
            ``SOFTMAX`` computes ``softmax_j(q.k_j / sqrt(d)) v_j`` (0 for a query that sees nothing).
        scale_len: the pointwise normaliser (a constant, so results do not depend on padding).
        self_k: ``[total_q, H, d]``: each query's own extra key, always visible.
        self_v: ``[total_q, H, d]``: each query's own extra value (with ``self_k``).
        kernel: which backend runs (``auto``: :func:`resolve_kernel`).

    Returns:
        ``[total_q, H, d_v]``.
    """
    if (self_k is None) != (self_v is None):
        raise ValueError("self_k and self_v must be given together")
    if isinstance(spec, DenseSpec):
        return _dense_one_user(q, k, v, spec, AttentionForm(form), scale_len, self_k, self_v)
    backend = _backends().get(resolve_kernel(kernel, spec, q.device))
    if backend is None:
        raise ValueError(f"kernel: expected one of {[k.value for k in AttentionKernel]}, got {kernel!r}")
    q = q * (q.shape[-1] ** -0.5)
    return backend(q, k, v, spec, AttentionForm(form), scale_len, self_k, self_v)


def _dense_one_user(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: DenseSpec,
    form: AttentionForm,
    scale_len: int,
    self_k: Optional[torch.Tensor],
    self_v: Optional[torch.Tensor],
) -> torch.Tensor:
    from dfgr_torchrec.ops.dense import dense_attention

    heads = lambda t: None if t is None else t.transpose(0, 1).unsqueeze(0)  # noqa: E731  [n, H, d] -> [1, H, n, d]
    scaled = q * (q.shape[-1] ** -0.5)
    visible = spec.visible.unsqueeze(0).unsqueeze(0)  # [1, 1, T_q, T_kv]
    out = dense_attention(heads(scaled), heads(k), heads(v), visible, form, scale_len, heads(self_k), heads(self_v))
    return out[0].transpose(0, 1)
