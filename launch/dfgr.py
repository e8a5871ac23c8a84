"""TorchX components for dfgr_torchrec.

``torchx run -s local_cwd ./launch/dfgr.py:demo --steps 100`` runs the demo on this machine;
``torchx run -s local_cwd ./launch/dfgr.py:bench_attention`` the cost benchmark. Run them from
the repository root with the virtual environment active (``source .venv/bin/activate``) so
``python`` is the one that has the package. Distributed ``train``/``evaluate`` components
(``dist.ddp`` based, multi-node) come with the training issue.
"""

from typing import List, Optional

import torchx.specs as specs


def demo(
    config: str = "configs/debug/dfgr_synthetic.yaml",
    models: str = "dfgr,metagr",
    steps: Optional[int] = None,
    image: str = ".",
    cpu: int = 2,
    memMB: int = 8192,
) -> specs.AppDef:
    """Trains DFGR (and MetaGR) on generated sequences, then scores held-out candidates.

    Args:
        config: demo YAML config, relative to the image (the repository root with local_cwd).
        models: comma-separated models to train, from ``dfgr`` and ``metagr``.
        steps: training steps (default: the config's ``train.steps``).
        image: the working directory / image holding the repository.
        cpu: CPUs to reserve.
        memMB: memory to reserve, in MB.
    """
    args: List[str] = ["-m", "dfgr_torchrec.cli", "demo", "--config", config, "--model", *models.split(",")]
    if steps is not None:
        args += ["--steps", str(steps)]
    return _single_role_app("dfgr-demo", image, args, cpu, memMB)


def bench_attention(
    seq_lens: str = "256,512,1024",
    num_candidates: int = 64,
    batch_size: int = 4,
    repeats: int = 5,
    json: str = "outputs/bench_attention.json",
    image: str = ".",
    cpu: int = 2,
    memMB: int = 8192,
    gpu: int = 0,
) -> specs.AppDef:
    """DFGR vs MetaGR training and inference cost, side by side; prints a table, writes JSON.

    Args:
        seq_lens: comma-separated history lengths N.
        num_candidates: candidates M per user at inference.
        batch_size: users per ragged batch.
        repeats: timed repetitions (the median is reported).
        json: where to write the results.
        image: the working directory / image holding the repository.
        cpu: CPUs to reserve.
        memMB: memory to reserve, in MB.
        gpu: GPUs to reserve (the benchmark runs on CUDA when one is visible).
    """
    args = [
        "-m", "dfgr_torchrec.cli", "bench", "attention", "--seq-lens", *seq_lens.split(","),
        "--num-candidates", str(num_candidates), "--batch-size", str(batch_size),
        "--repeats", str(repeats), "--json", json,
    ]
    return _single_role_app("dfgr-bench-attention", image, args, cpu, memMB, gpu)


def _single_role_app(name: str, image: str, args: List[str], cpu: int, mem_mb: int, gpu: int = 0) -> specs.AppDef:
    role = specs.Role(
        name=name,
        image=image,
        entrypoint="python",
        args=args,
        resource=specs.Resource(cpu=cpu, gpu=gpu, memMB=mem_mb),
        env={"PYTHONUNBUFFERED": "1"},
    )
    return specs.AppDef(name=name, roles=[role])
