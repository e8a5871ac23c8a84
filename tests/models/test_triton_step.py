"""A DFGR and a MetaGR training step with ``kernel=triton`` (Triton's CPU interpreter) equal the reference backend's."""

import os

os.environ["TRITON_INTERPRET"] = "1"  # before the kernels load (collection imports this module first)

import dataclasses  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from dfgr_torchrec.config import AttentionForm, MaskMode  # noqa: E402
from dfgr_torchrec.ops.triton import function  # noqa: E402
from tests.models.test_ranking import MODELS, _batch, _config, _model  # noqa: E402


@pytest.mark.parametrize("cls", MODELS, ids=[m.__name__ for m in MODELS])
@pytest.mark.parametrize("mode", list(MaskMode))
@pytest.mark.parametrize("form", list(AttentionForm))
def test_a_training_step_with_triton_equals_the_reference(cls, mode, form, monkeypatch):
    """Same weights, same batch (sessions with tied timestamps in session mode): logits, loss and
    every parameter gradient; blocks of 8 rows, smaller than the users' sequences."""
    monkeypatch.setattr(function, "DEFAULT_BLOCKS", function.BlockSizes(m=8, n=8))
    models = {}
    for kernel in ("reference", "triton"):
        model = _model(cls, mode, form).train()
        config = _config(mode, form)
        config = dataclasses.replace(config, interaction=dataclasses.replace(config.interaction, kernel=kernel))
        fresh = cls(config).train()
        fresh.load_state_dict(model.state_dict())
        models[kernel] = fresh
    batch = _batch(session_prob=0.4, batch_size=4)
    outs = {}
    for name, model in models.items():
        out = model(batch)
        out.loss.backward()
        outs[name] = out
    torch.testing.assert_close(outs["triton"].logits, outs["reference"].logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs["triton"].loss, outs["reference"].loss, atol=1e-6, rtol=1e-6)
    grads = 0
    for (name, p), q in zip(models["reference"].named_parameters(), models["triton"].parameters()):
        if p.grad is not None or q.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-5, msg=name)
            grads += 1
    assert grads > 10
