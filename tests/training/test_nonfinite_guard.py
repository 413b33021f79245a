"""A non-finite loss skips the update (weights unchanged) and stops the run after the configured count.

The guard is the Trainer's own (`MolGenTrainer.loss_guard`); `patches.gradient_norm_check` hands it the
step's gradient norm for one step at a time, and leaves TorchTitan's function in place outside it.
"""

from __future__ import annotations

import math

import pytest
import torch
from torchtitan.distributed import utils as dist_utils

from molgen3D.training.pretraining import checkpoint_integrity as ci
from molgen3D.training.pretraining import patches


@pytest.fixture
def guard():
    return ci.NonFiniteLossGuard(2)


def _train_step(model, optimizer, loss_scale: float, guard, step: int) -> None:
    optimizer.zero_grad()
    (model(torch.ones(1, 4)).sum() * loss_scale).backward()
    with patches.gradient_norm_check(lambda params, norm: guard.check_gradients(step, params, norm)):
        dist_utils.clip_grad_norm_(list(model.parameters()), 1.0)  # as the Trainer calls it, through the module
    optimizer.step()


def test_nonfinite_step_is_skipped_then_the_run_stops(guard):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    _train_step(model, optimizer, 1.0, guard, 1)
    before = [p.detach().clone() for p in model.parameters()]
    _train_step(model, optimizer, math.nan, guard, 2)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "a NaN step must not touch the weights"
    _train_step(model, optimizer, 1.0, guard, 3)  # finite again: the count restarts
    _train_step(model, optimizer, math.inf, guard, 4)
    with pytest.raises(ci.NonFiniteLossError, match=r"step 5, non-finite for 2 consecutive step\(s\) since step 4"):
        _train_step(model, optimizer, math.nan, guard, 5)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_outside_a_step_clip_grad_norm_is_torchtitans_own():
    original = dist_utils.clip_grad_norm_
    seen = []
    with patches.gradient_norm_check(lambda params, norm: seen.append(float(norm))):
        assert dist_utils.clip_grad_norm_ is not original
        model = torch.nn.Linear(2, 1)
        model(torch.ones(1, 2)).sum().backward()
        dist_utils.clip_grad_norm_(list(model.parameters()), 1.0)
    assert dist_utils.clip_grad_norm_ is original and len(seen) == 1 and math.isfinite(seen[0])


def test_importing_the_train_spec_changes_nothing_in_torchtitan():
    """Only the runner's explicit `patches.install()` rebinds TorchTitan's names; the spec module does not."""
    import subprocess
    import sys

    code = (
        "import torchtitan.train as t, torchtitan.components.checkpoint as c\n"
        "import molgen3D.training.pretraining.torchtitan_model.qwen3_custom\n"
        "assert t.CheckpointManager is c.CheckpointManager, t.CheckpointManager\n"
        "from molgen3D.training.pretraining import patches\n"
        "assert not patches.is_cpu_run()\n"
        "patches.install()\n"
        "assert t.CheckpointManager is not c.CheckpointManager\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
