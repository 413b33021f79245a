"""A non-finite loss skips the update (weights unchanged) and stops the run after the configured count."""

from __future__ import annotations

import math

import pytest
import torch
from torchtitan.distributed import utils as dist_utils

from molgen3D.training.pretraining import checkpoint_integrity as ci
from molgen3D.training.pretraining import patches


@pytest.fixture
def armed():
    patches.install_nonfinite_guard()
    step = {"n": 0}
    ci.arm_loss_guard(2, lambda: step["n"])
    yield step
    ci.disarm_loss_guard()


def _train_step(model, optimizer, loss_scale: float) -> None:
    optimizer.zero_grad()
    (model(torch.ones(1, 4)).sum() * loss_scale).backward()
    dist_utils.clip_grad_norm_(list(model.parameters()), 1.0)  # as the Trainer calls it, through the module
    optimizer.step()


def test_nonfinite_step_is_skipped_then_the_run_stops(armed):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    armed["n"] = 1
    _train_step(model, optimizer, 1.0)
    before = [p.detach().clone() for p in model.parameters()]
    armed["n"] = 2
    _train_step(model, optimizer, math.nan)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "a NaN step must not touch the weights"
    armed["n"] = 3
    _train_step(model, optimizer, 1.0)  # finite again: the count restarts
    armed["n"] = 4
    _train_step(model, optimizer, math.inf)
    armed["n"] = 5
    with pytest.raises(ci.NonFiniteLossError, match=r"step 5, non-finite for 2 consecutive step\(s\) since step 4"):
        _train_step(model, optimizer, math.nan)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_unarmed_wrapper_is_transparent():
    patches.install_nonfinite_guard()
    patches.install_nonfinite_guard()  # idempotent: wraps once
    assert dist_utils.clip_grad_norm_ is patches.guarded_clip_grad_norm_
    model = torch.nn.Linear(2, 1)
    model(torch.ones(1, 2)).sum().backward()
    assert math.isfinite(float(dist_utils.clip_grad_norm_(list(model.parameters()), 1.0)))
