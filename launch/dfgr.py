"""TorchX components for dfgr_torchrec.

On a laptop (from the repository root, the virtual environment active so ``python`` and
``torchrun`` are the project's)::

    torchx run -s local_cwd ./launch/dfgr.py:train --config configs/train/dfgr_movielens.yaml -j 1x2
    torchx run -s local_cwd ./launch/dfgr.py:evaluate --config configs/train/dfgr_movielens.yaml -j 1x2

On a cluster, the same components with a scheduler and an image holding the project::

    torchx run -s slurm ./launch/dfgr.py:train --config configs/train/dfgr_movielens.yaml -j 4x8 --gpu 8 --max_retries 3
    torchx run -s kubernetes ./launch/dfgr.py:train --image <registry>/dfgr:latest -j 2x8 --gpu 8 ...

``train`` resumes from the run's latest checkpoint, so a scheduler restart (``max_retries``)
continues where the run stopped. Embedding tables are model-parallel (sharded by the
planner across all ``N x M`` ranks), the dual-flow layers data-parallel.
"""

from typing import List, Optional

import torchx.specs as specs
from torchx.components import dist as torchx_dist

TRAIN_MODULE = "dfgr_torchrec.recipes.train"


def train(
    *overrides: str,
    config: str = "configs/train/dfgr_movielens.yaml",
    j: str = "1x2",
    image: str = ".",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,
    max_retries: int = 0,
    resume: bool = True,
    rdzv_port: int = 29500,
) -> specs.AppDef:
    """Trains and evaluates a ranking model with sharded embeddings (torchrun under dist.ddp).

    Args:
        overrides: config overrides as key=value, e.g. optim.lr=0.002 train.epochs=3
        config: training YAML, relative to the image (the repository root with local_cwd).
        j: nodes x processes per node, e.g. 1x2 on a laptop, 4x8 on a GPU cluster.
        image: the working directory / container image holding the repository.
        cpu: CPUs per node.
        gpu: GPUs per node (NCCL and CUDA kernels when > 0).
        memMB: memory per node, in MB.
        max_retries: scheduler restarts on failure; each resumes from the last checkpoint.
        resume: continue from the run's latest intact checkpoint if there is one (else start the run).
        rdzv_port: rendezvous port on the first node.
    """
    # a restart resumes from the run's checkpoint; the first attempt (no checkpoint yet) starts it
    args = ["--config", config, *(["--resume"] if resume else []), *overrides, *(["checkpoint.resume=auto"] if resume else [])]
    return _ddp("dfgr-train", args, j, image, cpu, gpu, memMB, max_retries, rdzv_port)


def evaluate(
    *overrides: str,
    config: str = "configs/train/dfgr_movielens.yaml",
    split: str = "test",
    j: str = "1x2",
    image: str = ".",
    cpu: int = 2,
    gpu: int = 0,
    memMB: int = 8192,
    rdzv_port: int = 29500,
) -> specs.AppDef:
    """Evaluates the run's best checkpoint (chosen on validation; else its latest) on a split.

    Args:
        overrides: config overrides as key=value, e.g. data.eval_batch_size=256
        config: the training YAML of the run to evaluate.
        split: ``test`` or ``valid``.
        j: nodes x processes per node.
        image: the working directory / container image holding the repository.
        cpu: CPUs per node.
        gpu: GPUs per node.
        memMB: memory per node, in MB.
        rdzv_port: rendezvous port on the first node.
    """
    args = ["--config", config, "--eval-only", "--split", split, *overrides]
    return _ddp("dfgr-evaluate", args, j, image, cpu, gpu, memMB, 0, rdzv_port)


def _ddp(name, args, j, image, cpu, gpu, mem_mb, max_retries, rdzv_port) -> specs.AppDef:
    app = torchx_dist.ddp(
        *args, m=TRAIN_MODULE, name=name, image=image, cpu=cpu, gpu=gpu, memMB=mem_mb, j=j,
        max_retries=max_retries, rdzv_port=rdzv_port,
        env={"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},  # torchrun's own default, set so it prints no banner
    )
    return app


def demo(
    config: str = "configs/debug/dfgr_synthetic.yaml",
    models: str = "dfgr,metagr",
    steps: Optional[int] = None,
    image: str = ".",
    cpu: int = 2,
    memMB: int = 8192,
) -> specs.AppDef:
    """Trains DFGR (and MetaGR) with the recipe on a generated log, then scores held-out candidates.

    Args:
        config: training YAML, relative to the image (the repository root with local_cwd).
        models: comma-separated registered model types, e.g. ``dfgr,metagr``.
        steps: stop each model after this many steps (default: the config's epochs).
        image: the working directory / image holding the repository.
        cpu: CPUs to reserve.
        memMB: memory to reserve, in MB.
    """
    args: List[str] = ["-m", "dfgr_torchrec.cli", "demo", "--config", config, "--model", *models.split(",")]
    if steps is not None:
        args += ["--steps", str(steps)]
    return _single_role_app("dfgr-demo", image, args, cpu, memMB)


def study(
    config: str = "configs/study/quick.yaml",
    out: str = "results/quick",
    image: str = ".",
    cpu: int = 2,
    memMB: int = 8192,
) -> specs.AppDef:
    """Runs a study (models x data sets x grid x seeds, chosen on validation); resumable: rerun to continue.

    Args:
        config: study YAML, relative to the image (the repository root with local_cwd).
        out: output folder: runs/, results.jsonl, summary.md, PNG plots.
        image: the working directory / image holding the repository.
        cpu: CPUs to reserve.
        memMB: memory to reserve, in MB.
    """
    args = ["-m", "dfgr_torchrec.cli", "study", "--config", config, "--out", out]
    return _single_role_app("dfgr-study", image, args, cpu, memMB)


def bench_attention(
    seq_lens: str = "256,512,1024",
    num_candidates: int = 64,
    batch_size: int = 4,
    repeats: int = 9,
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
