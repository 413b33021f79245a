"""WSDS: the pure schedule on hand-computed points, and its TorchTitan LambdaLR builder."""

from __future__ import annotations

import pytest
import torch

from molgen3D.training.pretraining.config.custom_job_config import WSDSConfig
from molgen3D.training.pretraining.components.lr_scheduler import build_wsds_lr_schedulers
from molgen3D.training.pretraining.wsds import (
    WSDSArgumentError,
    decay_ends,
    plot_wsds,
    plot_wsds_config,
    wsds_lr,
)

# W = 10, decay ends 100 and 200, decay_frac 0.2: D = 20 (decay 80..100) and 40 (decay 160..200).
SCHED = dict(warmup_steps=10, checkpoints=[100, 200], lr_max=1e-3, lr_min=1e-4, decay_frac=0.2)


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.0),  # warmup starts at 0
        (5, 5e-4),  # lr_max * 5 / 10
        (10, 1e-3),  # warmup done
        (50, 1e-3),  # stable plateau
        (80, 1e-3),  # decay start T - D = 80 still at lr_max
        (90, 5.5e-4),  # half way down: 1e-3 + (1e-4 - 1e-3) * 10 / 20
        (95, 3.25e-4),  # three quarters: 1e-3 - 9e-4 * 15 / 20
        (100, 1e-4),  # exactly lr_min at T
        (101, 1e-3),  # back at lr_max at T + 1
        (160, 1e-3),  # second decay starts at 200 - 40
        (180, 5.5e-4),  # 1e-3 - 9e-4 * 20 / 40
        (200, 1e-4),  # lr_min at the last T
        (201, 1e-4),  # lr_min after the last checkpoint
        (10_000, 1e-4),
    ],
)
def test_wsds_lr_hand_computed(step, expected):
    assert wsds_lr(step, **SCHED) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_decay_steps_overrides_decay_frac():
    sched = {**SCHED, "decay_steps": 10}  # decay 90..100 and 190..200, whatever decay_frac says
    assert wsds_lr(85, **sched) == pytest.approx(1e-3)
    assert wsds_lr(90, **sched) == pytest.approx(1e-3)
    assert wsds_lr(95, **sched) == pytest.approx(5.5e-4)
    assert wsds_lr(180, **sched) == pytest.approx(1e-3)
    assert wsds_lr(195, **sched) == pytest.approx(5.5e-4)
    assert wsds_lr(200, **sched) == pytest.approx(1e-4)


def test_decay_start_is_clamped_at_warmup_end():
    # T = 60, D = int(60 * 0.5) = 30 would start at 30, inside warmup; it starts at W = 50.
    sched = dict(warmup_steps=50, checkpoints=[60], lr_max=1e-3, lr_min=1e-4, decay_frac=0.5)
    assert wsds_lr(40, **sched) == pytest.approx(8e-4)  # still warmup, not decay
    assert wsds_lr(50, **sched) == pytest.approx(1e-3)
    assert wsds_lr(55, **sched) == pytest.approx(5.5e-4)  # 1e-3 - 9e-4 * 5 / 10
    assert wsds_lr(60, **sched) == pytest.approx(1e-4)


def test_decay_length_truncates_and_is_at_least_one():
    # int(105 * 0.1) = 10 -> decay 95..105; int(3 * 0.1) = 0 -> D = 1.
    sched = dict(warmup_steps=0, checkpoints=[3, 105], lr_max=1.0, lr_min=0.0, decay_frac=0.1)
    assert wsds_lr(0, **sched) == 1.0  # no warmup: lr_max from step 0
    assert wsds_lr(2, **sched) == 1.0
    assert wsds_lr(3, **sched) == 0.0
    assert wsds_lr(95, **sched) == 1.0
    assert wsds_lr(100, **sched) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "override, message, argument",
    [
        ({"checkpoints": []}, "checkpoints is empty", "checkpoints"),
        ({"checkpoints": [200, 100]}, "strictly increasing", "checkpoints"),
        ({"checkpoints": [100, 100]}, "strictly increasing", "checkpoints"),
        ({"checkpoints": [0, 100]}, "checkpoints must be integers >= 1", "checkpoints"),
        ({"checkpoints": [5, 100]}, "after warmup_steps", "checkpoints"),
        ({"lr_min": 2e-3}, r"lr_min must be in \[0, lr_max = 0.001\], got 0.002", "lr_min"),
        ({"lr_min": -1e-4}, "lr_min must be in", "lr_min"),
        ({"lr_max": 0.0}, "lr_max must be > 0", "lr_max"),
        ({"decay_frac": None}, "needs decay_frac", "decay_frac"),
        ({"decay_frac": 1.5}, "decay_frac must be in", "decay_frac"),
        ({"decay_frac": 1.5, "decay_steps": 10}, "decay_frac must be in", "decay_frac"),  # set, so checked
        ({"decay_steps": 0}, "decay_steps must be an integer >= 1", "decay_steps"),
        ({"warmup_steps": -1}, "warmup_steps must be an integer >= 0", "warmup_steps"),
    ],
)
def test_bad_arguments_are_named(override, message, argument):
    with pytest.raises(WSDSArgumentError, match=message) as info:
        wsds_lr(0, **{**SCHED, **override})
    assert info.value.argument == argument and isinstance(info.value, ValueError)
    assert f"Fix: {info.value.fix}" in str(info.value) and info.value.fix


def test_negative_step_is_rejected():
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        wsds_lr(-1, **SCHED)


def test_decay_ends_lists_checkpoints_within_the_run():
    assert decay_ends([30_000, 60_000, 90_000], 60_000) == [30_000, 60_000]
    assert decay_ends([100, 200], 1_000) == [100, 200]


