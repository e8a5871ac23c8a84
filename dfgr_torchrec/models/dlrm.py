"""``dlrm`` and ``dcn``: the DLRM and DCN-v2 baselines, built from TorchRec's own arch modules.

Both read the inputs every pointwise baseline gets (:class:`~dfgr_torchrec.modules.pointwise.PointwiseSamples`):

* sparse features, ``F`` vectors of width ``D`` per sample, stacked in this order: the target
  item (with its side features), the mean item and the mean action embedding of the history
  the target may see, and the user embedding when the data feeds user features (``F`` = 3 or 4);
* one dense feature, ``log1p(visible)`` (how much history the target sees), which
  :class:`torchrec.models.dlrm.DenseArch` (``1 -> D -> D``, ReLU) maps to width ``D`` as DLRM does.

``dlrm`` crosses them with :class:`torchrec.models.dlrm.InteractionArch` (pairwise dot products
of the dense vector and the ``F`` sparse vectors, concatenated with the dense vector); ``dcn``
with :class:`torchrec.models.dlrm.InteractionDCNArch` over a
:class:`torchrec.modules.crossnet.LowRankCrossNet` as ``DLRM_DCN`` does. A
:class:`torchrec.models.dlrm.OverArch` (``head_hidden_dims``, ReLU, then a linear layer of
``num_tasks`` with no activation) gives the logits. The embedding tables are the shared frame's
(:class:`~dfgr_torchrec.models.pointwise.PointwiseRankingModel`), not TorchRec's SparseArch.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing
from torchrec.models.dlrm import DenseArch, InteractionArch, InteractionDCNArch, OverArch, choose
from torchrec.modules.crossnet import LowRankCrossNet

from dfgr_torchrec.config import ArchModelConfig, ModelConfig
from dfgr_torchrec.models.pointwise import PointwiseRankingModel
from dfgr_torchrec.modules.pointwise import PointwiseSamples

SPARSE_FEATURES = ("target", "history_items", "history_actions", "user")  # PointwiseSamples fields, stacking order
DCN_NUM_LAYERS = 3


def sparse_feature_names(config: ModelConfig) -> List[str]:
    """The sparse features of a model, in stacking order (``user`` only with user features)."""
    return list(SPARSE_FEATURES if config.embeddings.user_vocab_sizes else SPARSE_FEATURES[:3])


def dense_features(samples: PointwiseSamples) -> torch.Tensor:
    """``[S, 1]``: ``log1p`` of how many history interactions each sample sees."""
    return torch.log1p(samples.visible.to(samples.target.dtype)).unsqueeze(1)


def sparse_features(samples: PointwiseSamples, names: List[str]) -> List[torch.Tensor]:
    """The ``[S, D]`` sparse features called ``names``; refuses samples whose user features
    do not match the model's."""
    if not is_fx_symbolic_tracing() and (samples.user is not None) != ("user" in names):  # a Proxy is never None
        raise ValueError(f"samples.user: expected {'a tensor' if 'user' in names else 'None'} for features {names}")
    return [getattr(samples, name) for name in names]


def build_over_arch(in_features: int, config: ModelConfig, device: Optional[torch.device]) -> nn.Module:
    """TorchRec's OverArch (``head_hidden_dims`` + ``num_tasks``; its last layer is a bare
    linear, so the output is raw logits), or one linear layer when there are no hidden dims
    (OverArch needs two layers)."""
    sizes = [*config.head_hidden_dims, len(config.tasks)]
    if len(sizes) == 1:
        return nn.Linear(in_features, sizes[0], device=device)
    return OverArch(in_features, sizes, device=device)


def on_device(module: nn.Module, device: Optional[torch.device]) -> nn.Module:
    """Moves a TorchRec module that takes no ``device`` argument to ``device``.

    On ``meta`` it stays on the CPU where it was initialised: DistributedModelParallel would
    allocate it empty and only re-initialises modules with a ``reset_parameters`` (the cross
    net's ParameterLists have none); its data-parallel wrapper moves it to the rank's device.
    """
    return module if device is None or torch.device(device).type == "meta" else module.to(device)


class ArchRankingModel(PointwiseRankingModel):
    """Base of the TorchRec-arch baselines: dense arch -> interaction arch -> dropout -> over arch.

    A subclass builds the interaction (:meth:`build_interaction`) and may change how it is
    called (:meth:`interact`).

    Args:
        config: embeddings (``D``), tasks, ``head_hidden_dims`` (the over arch) and
            ``interaction.dropout`` (on the interaction's output).
        device: ``"meta"`` to let DistributedModelParallel allocate and shard.
    """

    def __init__(self, config: ArchModelConfig, device: Optional[torch.device] = None) -> None:
        super().__init__(config, device=device)
        dim = config.embeddings.embedding_dim
        self.feature_names = sparse_feature_names(config)
        self.dense_arch = DenseArch(in_features=1, layer_sizes=[dim, dim], device=device)
        self.inter_arch, width = self.build_interaction(dim, len(self.feature_names), device)
        self.dropout = nn.Dropout(config.interaction.dropout)
        self.over_arch = build_over_arch(width, config, device)

    def build_interaction(self, dim: int, num_sparse: int, device: Optional[torch.device]) -> Tuple[nn.Module, int]:
        """The interaction arch and the width of its output."""
        raise NotImplementedError

    def interact(self, dense: torch.Tensor, sparse: List[torch.Tensor]) -> torch.Tensor:
        """``dense [S, D]``, ``sparse`` F x ``[S, D]`` -> ``[S, width]`` (TorchRec's ``[S, F, D]`` form)."""
        return self.inter_arch(dense, torch.stack(sparse, dim=1))

    def logits(self, samples: PointwiseSamples) -> torch.Tensor:
        dense = self.dense_arch(dense_features(samples))
        crossed = self.interact(dense, sparse_features(samples, self.feature_names))
        return self.over_arch(self.dropout(crossed))


class DLRMModel(ArchRankingModel):
    """DLRM: the dot products of every pair of the ``F + 1`` vectors (dense and sparse) and the
    dense vector, ``D + C(F + 1, 2)`` wide, through the over arch.

    Example::

        model = DLRMModel(config)   # config sized by fill_from_data
        logits = model.score_candidates(batch).values()   # [M, num_tasks]
    """

    def build_interaction(self, dim: int, num_sparse: int, device: Optional[torch.device]) -> Tuple[nn.Module, int]:
        return InteractionArch(num_sparse_features=num_sparse), dim + choose(num_sparse + 1, 2)


class DCNModel(ArchRankingModel):
    """DCN-v2 (DLRM_DCN's interaction): the ``(F + 1) * D`` concatenation of the dense and sparse
    vectors through a low-rank cross net, same width out, then the over arch.

    The cross net has ``DCN_NUM_LAYERS`` = 3 layers of rank ``D``. Its input is ``N = (F + 1) * D``
    wide, so the rank is ``N / 4`` with the usual ``F = 3`` (``N / 5`` with a user feature):
    the rank TorchRec's LowRankCrossNet recommends to keep the accuracy of the full-rank cross.

    Example::

        model = DCNModel(config)   # config sized by fill_from_data
        logits = model.score_candidates(batch).values()   # [M, num_tasks]
    """

    def build_interaction(self, dim: int, num_sparse: int, device: Optional[torch.device]) -> Tuple[nn.Module, int]:
        width = (num_sparse + 1) * dim
        crossnet = on_device(LowRankCrossNet(in_features=width, num_layers=DCN_NUM_LAYERS, low_rank=dim), device)
        return InteractionDCNArch(num_sparse_features=num_sparse, crossnet=crossnet), width
