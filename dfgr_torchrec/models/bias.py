"""``bias``: a logistic model with a global, an item (+ side feature) and a user bias per task.

The floor every sequence model must clear: it knows who the user is and how popular the item
is, nothing of the order of the history. With ``data.user_id: true`` the user bias is learned;
without it the model is item-only.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from dfgr_torchrec.config import BiasModelConfig
from dfgr_torchrec.models.pointwise import PointwiseRankingModel
from dfgr_torchrec.modules.bias_terms import bias_table_config
from dfgr_torchrec.modules.pointwise import PointwiseSamples


class BiasModel(PointwiseRankingModel):
    """``logit_t = b_t + item_t + sum(side_t) + user_t``: its tables hold one column per task
    (padded to a multiple of 4, the width FBGEMM's sharded tables need; the extra columns are unused).

    Example::

        model = BiasModel(config)   # config sized by fill_from_data; tables of width num_tasks
        logits = model.score_candidates(batch).values()   # [M, num_tasks]
    """

    def __init__(self, config: BiasModelConfig, device: Optional[torch.device] = None) -> None:
        config.require_complete()
        self.num_tasks = len(config.tasks)
        super().__init__(config, device=device, embeddings=bias_table_config(config.embeddings, self.num_tasks))
        self.global_bias = nn.Parameter(torch.zeros(len(config.tasks), device=device))
        self.reset_parameters()

    def reset_parameters(self) -> None:  # DistributedModelParallel calls it when it allocates a meta model
        if not self.global_bias.is_meta:
            nn.init.zeros_(self.global_bias)

    def logits(self, samples: PointwiseSamples) -> torch.Tensor:
        t = self.num_tasks
        out = samples.target[:, :t] + self.global_bias
        return out if samples.user is None else out + samples.user[:, :t]
