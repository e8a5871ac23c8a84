"""The device side of ``dfgr bench gpu``: the environment, the bf16 matmul peak, the backends
against the reference, and the models' interaction stacks timed per backend.

Needs only torch (and triton for the ``triton`` backend): no torchrec, fbgemm or duckdb. The
stacks are :class:`~dfgr_torchrec.modules.stack.GenerativeStack` run by the same plain-tensor
passes ``DualFlowInteraction.forward`` and ``MetaGRInteraction.forward`` wrap
(:func:`~dfgr_torchrec.modules.stack.dual_flow_states`, ``interleaved_states``), since those two
modules import torchrec for ``JaggedTensor``; a CPU test holds both equal to the modules'. Every
function takes the device, so the whole run
also works on CPU at toy sizes (the tests), with wall-clock timers and no memory figures.
"""

from __future__ import annotations

import datetime
import gc
import importlib.metadata
import os
import platform
import statistics
import subprocess
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from dfgr_torchrec.config import InteractionConfig
from dfgr_torchrec.modules.stack import GenerativeStack, dual_flow_states, interleaved_states
from dfgr_torchrec.ops.attention import AttentionSpec, jagged_attention
from dfgr_torchrec.ops.jagged import interleave, positions_in_sequence
from dfgr_torchrec.ops.kinds import AttentionForm, AttentionKernel

FP32_TOL = 1e-4  # elementwise atol = rtol, and the relative L2 error (TF32 off: IEEE fp32 lands near 1e-6)
BF16_REL_TOL = 2e-2  # relative L2 error of bf16 outputs and gradients (bf16 operands: 1e-3 to 1e-2)
TIMING_DTYPE = torch.bfloat16  # the timed steps run under this autocast, as recipes/train.py with train.bf16
NVIDIA_SMI_QUERY = "driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw,utilization.gpu"


def describe(error: BaseException) -> str:
    """``Type: the message's first lines`` (a JSON entry, never a traceback)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return f"{type(error).__name__}: {' | '.join(lines[:3])}"[:500]


def offsets_of(lengths: Sequence[int], device: torch.device) -> torch.Tensor:
    """``[B + 1]`` int64 offsets of ``lengths`` (plain torch, no fbgemm)."""
    counts = torch.as_tensor(list(lengths), dtype=torch.int64, device=device)
    offsets = torch.zeros(counts.numel() + 1, dtype=torch.int64, device=device)
    torch.cumsum(counts, 0, out=offsets[1:])
    return offsets


def _version(*distributions: str) -> Optional[str]:
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _nvidia_smi() -> Optional[Dict[str, str]]:
    """A read-only ``nvidia-smi --query-gpu`` (driver, clocks, power): None where it does not answer."""
    try:
        line = (
            subprocess.run(
                ["nvidia-smi", f"--query-gpu={NVIDIA_SMI_QUERY}", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
            .stdout.strip()
            .splitlines()[0]
        )
    except (OSError, subprocess.SubprocessError, IndexError):
        return None
    return dict(zip(NVIDIA_SMI_QUERY.split(","), (v.strip() for v in line.split(","))))


def environment(device: torch.device) -> Dict:
    """Versions, the device, and the machine's load (1, 5, 15 minute averages)."""
    env = {
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": _version("triton"),
        "numpy": _version("numpy"),
        "torchrec": _version("torchrec"),
        "fbgemm_gpu": _version("fbgemm-gpu", "fbgemm-gpu-cpu"),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "device_type": device.type,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            device=torch.cuda.get_device_name(device),
            capability=".".join(map(str, torch.cuda.get_device_capability(device))),
            multiprocessors=props.multi_processor_count,
            memory_gib=round(props.total_memory / 2**30, 2),
            nvidia_smi=_nvidia_smi(),
        )
    return env


