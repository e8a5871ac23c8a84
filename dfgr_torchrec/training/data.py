"""The prepared data set of a run: rank 0 fetches and prepares it, every rank then opens it."""

from __future__ import annotations

import torch.distributed as dist

from dfgr_torchrec.data.config import load_data_config
from dfgr_torchrec.data.dataset import PreparedData, SequenceDataset
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


def rank_dataset(data: PreparedData, split: str, section, env, seed: int = 0) -> SequenceDataset:
    """This rank's share of ``split`` as the config's ``data:`` section says: each user's most recent
    ``max_seq_len`` interactions, the user feature when ``user_id``; training batches of ``batch_size``
    (shuffled by ``seed``, a random window when ``random_window``), evaluation ones of ``eval_batch_size``."""
    train = split == "train"
    batch_size = section.batch_size if train else section.eval_batch_size
    extra = {"seed": seed, "random_window": section.random_window} if train else {}
    return SequenceDataset(
        data, split, batch_size, section.max_seq_len, env.rank, env.world_size, user_id=section.user_id, **extra
    )
