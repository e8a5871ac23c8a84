"""The STU layer and stack against a plain dense PyTorch reference written here from the formula.

Reference, per user, with an explicit ``[L, L]`` visibility mask:
``u, v, q, k = split(Linear(LayerNorm(x)))``, ``u = SiLU(u)``,
``a = (SiLU(q k^T / sqrt(d)) * mask / n) v`` with ``n`` the batch's longest sequence,
``x + W_o concat[u, a, u * LayerNorm(a)]``.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec.config import AttentionForm, InteractionConfig, MaskMode
from dfgr_torchrec.modules.stu import HSTUInteraction, STULayer, STUStack, split_training_targets
from dfgr_torchrec.ops.attention import AttentionSpec
from dfgr_torchrec.ops.jagged import lengths_to_offsets
from tests.modules.conftest import CANDIDATES, LENGTHS, sorted_times_with_sessions
from tests.modules.dense_reference import candidate_layout, layout

D, H, DQK, DV = 12, 2, 4, 3


def reference_layer(layer: STULayer, x: torch.Tensor, visible: torch.Tensor, n: int, form) -> torch.Tensor:
    """One STU layer on one user's ``[L, D]`` tokens, dense."""
    length = x.shape[0]
    normed = F.layer_norm(x, (D,), layer.input_norm.weight, layer.input_norm.bias, eps=1e-6)
    uvqk = normed @ layer.uvqk_weight.T + layer.uvqk_bias
    u, v, q, k = uvqk.split([H * DV, H * DV, H * DQK, H * DQK], dim=-1)
    u = F.silu(u)
    q, k, v = q.reshape(length, H, DQK), k.reshape(length, H, DQK), v.reshape(length, H, DV)
    scores = torch.einsum("ihd,jhd->hij", q, k) / math.sqrt(DQK)
    if form == AttentionForm.POINTWISE:
        weights = F.silu(scores) * visible.to(scores.dtype) / n
    else:
        weights = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
    a = torch.einsum("hij,jhd->ihd", weights, v).reshape(length, H * DV)
    a_norm = F.layer_norm(a, (H * DV,), layer.attention_norm.weight, layer.attention_norm.bias, eps=1e-6)
    return x + torch.cat([u, a, u * a_norm], dim=-1) @ layer.output_weight.T


def _config(num_layers=1, form=AttentionForm.POINTWISE, mode=MaskMode.POSITION):
    return InteractionConfig(
        d_model=D,
        num_layers=num_layers,
        num_heads=H,
        attention_dim=DQK,
        linear_dim=DV,
        attention_form=form,
        mask_mode=mode,
        max_seq_len=16,
        num_time_buckets=8,
    )


