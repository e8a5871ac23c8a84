"""``dfgr bench init-scale``: how strong the attention branch of a fresh block is.

Pointwise attention sums ``SiLU(q.k) v`` over the visible keys and divides by a constant
(``attention_scale_len``, default ``max_seq_len``). At initialisation that output has a tiny
variance, and the block's LayerNorm over it (``attention_norm``) divides by
``sqrt(var + eps)``: when ``var`` is near or below ``eps`` the normalised output, and so the
whole attention branch, is damped by ``sqrt(var / (var + eps))`` compared with a LayerNorm
without epsilon. This prints that factor for the first block of a fresh DFGR at each setting
(variance measured on a ragged synthetic batch), so the ablation in docs/studies.md can be read
against it.
"""

from __future__ import annotations

import argparse
from typing import Any, Dict, List

import torch
from tabulate import tabulate

from dfgr_torchrec.bench.output import write_json
from dfgr_torchrec.config import InteractionConfig, RankingModelConfig, SequenceEmbeddingConfig, TaskConfig
from dfgr_torchrec.data.synthetic_batches import SyntheticSequences
from dfgr_torchrec.features import ACTION_FEATURE
from dfgr_torchrec.models import build_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seq-len", type=int, default=200, help="longest history of the batch (MovieLens demo: 200)")
    parser.add_argument("--max-seq-len", type=int, default=256, help="the model's max_seq_len")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eps", type=float, nargs="+", default=[1e-5, 1e-6])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", dest="json_path", default=None)


def attention_variance(config: RankingModelConfig, seq_len: int, batch_size: int, seed: int) -> float:
    """Variance of the first block's pointwise attention output (before its LayerNorm), at init."""
    torch.manual_seed(seed)
    model = build_model(config).eval()
    world = SyntheticSequences(num_items=config.embeddings.item_vocab_size, num_tasks=1, seed=seed)
    batch = world.batch(batch_size, seq_len // 2, seq_len, 1, torch.Generator().manual_seed(seed))
    captured: List[torch.Tensor] = []
    block = model.interaction.blocks[0]
    hook = block.attention_norm.register_forward_hook(lambda _m, args, _out: captured.append(args[0].detach()))
    with torch.no_grad():
        model(batch)
    hook.remove()
    return float(captured[0].var(dim=-1).mean())


def run(args: argparse.Namespace) -> Dict[str, Any]:
    rows = []
    for scale in (args.max_seq_len, args.seq_len):
        config = RankingModelConfig(
            embeddings=SequenceEmbeddingConfig(item_vocab_size=1000, action_vocab_sizes={ACTION_FEATURE: 2}),
            interaction=InteractionConfig(max_seq_len=args.max_seq_len, attention_scale_len=scale),
            tasks=[TaskConfig("t0")],
        )
        var = attention_variance(config, args.seq_len, args.batch_size, args.seed)
        for eps in args.eps:
            rows.append(
                {"scale_len": scale, "eps": eps, "attention_var": var, "branch_gain": (var / (var + eps)) ** 0.5}
            )
    print(tabulate(rows, headers="keys", floatfmt=".3g"))
    result = {"seq_len": args.seq_len, "max_seq_len": args.max_seq_len, "rows": rows}
    write_json(result, args.json_path)
    return result
