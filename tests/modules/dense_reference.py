"""Plain per-user PyTorch references for the interaction modules.

Each builds the whole token sequence of one user and runs ONE dense masked attention over it,
as the paper describes the model: DFGR as a 2N x 2N attention over [real; fake] tokens,
MetaGR over 2N interleaved tokens. The modules under test compute the same thing as two
N x N jagged attentions (DFGR) or on jagged sequences (MetaGR); they must agree.
"""

from typing import List, Optional

import torch
import torch.nn.functional as F

from dfgr_torchrec.config import AttentionForm, MaskMode


def dense_attention(q, k, v, visible, form, scale_len):
    """q, k: [L, H, d]; v: [L, H, dv]; visible: [L, L] bool -> [L, H*dv]."""
    scores = torch.einsum("ihd,jhd->hij", q, k) / q.shape[-1] ** 0.5
    if form == AttentionForm.POINTWISE:
        weights = F.silu(scores) * visible / scale_len
    else:
        weights = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
    return torch.einsum("hij,jhd->ihd", weights, v).reshape(q.shape[0], -1)


def layout(n: int, times: Optional[List[int]], mode: MaskMode):
    """Positions, gaps and order keys of one user's n interactions, by plain Python."""
    if mode == MaskMode.POSITION:
        positions = list(range(n))
        gaps = None if times is None else [0] + [times[i] - times[i - 1] for i in range(1, n)]
        return positions, gaps, positions
    positions, gaps = [], []
    for i in range(n):
        start = next(j for j in range(n) if times[j] == times[i])  # first of i's session
        positions.append(start)
        gaps.append(times[i] - times[start - 1] if start > 0 else 0)
    return positions, gaps, list(times)


def candidate_layout(hist_keys, hist_times, cand_times, n: int, m: int, mode: MaskMode):
    positions, gaps, keys = [], [], []
    for c in range(m):
        if mode == MaskMode.POSITION:
            seen = n
            keys.append(n)
        else:
            seen = sum(1 for t in hist_times if t < cand_times[c])
            keys.append(cand_times[c])
        positions.append(seen)
        if cand_times is not None:
            gaps.append(cand_times[c] - hist_times[seen - 1] if seen > 0 else 0)
    return positions, (gaps if cand_times is not None else None), keys


def _encode(module, values, positions, gaps):
    enc = module.encoding(torch.tensor(positions, dtype=torch.int64), None if gaps is None else torch.tensor(gaps))
    return values if enc is None else values + enc


def _run_blocks(module, x, visible, out_rows):
    cfg = module.config
    for block in module.blocks:
        u, q, k, v = block.project(x)
        x = block.finish(x, dense_attention(q, k, v, visible, cfg.attention_form, cfg.pointwise_scale_len), u)
    return module.output_norm(x[out_rows])


def _split(values, lengths):
    return list(torch.split(values, list(lengths)))


def dual_flow_train(module, real, fake, lengths, times=None):
    cfg = module.config
    outs = []
    time_lists = _split(times, lengths) if times is not None else [None] * len(lengths)
    for r, f, t in zip(_split(real, lengths), _split(fake, lengths), time_lists):
        n = r.shape[0]
        t = None if t is None else t.tolist()
        positions, gaps, keys = layout(n, t, cfg.mask_mode)
        x = torch.cat([_encode(module, r, positions, gaps), _encode(module, f, positions, gaps)])
        key = torch.tensor(keys)
        visible = torch.zeros(2 * n, 2 * n, dtype=torch.bool)
        visible[:n, :n] = key[None, :] <= key[:, None]  # real -> earlier-or-same real
        visible[n:, :n] = key[None, :] < key[:, None]  # fake -> strictly earlier real
        visible[n:, n:] = torch.eye(n, dtype=torch.bool)  # fake -> itself
        outs.append(_run_blocks(module, x, visible, slice(n, 2 * n)))
    return torch.cat(outs)


