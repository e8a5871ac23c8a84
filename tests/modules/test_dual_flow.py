"""DualFlowInteraction (two N x N jagged attentions) against one dense 2N x 2N masked attention."""

import pytest
import torch
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec.config import AttentionForm, InteractionConfig, MaskMode
from dfgr_torchrec.modules.dual_flow import DualFlowInteraction
from tests.modules import dense_reference
from tests.modules.conftest import CANDIDATES, LENGTHS, sorted_times_with_sessions

D = 16


def _module(form, mode, **overrides):
    torch.manual_seed(0)
    cfg = InteractionConfig(
        d_model=D,
        num_layers=2,
        num_heads=2,
        attention_dim=4,
        linear_dim=4,
        attention_form=form,
        mask_mode=mode,
        max_seq_len=8,
        num_time_buckets=8,
        **overrides,
    )
    return DualFlowInteraction(cfg)


def _jt(values, lengths):
    return JaggedTensor(values=values, lengths=torch.tensor(lengths))


def _assert_grads_match(module, inputs_a, inputs_b, out_a, out_b):
    grad = torch.randn_like(out_a)
    params = list(module.parameters())
    grads_a = torch.autograd.grad(out_a, inputs_a + params, grad, allow_unused=True)
    grads_b = torch.autograd.grad(out_b, inputs_b + params, grad, allow_unused=True)
    for i, (ga, gb) in enumerate(zip(grads_a, grads_b)):
        if ga is None or gb is None:
            assert (
                ga is None
                and gb is None
                or (ga is None and gb.abs().max() == 0)
                or (gb is None and ga.abs().max() == 0)
            ), i
            continue
        torch.testing.assert_close(ga, gb, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("form", list(AttentionForm))
@pytest.mark.parametrize("mode", list(MaskMode))
@pytest.mark.parametrize("knobs", [{}, {"attention_scale_len": 3, "norm_eps": 1e-6}], ids=["default", "scale3_eps1e-6"])
def test_training_pass_equals_dense_2n_attention(form, mode, knobs):
    module = _module(form, mode, **knobs)
    if knobs:
        assert all(b.attention_norm.eps == b.input_norm.eps == 1e-6 for b in module.blocks)
    total = sum(LENGTHS)
    real = torch.randn(total, D, requires_grad=True)
    fake = torch.randn(total, D, requires_grad=True)
    times = sorted_times_with_sessions(LENGTHS)
    out = module(_jt(real, LENGTHS), _jt(fake, LENGTHS), _jt(times, LENGTHS)).values()

    real_ref = real.detach().clone().requires_grad_(True)
    fake_ref = fake.detach().clone().requires_grad_(True)
    ref = dense_reference.dual_flow_train(module, real_ref, fake_ref, LENGTHS, times)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    _assert_grads_match(module, [real, fake], [real_ref, fake_ref], out, ref)


@pytest.mark.parametrize("form", list(AttentionForm))
@pytest.mark.parametrize("mode", list(MaskMode))
def test_scoring_pass_equals_dense_attention(form, mode):
    module = _module(form, mode)
    history = torch.randn(sum(LENGTHS), D)
    candidates = torch.randn(sum(CANDIDATES), D)
    h_times = sorted_times_with_sessions(LENGTHS)
    # candidates at request time, one of them tied with the last history session
    c_times = torch.cat(
        [
            torch.full((m,), int(t.max()) + (0 if i == 0 else 5))
            for i, (m, t) in enumerate(zip(CANDIDATES, torch.split(h_times, LENGTHS)))
        ]
    )
    out = module.score(
        _jt(history, LENGTHS), _jt(candidates, CANDIDATES), _jt(h_times, LENGTHS), _jt(c_times, CANDIDATES)
    )
    ref = dense_reference.dual_flow_score(module, history, candidates, LENGTHS, CANDIDATES, h_times, c_times)
    torch.testing.assert_close(out.values(), ref, atol=1e-5, rtol=1e-5)
    assert out.lengths().tolist() == CANDIDATES


def test_without_timestamps_and_encodings():
    module = _module(AttentionForm.POINTWISE, MaskMode.POSITION, use_position_encoding=False)
    real, fake = torch.randn(sum(LENGTHS), D), torch.randn(sum(LENGTHS), D)
    out = module(_jt(real, LENGTHS), _jt(fake, LENGTHS))
    torch.testing.assert_close(out.values(), dense_reference.dual_flow_train(module, real, fake, LENGTHS))


def test_empty_history_user_scores_candidates_alone():
    module = _module(AttentionForm.SOFTMAX, MaskMode.POSITION)
    lengths, cands = [0, 2], [2, 1]
    history, candidates = torch.randn(2, D), torch.randn(3, D)
    out = module.score(_jt(history, lengths), _jt(candidates, cands))
    ref = dense_reference.dual_flow_score(module, history, candidates, lengths, cands)
    torch.testing.assert_close(out.values(), ref, atol=1e-5, rtol=1e-5)


def test_session_mode_requires_timestamps():
    module = _module(AttentionForm.POINTWISE, MaskMode.SESSION)
    x = torch.randn(3, D)
    with pytest.raises(ValueError, match="session.*timestamps"):
        module(_jt(x, [3]), _jt(x, [3]))


def test_session_mode_rejects_unsorted_timestamps():
    module = _module(AttentionForm.POINTWISE, MaskMode.SESSION)
    x = torch.randn(3, D)
    with pytest.raises(ValueError, match="sorted"):
        module(_jt(x, [3]), _jt(x, [3]), _jt(torch.tensor([5, 3, 9]), [3]))


def test_mismatched_flows_are_rejected():
    module = _module(AttentionForm.POINTWISE, MaskMode.POSITION)
    with pytest.raises(ValueError, match="same lengths"):
        module(_jt(torch.randn(3, D), [3]), _jt(torch.randn(3, D), [2, 1]))


def test_reference_kernel_gives_the_same_module_output():
    fast = _module(AttentionForm.SOFTMAX, MaskMode.SESSION)
    slow = _module(AttentionForm.SOFTMAX, MaskMode.SESSION, kernel="reference")
    slow.load_state_dict(fast.state_dict())
    real, fake = torch.randn(sum(LENGTHS), D), torch.randn(sum(LENGTHS), D)
    times = _jt(sorted_times_with_sessions(LENGTHS), LENGTHS)
    torch.testing.assert_close(
        fast(_jt(real, LENGTHS), _jt(fake, LENGTHS), times).values(),
        slow(_jt(real, LENGTHS), _jt(fake, LENGTHS), times).values(),
        atol=1e-5,
        rtol=1e-5,
    )


def test_the_pointwise_normaliser_divides_the_attention():
    """attention_scale_len replaces max_seq_len as the pointwise divisor (softmax ignores it)."""
    torch.manual_seed(0)
    q, k, v = torch.randn(9, 2, 4), torch.randn(9, 2, 4), torch.randn(9, 2, 4)
    outs = []
    for scale in (None, 4):
        cfg = InteractionConfig(
            d_model=D, num_heads=2, attention_dim=4, linear_dim=4, max_seq_len=8, attention_scale_len=scale
        )
        block = DualFlowInteraction(cfg).blocks[0]
        offsets = torch.tensor([0, 3, 9])
        positions = torch.tensor([0, 1, 2, 0, 1, 2, 3, 4, 5])
        from dfgr_torchrec.ops.attention import AttentionSpec

        outs.append(block.attend(q, k, v, AttentionSpec(offsets, offsets, positions, positions, strict=False)))
    torch.testing.assert_close(outs[1], outs[0] * 2)  # 8 / 4
