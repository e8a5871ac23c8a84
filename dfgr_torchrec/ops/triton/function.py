"""The Triton backend as a :class:`torch.autograd.Function`: block tables, launches, and the backward.

Saved for backward: ``q, k, v`` (and the self key/value), plus, for softmax, the output and each
row's log-sum-exp, so training memory is ``O(T H d)``: no score tile outlives a program.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import triton

from dfgr_torchrec.ops.attention import AttentionForm, AttentionSpec
from dfgr_torchrec.ops.triton import kernels
from dfgr_torchrec.ops.triton.blocks import BlockTable, block_table


@dataclass(frozen=True)
class BlockSizes:
    """Rows per program on the query side (``m``) and the key side (``n``); ``num_warps`` on a GPU."""

    m: int = 64
    n: int = 64
    num_warps: int = 4


# The block sizes when the caller gives none (tests pin smaller ones; a GPU may tune them).
DEFAULT_BLOCKS = BlockSizes()


def interpreting() -> bool:
    """True when Triton runs its CPU interpreter (``TRITON_INTERPRET=1`` was set before the kernels loaded)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _precision(dtype: torch.dtype) -> str:
    """fp32 dots in IEEE fp32 unless torch itself allows TF32 matmuls (bf16/fp16 ignore it)."""
    return "tf32" if dtype != torch.float32 or torch.backends.cuda.matmul.allow_tf32 else "ieee"


def _tables(spec: AttentionSpec, sizes: BlockSizes) -> Tuple[BlockTable, BlockTable]:
    """The query and key block tables, built once per spec and block sizes for every layer."""
    key = f"triton.blocks.{sizes.m}.{sizes.n}"
    if key not in spec.backend_cache:
        spec.backend_cache[key] = (
            block_table(spec.q_offsets, spec.q_keys, sizes.m),
            block_table(spec.kv_offsets, spec.kv_keys, sizes.n),
        )
    return spec.backend_cache[key]


def _keys(spec: AttentionSpec) -> Tuple[torch.Tensor, torch.Tensor]:
    """The order keys as the kernels read them: contiguous int64 (MetaGR's item keys are a strided view)."""
    if "triton.keys" not in spec.backend_cache:
        spec.backend_cache["triton.keys"] = (
            spec.q_keys.to(torch.int64).contiguous(), spec.kv_keys.to(torch.int64).contiguous()
        )
    return spec.backend_cache["triton.keys"]


def _strides(*tensors: torch.Tensor):
    return [s for t in tensors for s in (t.stride(0), t.stride(1))]


