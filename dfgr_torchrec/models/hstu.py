"""``hstu``: generative-recommenders' ranking model (Meta's ``DlrmHSTU``) on this package's inputs.

One token per interaction (``content MLP + action MLP``, not interleaved), the candidates
appended after the history with a learned placeholder action, STU layers, and the loss on the
appended targets only: in training, the last ``num_targets`` interactions of each window. See
:class:`~dfgr_torchrec.modules.stu.HSTUInteraction` for the layout and
:class:`~dfgr_torchrec.modules.stu.STULayer` for the layer math.

Where it differs from Meta's code, to share this package's inputs and heads with DFGR:
positions/time gaps use DFGR's ``PositionTimeEncoding`` (absolute position, log2 gap to the
previous interaction; Meta counts positions back from the end of the history and buckets the
time to the request, and scales the tokens by ``sqrt(d)``), user features are added to every
item token unless ``embeddings.user_context`` is ``"token"`` (then one contextual token is
prepended, as Meta does, with the user as its content and a zero action), the action embedding
is the package's (summed action-feature tables) rather than Meta's per-action-type concat, and the
prediction head is :class:`~dfgr_torchrec.modules.heads.MultiTaskHead`.
"""

from __future__ import annotations

from typing import Optional

import torch
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec.batch import SequenceBatch
from dfgr_torchrec.config import HSTUModelConfig
from dfgr_torchrec.models.output import RankingOutput
from dfgr_torchrec.models.ranking import GenerativeRankingModel
from dfgr_torchrec.modules import context_token as context_ops
from dfgr_torchrec.modules.stu import HSTUInteraction

DEFAULT_NUM_TARGETS = 8


class HSTUModel(GenerativeRankingModel):
    """HSTU ranking: trains on the last ``num_targets`` interactions of each window, scores candidates.

    ``forward`` (training) moves the last ``num_targets`` interactions of every window to the
    candidate side (placeholder action, each seeing the earlier history and itself) and
    returns the BCE on them: ``RankingOutput.logits`` / ``labels`` hold those targets' rows
    only (``min(num_targets, L - 1)`` per user of ``L`` interactions; ``L = 1`` gives one
    target with an empty history). ``score_candidates`` scores each user's candidates after
    the whole history. DFGR, by contrast, trains on every history position.

    Args:
        config: embeddings, interaction (``d_model``, layers, heads, ``mask_mode``, ...) and tasks.
        device: ``"meta"`` to let DistributedModelParallel allocate and shard.
        num_targets: training targets per window (Meta's ``num_targets``); None: ``model.num_targets``,
            else 8.

    Example::

        model = HSTUModel(config)               # config sized by fill_from_data
        out = model(batch)                      # RankingOutput: loss, logits [K, num_tasks] of the targets
        out.loss.backward()
        scores = model.score_candidates(batch)  # JaggedTensor of [M, num_tasks] logits
    """

    def __init__(
        self, config: HSTUModelConfig, device: Optional[torch.device] = None, num_targets: Optional[int] = None
    ) -> None:
        super().__init__(config, merge_tokens=False, device=device)  # the stack's MLPs merge the tokens
        self.interaction = HSTUInteraction(
            config.interaction,
            config.embeddings.embedding_dim,
            num_targets=num_targets or getattr(config, "num_targets", None) or DEFAULT_NUM_TARGETS,
            device=device,
        )

    @property
    def num_targets(self) -> int:
        return self.interaction.num_targets

    # The serving protocol is GenerativeRankingModel's (dfgr_torchrec.models.ranking), but for the
    # context token: the user as the content of a history interaction with a zero action, as in training
    def context_history_token(self, users: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if users is None or not context_ops.uses_context_token(self.config.embeddings):
            return None
        return torch.stack([users, torch.zeros_like(users)], dim=1)

    def forward(self, batch: SequenceBatch) -> RankingOutput:
        emb = self.embedding(batch.features)
        items, actions, times, kept = context_ops.with_user_context(
            self.config.embeddings, emb, batch.history_timestamps(), None
        )
        labels = batch.labels
        if kept is not None:  # the context token is history, never a target: its label row is unused
            lengths = emb.items.lengths()
            labels = context_ops.prepend_per_user(labels, lengths, None)[0]
        # the interaction is free of sharded modules: a leaf for TorchRec's pipeline tracer
        targets = self.interaction(items, actions, times, labels)
        states, labels = targets[0], targets[1]
        logits = self.head(states)
        loss, task_losses = self.loss(logits, labels)
        return RankingOutput(loss=loss, task_losses=task_losses, logits=logits, labels=labels)

    def score_candidates(self, batch: SequenceBatch) -> JaggedTensor:
        """Logits ``[M, num_tasks]`` for every candidate, jagged per user."""
        emb = self.embedding(batch.features)
        candidate_times = batch.candidate_timestamps_jagged()
        items, actions, times, _ = context_ops.with_user_context(
            self.config.embeddings, emb, batch.history_timestamps(), candidate_times
        )
        states = self.interaction.score(items, actions, emb.candidates, times, candidate_times)
        return JaggedTensor(values=self.head(states), lengths=emb.candidates.lengths())
