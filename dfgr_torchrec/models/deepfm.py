"""``deepfm``: the DeepFM baseline, built on TorchRec's :class:`torchrec.models.deepfm.FMInteractionArch`.

Same inputs, dense arch and over arch as ``dlrm`` / ``dcn`` (:mod:`dfgr_torchrec.models.dlrm`):
the ``F`` sparse features (target, pooled history items and actions, user when fed) go in as a
KeyedTensor, the dense vector (``log1p(visible)`` through DLRM's DenseArch) beside them.
FMInteractionArch returns ``[dense, deep, fm]``: the dense vector, a ReLU layer of width ``D``
over the flattened ``(F + 1) * D`` inputs (TorchRec's DeepFM module) and TorchRec's
FactorizationMachine, a ``[S, 1]`` second-order term. The over arch (``head_hidden_dims`` +
``num_tasks``, raw logits) replaces TorchRec's DeepFM OverArch, a single sigmoid output.

Note that TorchRec's FactorizationMachine flattens its inputs before summing, so its term is
``0.5 * ((sum of all entries)^2 - sum of squared entries)`` over the ``(F + 1) * D`` scalars, not
the per-dimension ``sum_{i<j} <v_i, v_j>`` of the FM paper.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn
from torchrec.models.deepfm import FMInteractionArch
from torchrec.sparse.jagged_tensor import KeyedTensor

from dfgr_torchrec.models.dlrm import ArchRankingModel, on_device


class DeepFMModel(ArchRankingModel):
    """DeepFM: ``[dense, deep, fm]`` (``2 * D + 1`` wide) from FMInteractionArch, through the over arch.

    The deep part is ``D`` wide (TorchRec's ``deep_fm_dimension``).

    Example::

        model = DeepFMModel(config)   # config sized by fill_from_data
        logits = model.score_candidates(batch).values()   # [M, num_tasks]
    """

    def build_interaction(self, dim: int, num_sparse: int, device: Optional[torch.device]) -> Tuple[nn.Module, int]:
        arch = FMInteractionArch(
            fm_in_features=(num_sparse + 1) * dim, sparse_feature_names=list(self.feature_names), deep_fm_dimension=dim
        )
        return on_device(arch, device), 2 * dim + 1

    def interact(self, dense: torch.Tensor, sparse: List[torch.Tensor]) -> torch.Tensor:
        return self.inter_arch(dense, KeyedTensor.from_tensor_list(list(self.feature_names), sparse))
