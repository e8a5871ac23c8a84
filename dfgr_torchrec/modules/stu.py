"""HSTU as Meta ships it for ranking (generative-recommenders' ``DlrmHSTU`` with ``STU`` layers).

Three pieces, each usable alone:

- :class:`STULayer`: one sequential transduction unit, Meta's math (see its docstring).
- :class:`STUStack`: ``num_layers`` STU layers over a history and the targets appended after it,
  where the history runs causal self-attention and each target sees the history and itself.
- :class:`HSTUInteraction`: the non-interleaved token layout (one token per interaction,
  ``content MLP(item) + action MLP(action)``), DFGR's position/time encodings and the stack.

Unlike MetaGR (:mod:`~dfgr_torchrec.modules.metagr`, interleaved item/action tokens, loss at
every item token), the loss is on the appended targets only, as in Meta's ranking model.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec.config import InteractionConfig
from dfgr_torchrec.modules.block import split_uvqk
from dfgr_torchrec.modules.encodings import PositionTimeEncoding
from dfgr_torchrec.modules.layer_loop import run_layers
from dfgr_torchrec.modules.stack import TokenStack
from dfgr_torchrec.modules.tokens import PlaceholderAction
from dfgr_torchrec.ops.attention import AttentionForm, AttentionKernel, AttentionSpec, DenseSpec, jagged_attention
from dfgr_torchrec.ops.jagged import lengths_to_offsets, max_length, positions_in_sequence, repeat_per_element

LAYER_NORM_EPS = 1e-6  # Meta's epsilon in every STU LayerNorm


class STULayer(nn.Module):
    """One STU layer of Meta's HSTU (``generative_recommenders/modules/stu.py``).

    ``x -> LayerNorm(eps=1e-6) -> Linear (with bias) -> split (u, v, q, k)``; SiLU on ``u``
    only (``q``, ``k``, ``v`` stay linear); attention weights ``SiLU(q.k / sqrt(d_qk)) / n``
    with ``n`` the batch's longest sequence (given as ``scale_len`` by the caller: Meta's
    normaliser, not a fixed ``max_seq_len``); then
    ``x + W_o(dropout(concat[u, a, u * LayerNorm(a, eps=1e-6)]))`` with ``W_o`` of input width
    ``3 * H * d_v`` and no bias (Meta adds ``x`` as the bias of its ``addmm``). The LayerNorm of
    ``a`` is over all heads together (width ``H * d_v``). ``W_uvqk`` and ``W_o`` are
    xavier-uniform, the ``uvqk`` bias zero; they are plain parameters of this module so that
    DistributedModelParallel, which calls ``reset_parameters`` on the modules that own meta
    parameters, applies this init.

    :meth:`project`, :meth:`attend` and :meth:`finish` are split so that a stack can run the
    history and the targets through one projection and two attentions (:class:`STUStack`).

    Args:
        d_model: token width.
        num_heads: ``H``.
        attention_dim: ``d_qk`` per head.
        linear_dim: ``d_v`` (and ``u``) per head.
        dropout: on the concatenation fed to ``W_o``.
        form: ``POINTWISE`` (Meta's, the default) or ``SOFTMAX`` (an ablation).
        kernel: the attention backend.
        device: where to allocate (``"meta"`` for DistributedModelParallel).
        scale_len: a constant pointwise normaliser (``interaction.attention_scale_len``); None
            (Meta's) makes every call give the batch's longest sequence.

    Example::

        layer = STULayer(d_model=64, num_heads=2, attention_dim=32, linear_dim=32)
        spec = AttentionSpec(offsets, offsets, positions, positions, strict=False)  # causal
        y = layer(x, spec, scale_len=int(lengths.max()))  # x, y: [T, 64]
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        attention_dim: int,
        linear_dim: int,
        dropout: float = 0.0,
        form: AttentionForm = AttentionForm.POINTWISE,
        kernel: AttentionKernel = AttentionKernel.AUTO,
        device: Optional[torch.device] = None,
        scale_len: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.num_heads, self.attention_dim, self.linear_dim = num_heads, attention_dim, linear_dim
        self.scale_len = scale_len
        self.form, self.kernel = AttentionForm(form), AttentionKernel(kernel)
        h = num_heads
        self._split = [h * linear_dim, h * linear_dim, h * attention_dim, h * attention_dim]  # u, v, q, k
        self.input_norm = nn.LayerNorm(d_model, eps=LAYER_NORM_EPS, device=device)
        self.uvqk_weight = nn.Parameter(torch.empty(sum(self._split), d_model, device=device))
        self.uvqk_bias = nn.Parameter(torch.empty(sum(self._split), device=device))
        self.attention_norm = nn.LayerNorm(h * linear_dim, eps=LAYER_NORM_EPS, device=device)
        self.output_weight = nn.Parameter(torch.empty(d_model, 3 * h * linear_dim, device=device))
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    @classmethod
    def from_config(cls, config: InteractionConfig, device: Optional[torch.device] = None) -> "STULayer":
        return cls(
            config.d_model,
            config.num_heads,
            config.attention_dim,
            config.linear_dim,
            dropout=config.dropout,
            form=config.attention_form,
            kernel=config.kernel,
            device=device,
            scale_len=config.attention_scale_len,
        )

    def reset_parameters(self) -> None:
        if self.uvqk_weight.is_meta:  # DistributedModelParallel allocates, then calls this again
            return
        nn.init.xavier_uniform_(self.uvqk_weight)
        nn.init.zeros_(self.uvqk_bias)
        nn.init.xavier_uniform_(self.output_weight)

    def project(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[T, d_model]`` -> ``u [T, H*dv]`` (SiLU'd), ``q, k [T, H, dqk]``, ``v [T, H, dv]`` (linear)."""
        uvqk = F.linear(self.input_norm(x), self.uvqk_weight, self.uvqk_bias)
        u, q, k, v = split_uvqk(uvqk, self.num_heads, self.attention_dim, self.linear_dim)
        return F.silu(u), q, k, v  # SiLU on u only: q, k and v stay linear

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        spec: AttentionSpec | DenseSpec,
        self_k: Optional[torch.Tensor] = None,
        self_v: Optional[torch.Tensor] = None,
        scale_len: Optional[int] = None,
    ) -> torch.Tensor:
        """Attention under ``spec`` (plus an optional own key/value); returns ``[T_q, H*dv]``.

        ``scale_len``: the batch's normaliser; None takes the layer's constant ``scale_len``.
        """
        scale_len = scale_len or self.scale_len or (1 if self.form == AttentionForm.SOFTMAX else None)
        if scale_len is None:
            raise ValueError("STULayer.attend: give scale_len (the layer was built without a constant one)")
        out = jagged_attention(
            q, k, v, spec, form=self.form, scale_len=scale_len, self_k=self_k, self_v=self_v, kernel=self.kernel
        )
        return out.flatten(1)

    def finish(self, x: torch.Tensor, attention: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``x + W_o(dropout(concat[u, a, u * LayerNorm(a)]))``."""
        y = torch.cat([u, attention, u * self.attention_norm(attention)], dim=-1)
        return x + F.linear(self.dropout(y), self.output_weight)

    def forward(self, x: torch.Tensor, spec: AttentionSpec, scale_len: Optional[int] = None) -> torch.Tensor:
        """One layer of self-attention of ``x`` under ``spec`` (queries and keys both ``x``)."""
        u, q, k, v = self.project(x)
        return self.finish(x, self.attend(q, k, v, spec, scale_len=scale_len), u)


class STUStack(nn.Module):
    """``num_layers`` :class:`STULayer` over each user's history followed by their targets.

    Per user the sequence is ``[history; targets]`` (Meta's layout: candidates appended after
    the user's interaction history). History tokens attend to history under ``history_spec``;
    target ``a`` attends to the history under ``target_spec`` and to itself, never to another
    target. Both sets share one projection per layer; after the last layer nothing reads the
    history, so its attention is skipped there.

    Args:
        config: ``num_layers`` and the layer hyper-parameters.
        device: where to allocate.
    """

    def __init__(self, config: InteractionConfig, device: Optional[torch.device] = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList([STULayer.from_config(config, device=device) for _ in range(config.num_layers)])

    def forward(
        self,
        history: torch.Tensor,
        targets: torch.Tensor,
        history_spec: AttentionSpec,
        target_spec: AttentionSpec,
        scale_len: Optional[int] = None,
    ) -> torch.Tensor:
        """Returns the targets' states after the last layer, ``[T_targets, d_model]``."""
        out = run_layers(
            self.layers, history, targets, real_spec=history_spec, fake_spec=target_spec, scale_len=scale_len
        )
        return out.fake


class SwishLayerNorm(nn.Module):
    """``x * sigmoid(LayerNorm(x))``: the activation of Meta's embedding MLPs."""

    def __init__(self, dim: int, device: Optional[torch.device] = None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.norm(x))


def embedding_mlp(in_dim: int, hidden_dim: int, out_dim: int, device: Optional[torch.device] = None) -> nn.Sequential:
    """Meta's content/action embedding MLP: ``Linear -> SwishLayerNorm -> Linear -> LayerNorm``."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim, device=device),
        SwishLayerNorm(hidden_dim, device=device),
        nn.Linear(hidden_dim, out_dim, device=device),
        nn.LayerNorm(out_dim, device=device),
    )


def hstu_cache_blocker(config: InteractionConfig) -> Optional[str]:
    """Why an hstu of ``config`` cannot be served from a history cache, or None.

    Meta's pointwise normaliser is the batch's longest ``history + targets``: a cached history's
    keys and values would depend on the candidates scored after it (and a full score on the
    other users of its batch). A constant normaliser, or the softmax form, has no such term.
    """
    if config.attention_form == AttentionForm.POINTWISE and config.attention_scale_len is None:
        return (
            "model.interaction.attention_scale_len: hstu's default normaliser is the batch's longest sequence "
            "(Meta's), so a cached history would depend on its candidates; serving needs a constant "
            "(e.g. the max_seq_len) or attention_form: softmax"
        )
    return None


def split_training_targets(lengths: torch.Tensor, num_targets: int) -> torch.Tensor:
    """How many of each training window's last interactions become targets, ``[B]``.

    ``min(num_targets, L - 1)``, so at least one interaction stays history, except for a
    window of one interaction, which is a target with an empty history (0 for ``L = 0``).
    """
    return torch.minimum(lengths.clamp(max=num_targets), (lengths - 1).clamp(min=1))


class HSTUInteraction(TokenStack):
    """Meta's HSTU ranking interaction: one token per interaction, targets appended, loss on targets.

    Tokens are not interleaved: a history token is ``content_mlp(item) + action_mlp(action)``
    (each MLP ``Linear -> SwishLayerNorm -> Linear -> LayerNorm``, hidden width ``d_model``,
    as Meta's contextual preprocessor); a target/candidate token is
    ``content_mlp(item) + action_mlp(placeholder)`` with a learned placeholder action. DFGR's
    :class:`~dfgr_torchrec.modules.encodings.PositionTimeEncoding` is added (a target is
    encoded at the position after the history it sees, its gap measured from the last of
    those) and the tokens run through an :class:`STUStack` and a final LayerNorm.

    Visibility: history ``i`` sees history ``j <= i`` (by position; by timestamp in session
    mode, where a session sees itself whole); a target sees the whole history (by position;
    ``t_j < t_target`` in session mode) and itself, never another target. The pointwise
    normaliser ``n`` is the batch's longest ``history + targets`` length.

    Training (:meth:`forward`): the last ``num_targets`` interactions of each window
    (:func:`split_training_targets`) are the targets, built with the placeholder action; the
    earlier ones are the history. Inference (:meth:`score`): the candidates are the targets.

    Args:
        config: interaction hyper-parameters (``d_model``, layers, heads, ``mask_mode``, ...).
        embedding_dim: width of the item/action embeddings fed to the MLPs.
        num_targets: training targets per window.
        device: where to allocate.
    """

    def __init__(
        self, config: InteractionConfig, embedding_dim: int, num_targets: int = 8, device: Optional[torch.device] = None
    ) -> None:
        super().__init__()
        if not (isinstance(num_targets, int) and num_targets > 0):
            raise ValueError(f"num_targets: expected a positive integer, got {num_targets!r}")
        self.config, self.num_targets = config, num_targets
        d = config.d_model
        self.content_mlp = embedding_mlp(embedding_dim, d, d, device=device)
        self.action_mlp = embedding_mlp(embedding_dim, d, d, device=device)
        self.placeholder = PlaceholderAction(embedding_dim, device=device)
        self.encoding = PositionTimeEncoding(
            d, config.max_seq_len, config.num_time_buckets, use_position=config.use_position_encoding, device=device
        )
        self.stack = STUStack(config, device=device)
        self.output_norm = nn.LayerNorm(d, eps=LAYER_NORM_EPS, device=device)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.stack.layers

    @property
    def cache_blocker(self) -> Optional[str]:
        return hstu_cache_blocker(self.config)

    def batch_scale_len(self, lengths: torch.Tensor) -> Optional[int]:
        """Meta's normaliser, the batch's longest ``history + targets``, unless a constant is configured."""
        return None if self.config.attention_scale_len is not None else max(max_length(lengths), 1)

    def target_tokens(self, items: torch.Tensor) -> torch.Tensor:
        """Tokens of targets/candidates: the content with the placeholder action."""
        return self.content_mlp(items) + self.action_mlp(self.placeholder.weight.unsqueeze(0))

    def history_input(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[N, 2, e]`` (item, action) embeddings -> ``[N, d]`` ``content_mlp(item) + action_mlp(action)``."""
        return self.content_mlp(tokens[:, 0]) + self.action_mlp(tokens[:, 1])

    def candidate_input(self, candidates: torch.Tensor) -> torch.Tensor:
        return self.target_tokens(candidates)

    def forward(
        self,
        items: JaggedTensor,
        actions: JaggedTensor,
        timestamps: Optional[JaggedTensor],
        labels: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Training pass: ``(states [K, d_model], labels [K, num_tasks])`` of the targets.

        Args:
            items, actions: ``[T, embedding_dim]`` embeddings of every interaction of the windows.
            timestamps: ``[T]`` int64 times (needed in session mode and for time encodings).
            labels: ``[T, num_tasks]`` labels of every interaction.
        """
        lengths, total = items.lengths(), items.values().shape[0]
        target_lengths = split_training_targets(lengths, self.num_targets)
        positions = positions_in_sequence(items.offsets(), total)
        is_target = positions >= repeat_per_element(lengths - target_lengths, lengths, total)
        history_rows, target_rows = torch.nonzero(~is_target).squeeze(1), torch.nonzero(is_target).squeeze(1)
        times = None if timestamps is None else timestamps.values()
        states = self._run(
            torch.stack([items.values()[history_rows], actions.values()[history_rows]], dim=1),
            lengths - target_lengths,
            None if times is None else times[history_rows],
            items.values()[target_rows],
            target_lengths,
            None if times is None else times[target_rows],
        )
        return states, labels[target_rows]

    def score(
        self,
        items: JaggedTensor,
        actions: JaggedTensor,
        candidates: JaggedTensor,
        history_timestamps: Optional[JaggedTensor] = None,
        candidate_timestamps: Optional[JaggedTensor] = None,
    ) -> torch.Tensor:
        """Inference pass: ``[M, d_model]``, one state per candidate (jagged like ``candidates``)."""
        if items.lengths().shape != candidates.lengths().shape:
            raise ValueError(
                f"history has {items.lengths().numel()} users but candidates have {candidates.lengths().numel()}"
            )
        if (history_timestamps is None) != (candidate_timestamps is None):
            raise ValueError("give timestamps for both history and candidates, or for neither")
        return self._run(
            torch.stack([items.values(), actions.values()], dim=1),
            items.lengths(),
            None if history_timestamps is None else history_timestamps.values(),
            candidates.values(),
            candidates.lengths(),
            None if candidate_timestamps is None else candidate_timestamps.values(),
        )

    def _run(
        self,
        history: torch.Tensor,
        history_lengths: torch.Tensor,
        history_times: Optional[torch.Tensor],
        targets: torch.Tensor,
        target_lengths: torch.Tensor,
        target_times: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """The targets' final states after their users' histories (:meth:`TokenStack.score_pass`)."""
        return self.score_pass(
            history,
            lengths_to_offsets(history_lengths),
            history_times,
            targets,
            lengths_to_offsets(target_lengths),
            target_times,
        )


__all__: List[str] = [
    "HSTUInteraction",
    "STULayer",
    "STUStack",
    "SwishLayerNorm",
    "embedding_mlp",
    "hstu_cache_blocker",
    "split_training_targets",
]
