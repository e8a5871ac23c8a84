"""MetaGRInteraction (jagged, interleaved) against a dense per-user 2N-token attention."""

import pytest
import torch
from torchrec.sparse.jagged_tensor import JaggedTensor

from dfgr_torchrec.config import AttentionForm, InteractionConfig, MaskMode
from dfgr_torchrec.modules.metagr import MetaGRInteraction
from tests.modules import dense_reference
from tests.modules.conftest import CANDIDATES, LENGTHS, sorted_times_with_sessions

D = 16


def _module(form, mode):
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
    )
    return MetaGRInteraction(cfg)


def _jt(values, lengths):
    return JaggedTensor(values=values, lengths=torch.tensor(lengths))


@pytest.mark.parametrize("form", list(AttentionForm))
@pytest.mark.parametrize("mode", list(MaskMode))
def test_training_pass_equals_dense_interleaved_attention(form, mode):
    module = _module(form, mode)
    items = torch.randn(sum(LENGTHS), D, requires_grad=True)
    actions = torch.randn(sum(LENGTHS), D, requires_grad=True)
    times = sorted_times_with_sessions(LENGTHS)
    out = module(_jt(items, LENGTHS), _jt(actions, LENGTHS), _jt(times, LENGTHS)).values()
    ref = dense_reference.metagr_train(module, items, actions, LENGTHS, times)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, [items, actions], grad), torch.autograd.grad(ref, [items, actions], grad)):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("form", list(AttentionForm))
@pytest.mark.parametrize("mode", list(MaskMode))
def test_scoring_pass_equals_dense_attention(form, mode):
    module = _module(form, mode)
    items, actions = torch.randn(sum(LENGTHS), D), torch.randn(sum(LENGTHS), D)
    candidates = torch.randn(sum(CANDIDATES), D)
    h_times = sorted_times_with_sessions(LENGTHS)
    c_times = torch.cat(
        [
            torch.full((m,), int(t.max()) + (0 if i == 0 else 5))
            for i, (m, t) in enumerate(zip(CANDIDATES, torch.split(h_times, LENGTHS)))
        ]
    )
    out = module.score(
        _jt(items, LENGTHS),
        _jt(actions, LENGTHS),
        _jt(candidates, CANDIDATES),
        _jt(h_times, LENGTHS),
        _jt(c_times, CANDIDATES),
    )
    ref = dense_reference.metagr_score(module, items, actions, candidates, LENGTHS, CANDIDATES, h_times, c_times)
    torch.testing.assert_close(out.values(), ref, atol=1e-5, rtol=1e-5)
