"""Test helpers: a user-id feature on synthetic batches and configs."""

import dataclasses
from typing import Optional, Sequence

import torch
from torchrec import KeyedJaggedTensor

from dfgr_torchrec.batch import SequenceBatch
from dfgr_torchrec.config import RankingModelConfig

USER_FEATURE, USER_ROWS = "user_id", 7


def with_user_feature(config: RankingModelConfig, user_context) -> RankingModelConfig:
    """``config`` with a ``user_id`` table placed by ``user_context`` (``"add"`` or ``"token"``)."""
    embeddings = dataclasses.replace(
        config.embeddings, user_vocab_sizes={USER_FEATURE: USER_ROWS}, user_context=user_context
    )
    return dataclasses.replace(config, embeddings=embeddings)


def with_user_ids(batch: SequenceBatch, ids: Optional[Sequence[int]] = None) -> SequenceBatch:
    """``batch`` with one ``user_id`` per user (by default ``1, 2, ...``)."""
    num_users = batch.history_lengths.numel()
    ids = list(ids) if ids is not None else [1 + u % (USER_ROWS - 1) for u in range(num_users)]
    kjt = batch.features
    per_key = kjt.to_dict()
    if USER_FEATURE in per_key:
        del per_key[USER_FEATURE]
    keys = [*per_key, USER_FEATURE]
    values = [jt.values() for jt in per_key.values()] + [kjt.values().new_tensor(ids)]
    lengths = [jt.lengths() for jt in per_key.values()] + [kjt.lengths().new_ones(num_users)]
    features = KeyedJaggedTensor.from_lengths_sync(keys=keys, values=torch.cat(values), lengths=torch.cat(lengths))
    return dataclasses.replace(batch, features=features)
