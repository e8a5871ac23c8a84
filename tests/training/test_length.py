"""The run's length from its config and the data set's size (``training/length.py``)."""

from __future__ import annotations

import pytest

from dfgr_torchrec.training.length import auto_eval_every, plan_length


def test_epochs_on_a_large_data_set_are_kept():
    length = plan_length(steps_per_epoch=1000, epochs=5, min_steps=300)
    assert (length.steps, length.epochs) == (5000, 5)


def test_a_small_data_set_gets_epochs_until_the_floor():
    """The first-hour trap: 959 users, 5 epochs of 4 steps; the floor makes it 300 steps."""
    length = plan_length(steps_per_epoch=4, epochs=5, min_steps=300)
    assert (length.steps, length.epochs) == (300, 75)


def test_a_step_budget_ignores_epochs_and_max_steps_caps_it():
    assert plan_length(steps_per_epoch=7, epochs=1, steps=50).steps == 50
    assert plan_length(steps_per_epoch=7, epochs=1, steps=50).epochs == 8
    assert plan_length(steps_per_epoch=7, epochs=100, min_steps=300, max_steps=12).steps == 12


@pytest.mark.parametrize(
    "steps, per_epoch, every",
    [
        (10, 5, 0),  # a smoke run: each epoch's end
        (10000, 1000, 0),  # 10 epochs: each epoch's end
        (5000, 1000, 500),  # 5 long epochs: twice in each
        (300, 4, 30),  # 75 tiny epochs: every 30 steps, not 75 validations
        (2000, 1000, 200),  # 2 long epochs: 10 validations inside them
        (40, 100, 20),  # a short run: at least 20 steps apart
    ],
)
def test_auto_validates_about_ten_times(steps, per_epoch, every):
    assert auto_eval_every(steps, per_epoch) == every


def test_an_explicit_interval_is_kept():
    assert plan_length(steps_per_epoch=4, epochs=5, min_steps=300, eval_every=50).eval_every == 50
    assert plan_length(steps_per_epoch=4, epochs=5, eval_every=0).eval_every == 0