# ---- TorchTitan builder ------------------------------------------------------------------


def _WSDS(**overrides) -> WSDSConfig:
    """The resolved `[wsds_scheduler]` as finalize_job_config attaches it to `lr_scheduler.wsds`."""
    values = dict(warmup_steps=10, checkpoints=[100, 200], lr_max=None, lr_min=1e-4, decay_frac=0.2)
    return WSDSConfig(**{**values, **overrides})


def _lr_scheduler_config(wsds):
    from torchtitan.config import LRScheduler

    cfg = LRScheduler(warmup_steps=4, decay_ratio=None, decay_type="linear")
    cfg.wsds = wsds
    return cfg


def _optimizers(lr: float):
    from torchtitan.components.optimizer import OptimizersContainer

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    return model, OptimizersContainer([model], torch.optim.AdamW, {"lr": lr, "weight_decay": 0.1})


def _train(model, optimizers, schedulers, steps: int) -> list[float]:
    """The trainer's order: optimizer step with the current lr, then scheduler.step(); returns lrs used."""
    used = []
    for _ in range(steps):
        lr = optimizers.optimizers[0].param_groups[0]["lr"]
        assert schedulers.schedulers[0].get_last_lr()[0] == pytest.approx(lr)  # what TorchTitan logs
        used.append(lr)
        model(torch.ones(2, 4)).sum().backward()
        optimizers.step()
        optimizers.zero_grad()
        schedulers.step()
    return used


def test_builder_lambda_sequence_equals_wsds_lr():
    model, opt = _optimizers(1e-3)
    sched = build_wsds_lr_schedulers(opt, _lr_scheduler_config(_WSDS()), training_steps=250)
    used = _train(model, opt, sched, 250)
    expected = [wsds_lr(s, **SCHED) for s in range(250)]
    assert used == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert used[0] == 0.0 and used[100] == pytest.approx(1e-4) and used[101] == pytest.approx(1e-3)


def test_builder_applies_lr_max_on_the_optimizer_base_lr():
    model, opt = _optimizers(1e-3)
    sched = build_wsds_lr_schedulers(opt, _lr_scheduler_config(_WSDS(lr_max=5e-4)), training_steps=250)
    used = _train(model, opt, sched, 120)
    assert used == pytest.approx([wsds_lr(s, **{**SCHED, "lr_max": 5e-4}) for s in range(120)], rel=1e-9)


def test_builder_resumes_from_state_dict():
    wsds = _WSDS()
    model, opt = _optimizers(1e-3)
    sched = build_wsds_lr_schedulers(opt, _lr_scheduler_config(wsds), training_steps=250)
    first = _train(model, opt, sched, 97)
    opt_state, sched_state = opt.state_dict(), sched.state_dict()
    assert sched_state["last_epoch"] == 97

    model2, opt2 = _optimizers(1e-3)
    sched2 = build_wsds_lr_schedulers(opt2, _lr_scheduler_config(wsds), training_steps=250)
    sched2.load_state_dict(sched_state)  # DCP loads in key order: lr_scheduler before optimizer
    opt2.load_state_dict(opt_state)
    rest = _train(model2, opt2, sched2, 153)
    assert first + rest == pytest.approx([wsds_lr(s, **SCHED) for s in range(250)], rel=1e-9, abs=1e-15)


def test_resume_with_a_new_optimizer_lr_follows_the_new_lr():
    model, opt = _optimizers(1e-3)
    sched = build_wsds_lr_schedulers(opt, _lr_scheduler_config(_WSDS()), training_steps=250)
    _train(model, opt, sched, 40)
    state = sched.state_dict()

    model2, opt2 = _optimizers(2e-3)
    sched2 = build_wsds_lr_schedulers(opt2, _lr_scheduler_config(_WSDS()), training_steps=250)
    sched2.load_state_dict(state)
    assert sched2.schedulers[0].get_last_lr()[0] == pytest.approx(2e-3)
    rest = _train(model2, opt2, sched2, 60)
    assert rest == pytest.approx([wsds_lr(s, **{**SCHED, "lr_max": 2e-3}) for s in range(40, 100)], rel=1e-9)


def test_checkpoint_beyond_training_steps_is_an_error():
    _, opt = _optimizers(1e-3)
    with pytest.raises(ValueError, match="beyond training.steps=150"):
        build_wsds_lr_schedulers(opt, _lr_scheduler_config(_WSDS()), training_steps=150)


@pytest.mark.parametrize("wsds", [None, _WSDS(enable=False)], ids=["absent", "disabled"])
def test_falls_back_to_torchtitan_scheduler(wsds):
    model, opt = _optimizers(1e-3)
    sched = build_wsds_lr_schedulers(opt, _lr_scheduler_config(wsds), training_steps=20)
    used = _train(model, opt, sched, 20)
    # TorchTitan's warmup counts from 1: (s + 1) / 4; one stable step (s = 4); then linear decay
    # over 16 steps with progress (s + 1 - 5) / 16.
    assert used[:5] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])
    assert used[12] == pytest.approx(1e-3 * (1 - 8 / 16))


def test_plot_writes_a_png(tmp_path):
    import matplotlib.image

    out = plot_wsds(tmp_path / "lr.png", training_steps=250, **SCHED)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width = matplotlib.image.imread(out).shape[:2]
    assert (width, height) == (900, 350)


def test_plot_config_needs_a_base_lr_when_lr_max_is_unset(tmp_path):
    with pytest.raises(ValueError, match="pass base_lr"):
        plot_wsds_config(_WSDS(), 250, tmp_path / "lr.png")
    assert plot_wsds_config(_WSDS(), 250, tmp_path / "lr.png", base_lr=1e-3).is_file()
