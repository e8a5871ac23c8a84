"""The learning-rate schedule and the optimizer config."""

import math

import pytest

from dfgr_torchrec.training.optim import OptimConfig, lr_lambda


def test_warmup_then_cosine_to_the_floor():
    factor = lr_lambda(OptimConfig(warmup_steps=4, decay="cosine", min_lr_ratio=0.1), total_steps=14)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == pytest.approx(1.0)
    assert factor(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert factor(14) == pytest.approx(0.1) and factor(100) == pytest.approx(0.1)


def test_linear_and_none():
    linear = lr_lambda(OptimConfig(warmup_steps=0, decay="linear", min_lr_ratio=0.0), total_steps=10)
    assert linear(5) == pytest.approx(0.5)
    flat = lr_lambda(OptimConfig(warmup_steps=2, decay="none"), total_steps=10)
    assert flat(7) == 1.0


@pytest.mark.parametrize("kwargs, key", [({"decay": "step"}, r"^decay: expected"), ({"lr": 0}, r"^lr: expected")])
def test_bad_values_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        OptimConfig(**kwargs)
