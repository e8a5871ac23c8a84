"""TorchX components for dfgr_torchrec.

On a laptop (from the repository root, the virtual environment active so ``python`` and
``torchrun`` are the project's)::

    torchx run -s local_cwd ./launch/dfgr.py:train --config configs/train/dfgr_movielens.yaml -j 1x2
    torchx run -s local_cwd ./launch/dfgr.py:evaluate --config configs/train/dfgr_movielens.yaml -j 1x2

On a cluster, the same components with a scheduler and an image holding the project (the
``Dockerfile`` at the repository root builds one)::

    torchx run -s slurm ./launch/dfgr.py:train --config configs/train/dfgr_movielens.yaml -j 4x8 --gpu 8 --max_retries 3
    torchx run -s kubernetes --workspace "" ./launch/dfgr.py:train --image <registry>/dfgr:latest -j 2x8 --gpu 8 ...

(``--workspace ""``: use the pushed image as it is; without it TorchX first rebuilds the image
with the local checkout on top, which needs a Docker daemon.)

Resources per node, unless given: with GPUs, ``CPUS_PER_GPU`` CPUs and ``MEM_MB_PER_GPU`` MB
per GPU (at most ``MAX_CPUS`` and ``MAX_MEM_MB``: 8 GPUs -> 64 CPUs, 512 GiB); on CPU only,
``CPUS_PER_PROCESS`` CPUs and ``MEM_MB_PER_PROCESS`` MB per process of ``-j``. ``--cpu`` and
``--memMB`` override one of them; ``--h`` takes a TorchX named resource (e.g. ``aws_p4d.24xlarge``)
that wins over all three.

``train`` resumes from the run's latest checkpoint, so a scheduler restart (``max_retries``)
continues where the run stopped. Embedding tables are model-parallel (sharded by the
planner across all ``N x M`` ranks), the dual-flow layers data-parallel.
"""

import os
import shlex
import shutil
import sys
from typing import List, Optional, Tuple

import torchx.specs as specs
from torchx.components import dist as torchx_dist

TRAIN_MODULE = "dfgr_torchrec.recipes.train"
TORCHRUN_MODULE = "dfgr_torchrec.training.torchrun"  # torchrun's arguments; preemption exits 143
CPUS_PER_GPU = 8
MEM_MB_PER_GPU = 64 * 1024
MAX_CPUS = 96
MAX_MEM_MB = 1024 * 1024
CPUS_PER_PROCESS = 2
MEM_MB_PER_PROCESS = 4096


def node_resources(j: str, gpu: int, cpu: Optional[int] = None, memMB: Optional[int] = None) -> Tuple[int, int]:
    """``(cpus, memory MB)`` per node: those given, else sized from the GPUs (else the processes).

    Example::

        node_resources("2x8", gpu=8)   # (64, 524288): 8 CPUs and 64 GiB per GPU
        node_resources("1x2", gpu=0)   # (4, 8192): 2 CPUs and 4 GiB per process
    """
    nproc = torchx_dist.parse_nnodes(j)[2]
    if gpu > 0:
        default_cpu, default_mem = min(CPUS_PER_GPU * gpu, MAX_CPUS), min(MEM_MB_PER_GPU * gpu, MAX_MEM_MB)
    else:
        default_cpu, default_mem = CPUS_PER_PROCESS * nproc, MEM_MB_PER_PROCESS * nproc
    return (cpu if cpu is not None else default_cpu), (memMB if memMB is not None else default_mem)


def train(
    *overrides: str,
    config: str = "configs/train/dfgr_movielens.yaml",
    j: str = "1x2",
    image: str = ".",
    cpu: Optional[int] = None,
    gpu: int = 0,
    memMB: Optional[int] = None,
    h: Optional[str] = None,
    max_retries: int = 1,
    max_restarts: int = 0,
    resume: bool = True,
    mounts: Optional[List[str]] = None,
    rdzv_port: int = 29500,
) -> specs.AppDef:
    """Trains and evaluates a ranking model with sharded embeddings (torchrun under dist.ddp).

    Args:
        overrides: config overrides as key=value, e.g. optim.lr=0.002 train.epochs=3
        config: training YAML, relative to the image (the repository root with local_cwd).
        j: nodes x processes per node, e.g. 1x2 on a laptop, 4x8 on a GPU cluster.
        image: the working directory / container image holding the repository.
        cpu: CPUs per node (default: 8 per GPU, at most 96; without GPUs 2 per process).
        gpu: GPUs per node (NCCL and CUDA kernels when > 0).
        memMB: memory per node, in MB (default: 64 GiB per GPU, at most 1 TiB; without GPUs 4 GiB per process).
        h: a TorchX named resource, e.g. aws_p4d.24xlarge (wins over cpu, gpu and memMB).
        max_retries: scheduler restarts of the whole job on failure (a lost node); each resumes
            from the last intact checkpoint.
        max_restarts: torchrun restarts of the workers in place when one fails (elastic
            re-rendezvous); 0: a failure ends the job in seconds and ``max_retries`` restarts it
            (the path the tests prove with a lost node; an in-place re-rendezvous with a
            replaced node timed out in torch 2.13 when tried on one machine).
        resume: continue from the run's latest intact checkpoint if there is one (else start the run).
        mounts: shared storage for the job in TorchX's form, e.g. ``--mounts
            type=bind,src=/shared/dfgr,dst=/shared/dfgr`` (more: ``,type=volume,src=...,dst=...``).
        rdzv_port: rendezvous port on the first node.
    """
    # a restart resumes from the run's checkpoint; the first attempt (no checkpoint yet) starts it
    args = [
        "--config",
        config,
        *(["--resume"] if resume else []),
        *overrides,
        *(["checkpoint.resume=auto"] if resume else []),
    ]
    sizes = node_resources(j, gpu, cpu, memMB)
    return _ddp("dfgr-train", args, j, image, sizes, gpu, h, max_retries, max_restarts, mounts, rdzv_port)