def dual_flow_score(module, history, candidates, h_lengths, c_lengths, h_times=None, c_times=None):
    cfg = module.config
    outs = []
    users = len(h_lengths)
    ht = _split(h_times, h_lengths) if h_times is not None else [None] * users
    ct = _split(c_times, c_lengths) if c_times is not None else [None] * users
    for h, c, th, tc in zip(_split(history, h_lengths), _split(candidates, c_lengths), ht, ct):
        n, m = h.shape[0], c.shape[0]
        th = None if th is None else th.tolist()
        tc = None if tc is None else tc.tolist()
        positions, gaps, keys = layout(n, th, cfg.mask_mode)
        c_positions, c_gaps, c_keys = candidate_layout(keys, th, tc, n, m, cfg.mask_mode)
        x = torch.cat([_encode(module, h, positions, gaps), _encode(module, c, c_positions, c_gaps)])
        key, c_key = torch.tensor(keys, dtype=torch.int64), torch.tensor(c_keys, dtype=torch.int64)
        visible = torch.zeros(n + m, n + m, dtype=torch.bool)
        visible[:n, :n] = key[None, :] <= key[:, None]
        visible[n:, :n] = key[None, :] < c_key[:, None]
        visible[n:, n:] = torch.eye(m, dtype=torch.bool)  # a candidate sees itself, never another candidate
        outs.append(_run_blocks(module, x, visible, slice(n, n + m)))
    return torch.cat(outs)


def metagr_train(module, items, actions, lengths, times=None):
    cfg = module.config
    outs = []
    time_lists = _split(times, lengths) if times is not None else [None] * len(lengths)
    for it, ac, t in zip(_split(items, lengths), _split(actions, lengths), time_lists):
        n = it.shape[0]
        t = None if t is None else t.tolist()
        positions, gaps, keys = layout(n, t, cfg.mask_mode)
        tokens, token_keys = [], []
        ie, ae = _encode(module, it, positions, gaps), _encode(module, ac, positions, gaps)
        for i in range(n):  # item_i, action_i, ...
            tokens += [ie[i], ae[i]]
            token_keys += [2 * keys[i], 2 * keys[i] + 1]
        x = torch.stack(tokens) if tokens else it.new_zeros(0, it.shape[1])
        key = torch.tensor(token_keys, dtype=torch.int64)
        visible = (key[None, :] < key[:, None]) | torch.eye(2 * n, dtype=torch.bool)  # earlier keys, and itself
        outs.append(_run_blocks(module, x, visible, slice(0, 2 * n, 2)))
    return torch.cat(outs)


def metagr_score(module, items, actions, candidates, h_lengths, c_lengths, h_times=None, c_times=None):
    cfg = module.config
    outs = []
    users = len(h_lengths)
    ht = _split(h_times, h_lengths) if h_times is not None else [None] * users
    ct = _split(c_times, c_lengths) if c_times is not None else [None] * users
    for it, ac, c, th, tc in zip(
        _split(items, h_lengths), _split(actions, h_lengths), _split(candidates, c_lengths), ht, ct
    ):
        n, m = it.shape[0], c.shape[0]
        th = None if th is None else th.tolist()
        tc = None if tc is None else tc.tolist()
        positions, gaps, keys = layout(n, th, cfg.mask_mode)
        c_positions, c_gaps, c_keys = candidate_layout(keys, th, tc, n, m, cfg.mask_mode)
        ie, ae = _encode(module, it, positions, gaps), _encode(module, ac, positions, gaps)
        tokens, token_keys = [], []
        for i in range(n):
            tokens += [ie[i], ae[i]]
            token_keys += [2 * keys[i], 2 * keys[i] + 1]
        x = torch.cat(
            [torch.stack(tokens) if tokens else it.new_zeros(0, it.shape[1]), _encode(module, c, c_positions, c_gaps)]
        )
        key = torch.tensor(token_keys, dtype=torch.int64)
        c_key = 2 * torch.tensor(c_keys, dtype=torch.int64)
        visible = torch.zeros(2 * n + m, 2 * n + m, dtype=torch.bool)
        visible[: 2 * n, : 2 * n] = (key[None, :] < key[:, None]) | torch.eye(2 * n, dtype=torch.bool)
        visible[2 * n :, : 2 * n] = key[None, :] < c_key[:, None]
        visible[2 * n :, 2 * n :] = torch.eye(m, dtype=torch.bool)
        outs.append(_run_blocks(module, x, visible, slice(2 * n, 2 * n + m)))
    return torch.cat(outs)
