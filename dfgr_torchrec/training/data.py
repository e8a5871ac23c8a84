"""The prepared data set of a run: rank 0 fetches and prepares it, every rank then opens it."""

from __future__ import annotations

import torch.distributed as dist

from dfgr_torchrec.data.config import load_data_config
from dfgr_torchrec.data.dataset import PreparedData
from dfgr_torchrec.data.prepare import prepare, prepared_path
from dfgr_torchrec.data.sources import ensure_source
from dfgr_torchrec.training.distributed import patient_barrier


def prepare_data(data_config_path: str) -> PreparedData:
    """Collective: downloads (``source.download``) and prepares on rank 0, unless up to date."""
    data_config = load_data_config(data_config_path)
    if dist.get_rank() == 0:
        ensure_source(data_config)
        prepare(data_config, progress=False)
    patient_barrier()  # preparing may take longer than the collective timeout
    return PreparedData(prepared_path(data_config))