def timed_ms(fn: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of one call: CUDA events on a GPU, a synchronised wall clock elsewhere."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))
    began = time.perf_counter()
    fn()
    return (time.perf_counter() - began) * 1e3


def spread(times: List[float]) -> Dict:
    """Median, min, max and (max - min) / median of repeated timings (ms)."""
    median = statistics.median(times)
    return {
        "median_ms": median,
        "min_ms": min(times),
        "max_ms": max(times),
        "spread": (max(times) - min(times)) / median if median > 0 else 0.0,
        "times_ms": [round(t, 4) for t in times],
    }


def matmul_peak(size: int, device: torch.device, warmup: int = 3, repeats: int = 10) -> Dict:
    """The bf16 ``size^3`` matmul rate on random data (never zeros: they run faster), median of ``repeats``."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, generator=g, device=device).to(torch.bfloat16)
    b = torch.randn(size, size, generator=g, device=device).to(torch.bfloat16)
    for _ in range(warmup):
        timed_ms(lambda: torch.matmul(a, b), device)
    times = [timed_ms(lambda: torch.matmul(a, b), device) for _ in range(repeats)]
    result = {"size": size, "dtype": "bfloat16", "data": "randn", **spread(times)}
    result["tflops"] = 2 * size**3 / (result["median_ms"] * 1e-3) / 1e12
    return result


# --- correctness: every backend against the reference, forward and every input gradient -----------


def case_specs(lengths: Sequence[int], device: torch.device) -> Dict[str, Tuple[AttentionSpec, bool]]:
    """The specs the models build, on one ragged batch: name -> (spec, with a self term)."""
    offsets = offsets_of(lengths, device)
    pos = positions_in_sequence(offsets, int(sum(lengths)))
    g = torch.Generator().manual_seed(0)  # sorted timestamps with ties (sessions)
    times = torch.cat([torch.randint(0, max(n // 3, 1), (n,), generator=g).sort().values for n in lengths]).to(device)
    token_keys = interleave(2 * pos, 2 * pos + 1)
    return {
        "dfgr_real": (AttentionSpec(offsets, offsets, pos, pos, strict=False), False),  # causal self-attention
        "dfgr_fake": (AttentionSpec(offsets, offsets, pos, pos, strict=True), True),  # fake over real, + self
        "metagr_items": (AttentionSpec(offsets, 2 * offsets, 2 * pos, token_keys, strict=True), True),  # last layer
        "session_fake": (AttentionSpec(offsets, offsets, times, times, strict=True), True),  # by timestamp
    }


CASES = ("dfgr_real", "dfgr_fake", "metagr_items", "session_fake")


def _attend(base, grad_out, spec, form, scale_len, kernel: AttentionKernel, dtype):
    leaves = {n: t.detach().to(dtype).requires_grad_(True) for n, t in base.items()}
    out = jagged_attention(
        leaves["q"],
        leaves["k"],
        leaves["v"],
        spec,
        form=form,
        scale_len=scale_len,
        self_k=leaves.get("self_k"),
        self_v=leaves.get("self_v"),
        kernel=kernel,
    )
    grads = torch.autograd.grad(out, list(leaves.values()), grad_out.to(dtype))
    return {"out": out.detach(), **{f"d{n}": g for n, g in zip(leaves, grads)}}


def compare(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> Dict:
    """Errors of ``got`` against the float64 ``want``, and whether they are inside ``dtype``'s tolerance."""
    got, want = got.double(), want.double()
    diff = (got - want).abs()
    rel_l2 = float(diff.norm() / want.norm().clamp_min(1e-30))
    finite = bool(torch.isfinite(got).all())  # NaN never passes
    if dtype == torch.float32:
        ok = finite and bool((diff <= FP32_TOL + FP32_TOL * want.abs()).all()) and rel_l2 <= FP32_TOL
    else:
        ok = finite and rel_l2 <= BF16_REL_TOL
    return {"max_abs": float(diff.max()) if diff.numel() else 0.0, "rel_l2": rel_l2, "pass": ok}


def check_case(
    lengths,
    case: str,
    form: str,
    dtype: torch.dtype,
    kernels: Sequence[str],
    heads: int,
    qk_dim: int,
    v_dim: int,
    device: torch.device,
    seed: int = 0,
) -> Dict:
    """One (case, form, dtype): each backend in ``kernels`` against the float64 reference on the same inputs."""
    spec, with_self = case_specs(lengths, device)[case]
    g = torch.Generator(device=device).manual_seed(seed)
    shapes = {
        "q": (spec.q_total, heads, qk_dim),
        "k": (spec.kv_total, heads, qk_dim),
        "v": (spec.kv_total, heads, v_dim),
    }
    if with_self:
        shapes.update(self_k=(spec.q_total, heads, qk_dim), self_v=(spec.q_total, heads, v_dim))
    base = {n: torch.randn(*s, generator=g, device=device).to(dtype) for n, s in shapes.items()}
    grad_out = torch.randn(spec.q_total, heads, v_dim, generator=g, device=device).to(dtype)
    scale_len, form = max(spec.max_kv_len, 1), AttentionForm(form)
    want = _attend(base, grad_out, spec, form, scale_len, AttentionKernel.REFERENCE, torch.float64)
    result = {"case": case, "form": form.value, "dtype": str(dtype).replace("torch.", ""), "kernels": {}}
    for name in kernels:
        try:  # a fresh spec per backend: no cache of one backend reaches another
            got = _attend(
                base, grad_out, case_specs(lengths, device)[case][0], form, scale_len, AttentionKernel(name), dtype
            )
            errors = {t: compare(got[t], want[t], dtype) for t in want}
            result["kernels"][name] = {"pass": all(e["pass"] for e in errors.values()), "errors": errors}
        except Exception as e:  # noqa: BLE001  a missing or broken backend is an entry, not a crash
            result["kernels"][name] = {"pass": False, "error": describe(e)}
    return result


def correctness(
    lengths, kernels: Sequence[str], heads: int, qk_dim: int, v_dim: int, device: torch.device, deadline: float
) -> List[Dict]:
    """Every case x form x {fp32, bf16}, TF32 off; the ones left when ``deadline`` passes are marked skipped."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    checks = []
    try:
        for dtype in (torch.float32, torch.bfloat16):
            for form in (f.value for f in AttentionForm):
                for case in CASES:
                    if time.monotonic() > deadline:
                        checks.append(
                            {
                                "case": case,
                                "form": form,
                                "dtype": str(dtype).replace("torch.", ""),
                                "skipped": "time guard",
                            }
                        )
                        continue
                    checks.append(check_case(lengths, case, form, dtype, kernels, heads, qk_dim, v_dim, device))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
    return checks


# --- timing: the models' interaction stacks, forward + backward -----------------------------------


# ``DualFlowInteraction.forward`` and ``MetaGRInteraction.forward`` (position mask, no timestamps) on
# plain tensors: the fake flow's states, and the item tokens' states
dfgr_forward, metagr_forward = dual_flow_states, interleaved_states
FORWARDS = {"dfgr": dfgr_forward, "metagr": metagr_forward}


def stack_config(
    d_model: int, num_layers: int, num_heads: int, qk_dim: int, v_dim: int, seq_len: int, form: str, kernel: str
) -> InteractionConfig:
    """The interaction config of a timed stack (``max_seq_len`` = N: the position table and pointwise scale)."""
    return InteractionConfig(
        d_model=d_model,
        num_layers=num_layers,
        num_heads=num_heads,
        attention_dim=qk_dim,
        linear_dim=v_dim,
        attention_form=form,
        max_seq_len=seq_len,
        kernel=kernel,
    )


def _measure(
    config: InteractionConfig,
    model: str,
    lengths,
    warmup: int,
    repeats: int,
    max_cell_s: float,
    device: torch.device,
    seed: int,
) -> Dict:
    torch.manual_seed(seed)
    stack = GenerativeStack(config, device=device)
    offsets, total = offsets_of(lengths, device), int(sum(lengths))
    first = torch.randn(total, config.d_model, device=device, requires_grad=True)  # the embeddings' outputs
    second = torch.randn(total, config.d_model, device=device, requires_grad=True)
    grad = torch.randn(total, config.d_model, device=device)
    forward = FORWARDS[model]

    def step() -> None:
        with torch.autocast(device.type, dtype=TIMING_DTYPE):
            out = forward(stack, first, second, offsets)
        out.backward(grad.to(out.dtype))

    def timed_step() -> float:
        stack.zero_grad(set_to_none=True)
        first.grad = second.grad = None
        return timed_ms(step, device)

    first_ms = timed_step()  # compiles kernels, warms caches
    warm_ms = [timed_step() for _ in range(max(warmup - 1, 0))]
    per_step = (warm_ms[-1] if warm_ms else first_ms) / 1e3
    repeats = max(1, min(repeats, int(max_cell_s / max(per_step, 1e-9))))  # the cell's own time guard
    times = [timed_step() for _ in range(repeats)]
    result = {"first_step_ms": first_ms, "warmup": warmup, "repeats": repeats, **spread(times)}
    result.update(_peak_memory(timed_step, device))
    return result


def _peak_memory(timed_step: Callable[[], float], device: torch.device) -> Dict:
    """Peak bytes allocated during one more step, counting the model, inputs and activations (MiB)."""
    if device.type != "cuda":
        return {"peak_mb": None, "start_mb": None}
    torch.cuda.synchronize(device)
    start = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    timed_step()
    return {"peak_mb": torch.cuda.max_memory_allocated(device) / 2**20, "start_mb": start / 2**20}


def time_cell(
    model: str,
    kernel: str,
    lengths,
    seq_len: int,
    dims: Dict,
    form: str,
    warmup: int,
    repeats: int,
    max_cell_s: float,
    device: torch.device,
    seed: int = 0,
) -> Dict:
    """One (model, backend, N) cell: times and peak memory, ``{"oom": True}`` or ``{"error": ...}``; never raises."""
    result = _guarded(model, kernel, lengths, seq_len, dims, form, warmup, repeats, max_cell_s, device, seed)
    gc.collect()  # the exception and its frames' tensors are gone once _guarded has returned
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def _guarded(model, kernel, lengths, seq_len, dims, form, warmup, repeats, max_cell_s, device, seed) -> Dict:
    try:
        config = stack_config(**dims, seq_len=seq_len, form=form, kernel=kernel)
        return _measure(config, model, lengths, warmup, repeats, max_cell_s, device, seed)
    except torch.cuda.OutOfMemoryError:
        return {"oom": True}
    except Exception as e:  # noqa: BLE001  a broken backend is an entry, not a crash
        return {"oom": True} if "out of memory" in str(e).lower() else {"error": describe(e)}