def _last_dim_dense(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


class TritonAttention(torch.autograd.Function):
    """``jagged_attention`` on the jagged values (``q`` already scaled); see :mod:`.kernels`."""

    @staticmethod
    def forward(ctx, q, k, v, self_k, self_v, spec: AttentionSpec, softmax: bool, scale: float, sizes: BlockSizes):  # type: ignore[override]
        q_tab, kv_tab = _tables(spec, sizes)
        q_keys, kv_keys = _keys(spec)
        has_self = self_k is not None
        q, k, v = _last_dim_dense(q), _last_dim_dense(k), _last_dim_dense(v)
        sk = _last_dim_dense(self_k) if has_self else q
        sv = _last_dim_dense(self_v) if has_self else q.new_empty(1, 1, v.shape[-1])
        total_q, h, d = q.shape
        dv = v.shape[-1]
        out = q.new_empty(total_q, h, dv)
        lse = torch.zeros(total_q, h, dtype=torch.float32, device=q.device)
        if q_tab.num_blocks:
            kernels.attention_fwd[(q_tab.num_blocks, h)](
                q, k, v, sk, sv, out, lse, q_keys, kv_keys,
                q_tab.start, q_tab.end, q_tab.user, q_tab.key_max,
                kv_tab.user_blocks, kv_tab.start, kv_tab.end, kv_tab.key_min,
                *_strides(q, k, v, sk, sv, out), h, scale, d, dv,
                STRICT=spec.strict, SOFTMAX=softmax, HAS_SELF=has_self,
                BLOCK_M=sizes.m, BLOCK_N=sizes.n, BLOCK_D=_block_dim(d), BLOCK_DV=_block_dim(dv),
                PRECISION=_precision(q.dtype), num_warps=sizes.num_warps,
            )
        ctx.save_for_backward(q, k, v, sk, sv, out, lse)
        ctx.spec, ctx.softmax, ctx.scale, ctx.sizes, ctx.has_self = spec, softmax, scale, sizes, has_self
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        q, k, v, sk, sv, out, lse = ctx.saved_tensors
        spec, softmax, sizes, has_self = ctx.spec, ctx.softmax, ctx.sizes, ctx.has_self
        q_tab, kv_tab = _tables(spec, sizes)
        q_keys, kv_keys = _keys(spec)
        do = _last_dim_dense(grad_out)
        total_q, h, d = q.shape
        dv = v.shape[-1]
        delta = (do.float() * out.float()).sum(-1).contiguous() if softmax else lse
        dq = torch.empty(total_q, h, d, dtype=q.dtype, device=q.device)
        dsk = torch.empty_like(dq) if has_self else dq
        dsv = torch.empty(total_q, h, dv, dtype=q.dtype, device=q.device) if has_self else dq
        dk = torch.zeros(k.shape, dtype=k.dtype, device=k.device)
        dvv = torch.zeros(v.shape, dtype=v.dtype, device=v.device)
        meta = dict(
            STRICT=spec.strict, SOFTMAX=softmax, BLOCK_M=sizes.m, BLOCK_N=sizes.n, BLOCK_D=_block_dim(d),
            BLOCK_DV=_block_dim(dv), PRECISION=_precision(q.dtype), num_warps=sizes.num_warps,
        )
        if q_tab.num_blocks:
            kernels.attention_bwd_dq[(q_tab.num_blocks, h)](
                q, k, v, sk, sv, do, lse, delta, q_keys, kv_keys, dq, dsk, dsv,
                q_tab.start, q_tab.end, q_tab.user, q_tab.key_max,
                kv_tab.user_blocks, kv_tab.start, kv_tab.end, kv_tab.key_min,
                *_strides(q, k, v, sk, sv, do), h, ctx.scale, d, dv, HAS_SELF=has_self, **meta,
            )
        if kv_tab.num_blocks and q_tab.num_blocks:
            kernels.attention_bwd_dkdv[(kv_tab.num_blocks, h)](
                q, k, v, do, lse, delta, q_keys, kv_keys, dk, dvv,
                kv_tab.start, kv_tab.end, kv_tab.user, kv_tab.key_min,
                q_tab.user_blocks, q_tab.start, q_tab.end, q_tab.key_max,
                *_strides(q, k, v, do), h, ctx.scale, d, dv, **meta,
            )
        return dq, dk, dvv, (dsk if has_self else None), (dsv if has_self else None), None, None, None, None


def _check_gpu_blocks(sizes: BlockSizes) -> None:
    for name, value in (("m", sizes.m), ("n", sizes.n)):
        if value < 16 or value & (value - 1):
            raise ValueError(f"triton block size {name}: expected a power of two >= 16 on a GPU (tl.dot), got {value}")


def _block_dim(d: int) -> int:
    """Head dims padded to a power of two of at least 16 (``tl.dot``'s smallest inner size)."""
    return max(16, triton.next_power_of_2(d))


def triton_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: AttentionSpec,
    form: AttentionForm,
    scale_len: int,
    self_k: Optional[torch.Tensor],
    self_v: Optional[torch.Tensor],
    sizes: Optional[BlockSizes] = None,
) -> torch.Tensor:
    """:func:`~dfgr_torchrec.ops.attention.jagged_attention` in Triton (``q`` already scaled).

    Under the interpreter (CPU) operands run in fp32: its bf16 ``tl.dot`` is wrong (upstream).
    """
    if q.device.type != "cuda" and not interpreting():
        raise ValueError(
            "kernel: triton needs a CUDA GPU (or TRITON_INTERPRET=1 set before dfgr_torchrec loads its kernels); "
            "use kernel: auto, tiled or padded on CPU"
        )
    sizes = sizes or DEFAULT_BLOCKS
    if q.device.type == "cuda":
        _check_gpu_blocks(sizes)
    dtype = q.dtype
    cast = interpreting() and dtype != torch.float32
    # one dtype for every operand (autocast may hand a self term in another); fp32 under the interpreter
    run_dtype = torch.float32 if cast else dtype
    operands = [t.to(run_dtype) if t is not None else None for t in (q, k, v, self_k, self_v)]
    out = TritonAttention.apply(*operands, spec, form == AttentionForm.SOFTMAX, 1.0 / scale_len, sizes)
    return out.to(dtype) if cast else out
