"""`dfgr bench gpu` without a GPU: the one-line exit, the import path a bare CUDA box has (no
torchrec, fbgemm, duckdb), the whole run at toy sizes on CPU, and the pure logic (batches that keep
the token count fixed, FLOPs, targets, the cell loop's OOM and time guards)."""

import json
import math
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch

from dfgr_torchrec.bench import gpu
from dfgr_torchrec.bench.gpu_plan import (
    FULL,
    QUICK,
    Dims,
    Plan,
    batch_lengths,
    evaluate_targets,
    flop_ratio,
    kernel_verdicts,
    speedups,
    stack_forward_flops,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
ABSENT_THERE = ("torchrec", "fbgemm_gpu", "duckdb", "tensorboard", "tabulate")  # not on the GPU machine
BLOCK = f"import sys\nfor name in {ABSENT_THERE!r}:\n    sys.modules[name] = None  # import raises ImportError\n"
# Guards far above the toy run's ~20 s, so a busy CI machine cannot skip a section (the guards
# themselves are tested on their own below).
TOY = (
    "Plan(seq_lens=(8, 16), tokens=32, ragged=False, dims=Dims(16, 2, 2, 8, 8), form='pointwise', warmup=1, "
    "repeats=1, max_cell_s=120.0, matmul_size=64, check_lengths=(5, 1, 0, 7), correctness_budget_s=600.0, "
    "timing_budget_s=600.0)"
)


def _python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # as on a machine without a GPU
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _assert_needs_a_gpu(proc: subprocess.CompletedProcess, json_path: pathlib.Path) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs a CUDA GPU" in lines[0], proc.stderr
    assert not json_path.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the command would run")
def test_the_command_needs_a_gpu_and_says_so_in_one_line(tmp_path):
    out = tmp_path / "gpu.json"
    dfgr = pathlib.Path(sys.executable).parent / "dfgr"
    proc = subprocess.run(
        [str(dfgr), "bench", "gpu", "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    _assert_needs_a_gpu(proc, out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the command would run")
@pytest.mark.parametrize("entry", ["dfgr", "python -m"])
def test_both_entry_points_get_to_the_gpu_check_without_torchrec_fbgemm_duckdb(tmp_path, entry):
    out = tmp_path / "gpu.json"
    if entry == "dfgr":
        call = f"from dfgr_torchrec.cli import main\nsys.exit(main(['bench', 'gpu', '--json', {str(out)!r}]))"
    else:
        call = (
            "import runpy\nsys.argv = ['gpu', '--json', " + repr(str(out)) + "]\n"
            "runpy.run_module('dfgr_torchrec.bench.gpu', run_name='__main__')"
        )
    _assert_needs_a_gpu(_python(BLOCK + call), out)


def test_the_whole_run_needs_only_torch(tmp_path):
    """Every section the GPU runs (backends, stacks, targets, JSON) at toy sizes on CPU, with torchrec,
    fbgemm, duckdb, tensorboard and tabulate unimportable, as on the GPU machine."""
    out = tmp_path / "gpu.json"
    code = BLOCK + textwrap.dedent(f"""
        import torch
        from dfgr_torchrec.bench import gpu
        from dfgr_torchrec.bench.gpu_plan import Dims, Plan
        from dfgr_torchrec.bench.output import write_json
        from dfgr_torchrec.ops import jagged
        assert not jagged.HAS_FBGEMM
        write_json(gpu.collect({TOY}, torch.device("cpu"), log=lambda line: None), {str(out)!r})
    """)
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["schema"] == "dfgr-bench-gpu/1" and result["complete"] is True
    assert set(result) >= {
        "settings",
        "environment",
        "matmul",
        "correctness",
        "timing",
        "targets",
        "all_passed",
        "section_seconds",
    }
    assert set(result["section_seconds"]) == {"environment", "matmul", "correctness", "timing", "total"}
    assert {"torch", "triton", "cuda", "load_average", "load_average_end"} <= set(result["environment"])
    correctness = result["correctness"]
    assert len(correctness["checks"]) == 4 * 2 * 2  # cases x forms x dtypes
    assert correctness["verdicts"]["tiled"] is True and correctness["verdicts"]["padded"] is True
    assert correctness["verdicts"]["triton"] is False  # no CUDA here: an error entry, not a crash
    assert all("error" in c["kernels"]["triton"] for c in correctness["checks"])
    rows = result["timing"]["rows"]
    assert len(rows) == 2 * 3 * 2  # N x backends x models
    for row in rows:
        assert row["tokens"] == 32
        if row["kernel"] == "triton":
            assert "error" in row
        else:
            assert row["median_ms"] > 0 and row["peak_mb"] is None and row["tflops"] > 0
    assert set(result["targets"]) == {
        "triton_correct",
        "dfgr_triton_vs_padded",
        "dfgr_triton_vs_tiled",
        "triton_memory_linear",
        "triton_matmul_fraction",
        "dfgr_metagr_speedup_vs_flops",
    }
    assert result["targets"]["triton_correct"]["pass"] is False and result["all_passed"] is False


@pytest.mark.parametrize("form", ["pointwise", "softmax"])
def test_the_timed_stacks_are_the_models_forwards(form):
    from torchrec.sparse.jagged_tensor import JaggedTensor

    from dfgr_torchrec.bench.gpu_work import dfgr_forward, metagr_forward, offsets_of, stack_config
    from dfgr_torchrec.modules.dual_flow import DualFlowInteraction
    from dfgr_torchrec.modules.metagr import MetaGRInteraction
    from dfgr_torchrec.modules.stack import GenerativeStack

    lengths = [5, 1, 0, 9]
    config = stack_config(16, 3, 2, 8, 4, seq_len=16, form=form, kernel="padded")
    offsets = offsets_of(lengths, torch.device("cpu"))
    first, second = torch.randn(sum(lengths), 16), torch.randn(sum(lengths), 16)
    jagged = lambda t: JaggedTensor(values=t, lengths=torch.tensor(lengths), offsets=offsets)  # noqa: E731
    torch.manual_seed(0)
    stack = GenerativeStack(config)
    for model, ours in ((DualFlowInteraction(config), dfgr_forward), (MetaGRInteraction(config), metagr_forward)):
        model.load_state_dict(stack.state_dict())
        torch.testing.assert_close(ours(stack, first, second, offsets), model(jagged(first), jagged(second)).values())


def test_batches_keep_the_token_count_fixed():
    assert [len(batch_lengths(n, 65536, ragged=False)) for n in FULL["seq_lens"]] == [64, 16, 4]
    for n in (*FULL["seq_lens"], *QUICK["seq_lens"]):
        assert batch_lengths(n, 65536, ragged=False) == [n] * (65536 // n)
        ragged = batch_lengths(n, 65536, ragged=True, seed=3)
        assert sum(ragged) == 65536 and ragged == batch_lengths(n, 65536, ragged=True, seed=3)
        assert all(n // 2 <= length <= n for length in ragged[:-1]) and 0 < ragged[-1] <= n
    for n, tokens in ((3000, 65536), (8192, 4096), (0, 64)):
        with pytest.raises(ValueError, match="multiple"):
            batch_lengths(n, tokens, ragged=False)


def test_stack_flops_are_the_models_flops_without_head_and_merge():
    from dfgr_torchrec.config import InteractionConfig, MergeOp, RankingModelConfig, SequenceEmbeddingConfig, TaskConfig
    from dfgr_torchrec.models.flops import dfgr_forward_flops, metagr_forward_flops

    dims = Dims(d_model=48, num_layers=3, num_heads=4, qk_dim=16, v_dim=8)
    config = RankingModelConfig(
        embeddings=SequenceEmbeddingConfig(item_vocab_size=10, embedding_dim=48, merge=MergeOp.SUM),
        interaction=InteractionConfig(d_model=48, num_layers=3, num_heads=4, attention_dim=16, linear_dim=8),
        tasks=[TaskConfig("t")],
        head_hidden_dims=[],
    )
    lengths = torch.tensor([7, 1, 30, 128])
    head = 2 * 48 * 1 * lengths.sum().item()  # d_model -> 1 task, per scored token
    for model, theirs in (("dfgr", dfgr_forward_flops), ("metagr", metagr_forward_flops)):
        want = float(theirs(config, lengths).sum()) - head
        assert stack_forward_flops(model, lengths.tolist(), dims) == pytest.approx(want, rel=1e-12)


def test_the_flop_ratio_goes_from_one_to_two():
    dims = FULL["dims"]
    ratios = [flop_ratio(batch_lengths(n, 65536, ragged=False), dims) for n in (16, 1024, 4096, 16384)]
    assert 1 < ratios[0] < ratios[1] < ratios[2] < ratios[3] < 2
    assert ratios[2] == pytest.approx(1.716, abs=1e-3)  # dense layers still weigh at N = 4096 at these widths


def _plan(**changes) -> Plan:
    base = dict(FULL)
    base.update(changes)
    return Plan(**base, ragged=False, form="pointwise")


def _rows(plan: Plan, ms: dict, peaks: dict) -> list:
    rows = []
    for (model, kernel, n), value in ms.items():
        lengths = batch_lengths(n, plan.tokens, ragged=False)
        row = {"model": model, "kernel": kernel, "seq_len": n, "users": len(lengths), "tokens": plan.tokens}
        row.update({"oom": True} if value is None else {"median_ms": value, "peak_mb": peaks.get((model, kernel, n))})
        rows.append(gpu.annotate(row, plan, lengths))
    return rows


def test_targets_pass_fail_and_unmeasured():
    plan = _plan()
    ratio = flop_ratio(batch_lengths(4096, plan.tokens, ragged=False), plan.dims)
    ms = {
        ("dfgr", "triton", 4096): 10.0,
        ("dfgr", "padded", 4096): 60.0,
        ("dfgr", "tiled", 4096): 14.0,
        ("metagr", "triton", 4096): 10.0 * ratio * 0.97,
        ("dfgr", "triton", 1024): 9.0,
        ("dfgr", "triton", 16384): 11.0,
    }
    peaks = {("dfgr", "triton", 1024): 1000.0, ("dfgr", "triton", 16384): 1200.0}
    rows = _rows(plan, ms, peaks)
    flops = stack_forward_flops("dfgr", batch_lengths(4096, plan.tokens, ragged=False), plan.dims) * 3
    matmul = flops / 10e-3 / 1e12 / 0.4  # triton DFGR reaches 40% of it
    targets = evaluate_targets(plan, rows, speedups(rows, plan), matmul, True)
    verdicts = {name: t["pass"] for name, t in targets.items()}
    assert verdicts == {
        "triton_correct": True,
        "dfgr_triton_vs_padded": True,
        "dfgr_triton_vs_tiled": False,
        "triton_memory_linear": True,
        "triton_matmul_fraction": True,
        "dfgr_metagr_speedup_vs_flops": True,
    }
    assert targets["dfgr_triton_vs_padded"]["value"] == pytest.approx(6.0)
    assert targets["dfgr_triton_vs_tiled"]["value"] == pytest.approx(1.4)
    assert targets["triton_memory_linear"]["value"] == pytest.approx(1.2)
    assert targets["triton_matmul_fraction"]["value"] == pytest.approx(0.4)
    assert targets["dfgr_metagr_speedup_vs_flops"]["value"] == pytest.approx(0.97)

    ms[("dfgr", "padded", 4096)] = None  # the padded backend ran out of memory
    del ms[("dfgr", "triton", 16384)]
    targets = evaluate_targets(plan, _rows(plan, ms, peaks), [], None, None)
    for name in (
        "triton_correct",
        "dfgr_triton_vs_padded",
        "triton_memory_linear",
        "triton_matmul_fraction",
        "dfgr_metagr_speedup_vs_flops",
    ):
        assert targets[name]["pass"] is None and targets[name]["why"] == "not measured"


def test_kernel_verdicts():
    ok = {"kernels": {"a": {"pass": True}, "b": {"pass": False, "error": "x"}}}
    assert kernel_verdicts([ok, ok], ["a", "b", "c"]) == {"a": True, "b": False, "c": False}
    skipped = {"case": "x", "skipped": "time guard"}
    assert kernel_verdicts([ok, skipped], ["a", "b"]) == {"a": None, "b": False}
    assert kernel_verdicts([], ["a"]) == {"a": None}


def test_cells_after_an_oom_or_past_the_deadline_are_not_run():
    plan = _plan(seq_lens=(1024, 4096, 16384), kernels=("triton", "padded"), models=("dfgr",))
    calls = []

    def measure(model, kernel, lengths, n):
        calls.append((kernel, n))
        assert sum(lengths) == plan.tokens
        return {"oom": True} if (kernel, n) == ("padded", 4096) else {"median_ms": 2.0, "peak_mb": 1.0}

    rows = gpu.run_cells(plan, measure, deadline=math.inf, log=lambda line: None)
    assert calls == [("triton", 1024), ("padded", 1024), ("triton", 4096), ("padded", 4096), ("triton", 16384)]
    assert rows[-1]["oom"] is True and "4096" in rows[-1]["inferred"]
    assert [r["users"] for r in rows] == [64, 64, 16, 16, 4, 4]
    assert all(r["tflops"] > 0 for r in rows if "median_ms" in r)
    assert all(
        r["skipped"] == "time guard" for r in gpu.run_cells(plan, measure, deadline=-math.inf, log=lambda _: None)
    )


def test_a_bad_shape_is_an_argument_error_before_any_gpu_work(capsys):
    from dfgr_torchrec.cli import main

    assert main(["bench", "gpu", "--tokens", "1000"]) == 2
    assert "multiple of every N" in capsys.readouterr().err
    args = gpu.argparse.Namespace(
        quick=True,
        seq_lens=None,
        tokens=None,
        repeats=None,
        ragged=False,
        correctness_budget_s=None,
        timing_budget_s=30.0,
        attention_form="softmax",
        seed=1,
    )
    plan = gpu.plan_from_args(args)
    assert plan.seq_lens == QUICK["seq_lens"] and plan.timing_budget_s == 30.0 and plan.form == "softmax"
