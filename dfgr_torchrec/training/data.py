"""The prepared data set of a run: rank 0 fetches and prepares it, every rank then opens it."""

from __future__ import annotations

import torch.distributed as dist

from dfgr_torchrec.data.config import load_data_config
from dfgr_torchrec.data.dataset import PreparedData
from dfgr_torchrec.data.prepare import ensure_prepared
from dfgr_torchrec.training.distributed import patient_barrier


def prepare_data(data_config_path: str) -> PreparedData:
    """Collective: downloads (``source.download``) and prepares on rank 0, unless up to date, and
    tells every rank the folder (only rank 0 reads the raw log; a prepared copy of the config is
    used, with a warning, when the raw log is gone)."""
    data_config = load_data_config(data_config_path)
    path = [ensure_prepared(data_config, progress=False) if dist.get_rank() == 0 else None]
    patient_barrier()  # preparing may take longer than the collective timeout
    dist.broadcast_object_list(path, src=0)
    return PreparedData(path[0])