def evaluate(
    *overrides: str,
    config: str = "configs/train/dfgr_movielens.yaml",
    split: str = "test",
    j: str = "1x2",
    image: str = ".",
    cpu: Optional[int] = None,
    gpu: int = 0,
    memMB: Optional[int] = None,
    h: Optional[str] = None,
    mounts: Optional[List[str]] = None,
    rdzv_port: int = 29500,
) -> specs.AppDef:
    """Evaluates the run's best checkpoint (chosen on validation; else its latest) on a split.

    Args:
        overrides: config overrides as key=value, e.g. data.eval_batch_size=256
        config: the training YAML of the run to evaluate.
        split: ``test`` or ``valid``.
        j: nodes x processes per node.
        image: the working directory / container image holding the repository.
        cpu: CPUs per node (default: 8 per GPU, at most 96; without GPUs 2 per process).
        gpu: GPUs per node.
        memMB: memory per node, in MB (default: 64 GiB per GPU, at most 1 TiB; without GPUs 4 GiB per process).
        h: a TorchX named resource, e.g. aws_p4d.24xlarge (wins over cpu, gpu and memMB).
        mounts: shared storage, as for ``train``.
        rdzv_port: rendezvous port on the first node.
    """
    args = ["--config", config, "--eval-only", "--split", split, *overrides]
    return _ddp("dfgr-evaluate", args, j, image, node_resources(j, gpu, cpu, memMB), gpu, h, 0, 0, mounts, rdzv_port)


def _ddp(name, args, j, image, cpu_mem, gpu, h, max_retries, max_restarts, mounts, rdzv_port) -> specs.AppDef:
    cpu, mem_mb = cpu_mem
    env = {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}  # torchrun's own default, set so it prints no banner
    app = torchx_dist.ddp(
        *args,
        m=TRAIN_MODULE,
        name=name,
        image=image,
        cpu=cpu,
        gpu=gpu,
        memMB=mem_mb,
        h=h,
        j=j,
        max_retries=max_retries,
        rdzv_port=rdzv_port,
        mounts=mounts,
        env=env,
    )
    role = app.roles[0]
    # torchrun itself, through the wrapper that ends a preemption with one line and status 143
    torchrun = f"{_torchrun_path()}python -m {TORCHRUN_MODULE} --max_restarts {max_restarts} "
    role.args[-1] = role.args[-1].replace("torchrun ", torchrun, 1)
    return app


def _torchrun_path() -> str:
    """``PATH=<this interpreter's folder>:"$PATH" `` when ``torchrun`` is not on PATH but beside it
    (``.venv/bin/torchx`` run without activating the venv), else nothing; an error when it is neither."""
    if shutil.which("torchrun"):
        return ""
    here = os.path.dirname(sys.executable)
    if os.path.exists(os.path.join(here, "torchrun")):
        return f'PATH={shlex.quote(here)}:"$PATH" '
    raise ValueError(
        f"torchrun is neither on PATH nor beside {sys.executable}: activate the project's environment "
        "(source .venv/bin/activate) or run .venv/bin/torchx"
    )


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
    only: str = "",
    image: str = ".",
    cpu: int = 2,
    memMB: int = 8192,
) -> specs.AppDef:
    """Runs a study (models x data sets x grid x seeds, chosen on validation); resumable: rerun to continue.

    Args:
        config: study YAML, relative to the image (the repository root with local_cwd).
        out: output folder: runs/, results.jsonl, summary.md, PNG plots.
        only: comma-separated data/model glob patterns to launch (e.g. "kuairand/*,*/dfgr"); empty: all.
        image: the working directory / image holding the repository.
        cpu: CPUs to reserve.
        memMB: memory to reserve, in MB.
    """
    args = ["-m", "dfgr_torchrec.cli", "study", "--config", config, "--out", out]
    patterns = [p for p in only.split(",") if p]
    args += ["--only", *patterns] if patterns else []
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
        "-m",
        "dfgr_torchrec.cli",
        "bench",
        "attention",
        "--seq-lens",
        *seq_lens.split(","),
        "--num-candidates",
        str(num_candidates),
        "--batch-size",
        str(batch_size),
        "--repeats",
        str(repeats),
        "--json",
        json,
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
