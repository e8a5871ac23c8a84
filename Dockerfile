# The image the cluster components run (`torchx run -s kubernetes ... --image <registry>/dfgr:<tag>`,
# or Slurm with a container runtime): CUDA torch, fbgemm-gpu and torchrec of one row of docs/install.md's
# version table (torch 2.13 / fbgemm-gpu 1.8.0 / torchrec 1.8.0), then this package.
#
#   docker build -t <registry>/dfgr:0.1 .
#   docker build --build-arg TORCH_INDEX_URL=<PyTorch wheel index>/cu126 -t <registry>/dfgr:0.1-cu126 .
#
# The default takes torch and fbgemm-gpu from PyPI, whose Linux x86_64 wheels are CUDA builds;
# TORCH_INDEX_URL picks the wheels of another CUDA version. The working directory is the repository
# root, so the components' relative paths (configs/..., data/...) resolve as with local_cwd;
# mount data/ and runs/ (or set output_dir) on shared storage for multi-node jobs.
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG FBGEMM_VERSION=1.8.0
ARG TORCHREC_VERSION=1.8.0
ARG TORCH_INDEX_URL=""

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /workspace/dfgr

RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
        "torch==${TORCH_VERSION}" "fbgemm-gpu==${FBGEMM_VERSION}" \
 && pip install --no-deps "torchrec==${TORCHREC_VERSION}" \
 && pip install tensordict==0.15.3 torchmetrics==1.0.3 pyre-extensions iopath

# the package's own dependencies first (cached while only the source changes)
COPY pyproject.toml README.md ./
COPY dfgr_torchrec ./dfgr_torchrec
COPY configs ./configs
COPY launch ./launch
RUN pip install -e ".[launch,parquet]" \
 && python -c "import torch, dfgr_torchrec.cli; print('torch', torch.__version__, 'cuda', torch.version.cuda)"  # no GPU at build time: fbgemm's CUDA kernels load at run time

CMD ["python", "-m", "dfgr_torchrec.cli", "--help"]