def _perturbed(module: torch.nn.Module) -> torch.nn.Module:
    """LayerNorm affine terms away from (1, 0) so that they are tested too."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return module


def _grads(out: torch.Tensor, weight: torch.Tensor, wrt):
    return torch.autograd.grad((out * weight).sum(), wrt)


def _assert_same(module, actual, expected, inputs):
    torch.testing.assert_close(actual, expected, atol=2e-5, rtol=1e-4)
    weight = torch.randn_like(expected)
    wrt = [*inputs, *module.parameters()]
    for got, want in zip(_grads(actual, weight, wrt), _grads(expected, weight, wrt)):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("form", list(AttentionForm))
@pytest.mark.parametrize("mode", list(MaskMode))
def test_layer_self_attention_equals_dense_reference(form, mode):
    layer = _perturbed(STULayer.from_config(_config(form=form)))
    lengths = torch.tensor(LENGTHS)
    offsets = lengths_to_offsets(lengths)
    x = torch.randn(int(lengths.sum()), D, requires_grad=True)
    times = sorted_times_with_sessions(LENGTHS)
    positions = torch.cat([torch.arange(n) for n in LENGTHS])
    keys = positions if mode == MaskMode.POSITION else times
    n = max(LENGTHS)
    out = layer(x, AttentionSpec(offsets, offsets, keys, keys, strict=False), scale_len=n)
    expected = []
    for s, e in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
        visible = keys[s:e].unsqueeze(0) <= keys[s:e].unsqueeze(1)  # [query, key]
        expected.append(reference_layer(layer, x[s:e], visible, n, form))
    _assert_same(layer, out, torch.cat(expected), [x])


def _user_mask(h_keys, t_keys):
    """The ``[N + M, N + M]`` mask of one user: causal history, targets see history (strictly) and themselves."""
    n, m = len(h_keys), len(t_keys)
    visible = torch.zeros(n + m, n + m, dtype=torch.bool)
    for i in range(n):
        for j in range(n):
            visible[i, j] = h_keys[j] <= h_keys[i]
    for a in range(m):
        for j in range(n):
            visible[n + a, j] = h_keys[j] < t_keys[a]
        visible[n + a, n + a] = True  # itself, never another target
    return visible


@pytest.mark.parametrize("form", list(AttentionForm))
@pytest.mark.parametrize("mode", list(MaskMode))
def test_stack_of_history_and_targets_equals_dense_reference(form, mode):
    stack = _perturbed(STUStack(_config(num_layers=2, form=form)))
    h_lengths, t_lengths = torch.tensor(LENGTHS), torch.tensor(CANDIDATES)
    h_offsets, t_offsets = lengths_to_offsets(h_lengths), lengths_to_offsets(t_lengths)
    history = torch.randn(int(h_lengths.sum()), D, requires_grad=True)
    targets = torch.randn(int(t_lengths.sum()), D, requires_grad=True)
    h_times = sorted_times_with_sessions(LENGTHS)
    # each target at a time inside or after its user's history, so session masks cut the history
    t_times = torch.cat(
        [
            h_times[s:e][torch.randint(0, e - s, (m,))] + torch.randint(0, 2, (m,)) * 3
            for s, e, m in zip(h_offsets[:-1].tolist(), h_offsets[1:].tolist(), CANDIDATES)
        ]
    )
    if mode == MaskMode.POSITION:
        h_keys = torch.cat([torch.arange(n) for n in LENGTHS])
        t_keys = torch.repeat_interleave(h_lengths, t_lengths)
    else:
        h_keys, t_keys = h_times, t_times
    n = max(a + b for a, b in zip(LENGTHS, CANDIDATES))
    out = stack(
        history,
        targets,
        AttentionSpec(h_offsets, h_offsets, h_keys, h_keys, strict=False),
        AttentionSpec(t_offsets, h_offsets, t_keys, h_keys, strict=True),
        scale_len=n,
    )
    expected = []
    for user in range(len(LENGTHS)):
        hs, he, ts, te = h_offsets[user], h_offsets[user + 1], t_offsets[user], t_offsets[user + 1]
        x = torch.cat([history[hs:he], targets[ts:te]])
        visible = _user_mask(h_keys[hs:he].tolist(), t_keys[ts:te].tolist())
        for layer in stack.layers:
            x = reference_layer(layer, x, visible, n, form)
        expected.append(x[he - hs :])
    _assert_same(stack, out, torch.cat(expected), [history, targets])


def _dense_interaction(model: HSTUInteraction, items, actions, h_times, cands, c_times, n):
    """HSTUInteraction.score for one user, by plain Python layouts and one dense masked sequence."""
    mode = model.config.mask_mode
    h_pos, h_gaps, h_keys = layout(items.shape[0], h_times, mode)
    c_pos, c_gaps, c_keys = candidate_layout(h_keys, h_times, c_times, items.shape[0], cands.shape[0], mode)
    enc = lambda pos, gaps: model.encoding(torch.tensor(pos, dtype=torch.int64), torch.tensor(gaps))  # noqa: E731
    history = model.content_mlp(items) + model.action_mlp(actions) + enc(h_pos, h_gaps)
    placeholder = model.action_mlp(model.placeholder.weight.unsqueeze(0))
    x = torch.cat([history, model.content_mlp(cands) + placeholder + enc(c_pos, c_gaps)])
    visible = _user_mask(h_keys, c_keys)
    for layer in model.stack.layers:
        x = reference_layer(layer, x, visible, n, model.config.attention_form)
    return model.output_norm(x[items.shape[0] :])


@pytest.mark.parametrize("mode", list(MaskMode))
def test_interaction_score_equals_dense_reference(mode):
    model = _perturbed(HSTUInteraction(_config(num_layers=2, mode=mode), embedding_dim=5))
    h_lengths, c_lengths = torch.tensor(LENGTHS), torch.tensor(CANDIDATES)
    items, actions = (torch.randn(int(h_lengths.sum()), 5) for _ in range(2))
    cands = torch.randn(int(c_lengths.sum()), 5)
    h_times = sorted_times_with_sessions(LENGTHS)
    h_off, c_off = lengths_to_offsets(h_lengths).tolist(), lengths_to_offsets(c_lengths).tolist()
    c_times = torch.cat(
        [h_times[h_off[u] : h_off[u + 1]][torch.randint(0, LENGTHS[u], (m,))] + 2 for u, m in enumerate(CANDIDATES)]
    )
    out = model.score(
        *(
            JaggedTensor(values=v, lengths=n)
            for v, n in [
                (items, h_lengths),
                (actions, h_lengths),
                (cands, c_lengths),
                (h_times, h_lengths),
                (c_times, c_lengths),
            ]
        ),
    )
    n = max(a + b for a, b in zip(LENGTHS, CANDIDATES))
    expected = torch.cat(
        [
            _dense_interaction(
                model,
                items[h_off[u] : h_off[u + 1]],
                actions[h_off[u] : h_off[u + 1]],
                h_times[h_off[u] : h_off[u + 1]].tolist(),
                cands[c_off[u] : c_off[u + 1]],
                c_times[c_off[u] : c_off[u + 1]].tolist(),
                n,
            )
            for u in range(len(LENGTHS))
        ]
    )
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=1e-4)


def test_normaliser_is_the_batch_longest_sequence():
    layer = _perturbed(STULayer.from_config(_config()))
    x = torch.randn(3, D)
    offsets, keys = torch.tensor([0, 3]), torch.arange(3)
    spec = AttentionSpec(offsets, offsets, keys, keys, strict=False)
    u, q, k, v = layer.project(x)
    torch.testing.assert_close(layer.attend(q, k, v, spec, scale_len=6), layer.attend(q, k, v, spec, scale_len=3) / 2)


def test_only_u_is_silu_activated_and_output_width_is_three_h_dv():
    layer = STULayer(d_model=D, num_heads=H, attention_dim=DQK, linear_dim=DV)
    assert layer.uvqk_weight.shape == (H * (2 * DV + 2 * DQK), D)
    assert layer.output_weight.shape == (D, 3 * H * DV)
    with torch.no_grad():
        layer.input_norm.weight.fill_(1.0)
        layer.uvqk_bias.fill_(-5.0)  # pre-activations far below 0: SiLU would squash them towards 0
        u, q, k, v = layer.project(torch.zeros(1, D))
    assert torch.all(u > -0.1) and torch.all(q == -5.0) and torch.all(k == -5.0) and torch.all(v == -5.0)


def test_xavier_init_survives_the_meta_device_allocation():
    """DistributedModelParallel allocates meta params, then calls reset_parameters on their owners."""
    layer = STULayer(d_model=64, num_heads=2, attention_dim=16, linear_dim=16, device=torch.device("meta"))
    layer.to_empty(device="cpu")
    for module in layer.modules():
        if any(True for _ in module.parameters(recurse=False)) and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    for weight in (layer.uvqk_weight, layer.output_weight):
        bound = math.sqrt(6.0 / sum(weight.shape))
        assert weight.abs().max() <= bound and weight.abs().max() > 0.9 * bound
        assert abs(weight.std().item() - bound / math.sqrt(3)) < 0.1 * bound
    assert torch.equal(layer.uvqk_bias, torch.zeros_like(layer.uvqk_bias))


def test_training_targets_are_the_last_interactions():
    lengths = torch.tensor([0, 1, 2, 5, 9, 30])
    assert split_training_targets(lengths, 8).tolist() == [0, 1, 1, 4, 8, 8]
    with pytest.raises(ValueError, match="num_targets"):
        HSTUInteraction(_config(), embedding_dim=4, num_targets=0)
