"""WSDS learning-rate schedule: warmup, then stable/decay "mini runs" ending at each checkpoint.

Each decay end T is a fully annealed model, so one run yields as many annealed models as
there are checkpoints (FACTS.md section 3). `wsds_lr` is the pure schedule;
`build_wsds_lr_schedulers` plugs it into TorchTitan as `TrainSpec.build_lr_schedulers_fn`.
`validate_wsds_args` owns the schedule's rules; the job config re-raises its `WSDSArgumentError`
under the `[wsds_scheduler]` key of the same name.

Step indexing: `wsds_lr(s)` is the lr of the s-th optimizer step, 0-based. TorchTitan's train
step n (1-based, the number it logs and names checkpoints by) runs optimizer step s = n - 1,
which is exactly the LambdaLR's `last_epoch` at that time (LambdaLR evaluates step 0 when built
and the trainer calls `scheduler.step()` after each optimizer step).
"""

from __future__ import annotations

import copy
import functools
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class WSDSArgumentError(ValueError):
    """A bad WSDS argument; `.argument` is its name, which is also its `[wsds_scheduler]` key.

    Carries the problem and the fix separately so the job config can re-raise it naming the
    TOML key and file:line, while this module stays the one owner of the schedule's rules.
    """

    def __init__(self, argument: str, problem: str, fix: str) -> None:
        self.argument, self.problem, self.fix = argument, problem, fix
        super().__init__(f"WSDS {argument} {problem}. Fix: {fix}")


def _check_int(name: str, value: Any, minimum: int, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise WSDSArgumentError(name, f"must be an integer >= {minimum}, got {value!r}", fix)


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def validate_wsds_args(
    *,
    warmup_steps: int,
    checkpoints: Sequence[int],
    lr_max: float,
    lr_min: float,
    decay_frac: float | None = None,
    decay_steps: int | None = None,
) -> None:
    """Raise WSDSArgumentError naming the bad argument and the fix; pass silently on a valid schedule."""
    _check_int("warmup_steps", warmup_steps, 0, "set 0 or more")
    if not checkpoints:
        raise WSDSArgumentError("checkpoints", "is empty", "list the steps at which an annealed model is wanted, e.g. [30000, 60000]")
    points = list(checkpoints)
    if any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in points):
        raise WSDSArgumentError("checkpoints", f"must be integers >= 1, got {points}", "list optimizer steps, e.g. [30000, 60000]")
    if any(b <= a for a, b in zip(points, points[1:])):
        raise WSDSArgumentError(
            "checkpoints", f"must be strictly increasing (sorted and unique), got {points}",
            f"write them in increasing order without repeats: {sorted(set(points))}",
        )
    if points[0] <= warmup_steps:
        raise WSDSArgumentError(
            "checkpoints", f"must start after warmup_steps = {warmup_steps}: the first decay end {points[0]} is inside warmup, where it is never annealed",
            "move it after warmup_steps or shorten the warmup",
        )
    if not (_is_number(lr_max) and lr_max > 0):
        raise WSDSArgumentError("lr_max", f"must be > 0 and finite, got {lr_max!r}", "set the peak learning rate, e.g. 8e-4")
    if not (_is_number(lr_min) and 0 <= lr_min <= lr_max):
        raise WSDSArgumentError("lr_min", f"must be in [0, lr_max = {lr_max}], got {lr_min!r}", "use e.g. 0.0")
    if decay_steps is not None:
        _check_int("decay_steps", decay_steps, 1, "remove it (decay_frac applies) or set a positive length")
    elif decay_frac is None:
        raise WSDSArgumentError(
            "decay_frac", "is unset and so is decay_steps: each decay needs decay_frac or decay_steps",
            "set decay_frac (fraction of each checkpoint step, e.g. 0.1) or decay_steps",
        )
    if decay_frac is not None and not (_is_number(decay_frac) and 0 < decay_frac <= 1):
        raise WSDSArgumentError("decay_frac", f"must be in (0, 1], got {decay_frac!r}", "use e.g. 0.1")


def decay_length(target: int, *, decay_frac: float | None, decay_steps: int | None) -> int:
    """D for the decay ending at `target`: `decay_steps` if set, else max(1, int(target * decay_frac))."""
    if decay_steps is not None:
        return decay_steps
    return max(1, int(target * decay_frac))


def wsds_lr(
    step: int,
    *,
    warmup_steps: int,
    checkpoints: Sequence[int],
    lr_max: float,
    lr_min: float,
    decay_frac: float | None = None,
    decay_steps: int | None = None,
) -> float:
    """Learning rate of optimizer step `step` (0-based) under WSDS.

    Warmup lr_max * s / W; then for the first checkpoint T >= s: lr_max until
    max(W, T - D), linear down to exactly lr_min at s = T, back at lr_max at T + 1;
    lr_min after the last checkpoint.
    """
    validate_wsds_args(
        warmup_steps=warmup_steps,
        checkpoints=checkpoints,
        lr_max=lr_max,
        lr_min=lr_min,
        decay_frac=decay_frac,
        decay_steps=decay_steps,
    )
    _check_int("step", step, 0, "pass an optimizer step from 0 on")
    return _unchecked_wsds_lr(
        step,
        warmup_steps=warmup_steps,
        checkpoints=checkpoints,
        lr_max=lr_max,
        lr_min=lr_min,
        decay_frac=decay_frac,
        decay_steps=decay_steps,
    )


def _unchecked_wsds_lr(
    step: int,
    *,
    warmup_steps: int,
    checkpoints: Sequence[int],
    lr_max: float,
    lr_min: float,
    decay_frac: float | None,
    decay_steps: int | None,
) -> float:
    """`wsds_lr` on arguments already validated once, for callers evaluating every step."""
    if step < warmup_steps:
        return lr_max * step / warmup_steps
    target = next((t for t in checkpoints if step <= t), None)
    if target is None or step == target:
        return float(lr_min)
    start = max(warmup_steps, target - decay_length(target, decay_frac=decay_frac, decay_steps=decay_steps))
    if step <= start:
        return float(lr_max)
    return lr_max + (lr_min - lr_max) * (step - start) / (target - start)


def decay_ends(checkpoints: Sequence[int], training_steps: int) -> list[int]:
    """TorchTitan train steps (1-based) after which the model is annealed, within the run.

    Train step T runs optimizer step T - 1, the last one above lr_min; optimizer step T runs
    at lr_min, which leaves the weights unchanged for lr_min = 0 (AdamW's decay is lr-scaled
    too). So the annealed model of decay end T is the one saved at train step T.
    """
    _check_int("training_steps", training_steps, 1, "pass the run's training.steps")
    return sorted({int(t) for t in checkpoints if 0 < int(t) <= training_steps})


def _wsds_kwargs(cfg: Any, base_lr: float) -> dict[str, Any]:
    """Keyword arguments of `wsds_lr` from a WSDS config section; lr_max None means the optimizer's lr."""
    return dict(
        warmup_steps=int(cfg.warmup_steps),
        checkpoints=[int(t) for t in cfg.checkpoints],
        lr_max=float(base_lr if cfg.lr_max is None else cfg.lr_max),
        lr_min=float(cfg.lr_min),
        decay_frac=None if cfg.decay_frac is None else float(cfg.decay_frac),
        decay_steps=None if cfg.decay_steps is None else int(cfg.decay_steps),
    )


@functools.cache
def _container_class():
    """Built on first use: importing TorchTitan costs seconds, and `wsds_lr` users don't need it."""
    from torchtitan.components.lr_scheduler import LRSchedulersContainer

    class WSDSLRSchedulersContainer(LRSchedulersContainer):
        """TorchTitan's container with a resume that keeps this run's base lr.

        The multiplier is wsds_lr(s) / base_lr with base_lr from the current config; restoring the
        checkpoint's `base_lrs` too would scale the rest of the run by old_lr / new_lr if
        `[optimizer].lr` changed between runs. Only the step counters come from the checkpoint.
        (TorchTitan restores the optimizer's param groups after this, so the first resumed step
        still runs at the checkpoint's lr; every later step follows this run's config.)
        """

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            for scheduler in self.schedulers:
                base_lrs = list(scheduler.base_lrs)
                scheduler.load_state_dict(copy.deepcopy(state_dict))
                scheduler.base_lrs = base_lrs
                lrs = [b * lam(scheduler.last_epoch) for b, lam in zip(base_lrs, scheduler.lr_lambdas)]
                for group, lr in zip(scheduler.optimizer.param_groups, lrs):
                    group["lr"] = lr
                scheduler._last_lr = lrs

    return WSDSLRSchedulersContainer


def _optimizer_base_lr(optimizers) -> float:
    lrs = {float(group["lr"]) for opt in optimizers for group in opt.param_groups}
    if len(lrs) != 1:
        raise ValueError(f"WSDS needs one base lr for every parameter group, found {sorted(lrs)}")
    base_lr = lrs.pop()
    if base_lr <= 0:
        raise ValueError(f"WSDS needs [optimizer].lr > 0 as the LambdaLR base, got {base_lr}")
    return base_lr


def build_wsds_lr_schedulers(optimizers, lr_scheduler_config, training_steps: int):
    """TrainSpec.build_lr_schedulers_fn: WSDS when `lr_scheduler_config.wsds` is enabled, else TorchTitan's.

    `lr_scheduler_config.wsds` (a `WSDSConfig` or None) is attached by the job config's finalize step,
    since TorchTitan hands this builder only the `[lr_scheduler]` section.
    """
    cfg = getattr(lr_scheduler_config, "wsds", None)
    if cfg is None or not cfg.enable:
        from torchtitan.components.lr_scheduler import build_lr_schedulers

        return build_lr_schedulers(optimizers, lr_scheduler_config, training_steps)

    base_lr = _optimizer_base_lr(optimizers)
    kwargs = _wsds_kwargs(cfg, base_lr)
    validate_wsds_args(**kwargs)
    if kwargs["checkpoints"][-1] > training_steps:
        raise ValueError(
            f"wsds_scheduler.checkpoints ends at {kwargs['checkpoints'][-1]}, beyond training.steps={training_steps}"
        )

    def multiplier(step: int) -> float:
        # A plain closure (not a callable object): LambdaLR would otherwise save and restore its
        # __dict__, freezing the old schedule into the checkpoint.
        return _unchecked_wsds_lr(step, **kwargs) / base_lr

    logger.info(
        "WSDS lr schedule: warmup %d, lr_max %g, lr_min %g, decay ends at %s (decay lengths %s)",
        kwargs["warmup_steps"],
        kwargs["lr_max"],
        kwargs["lr_min"],
        kwargs["checkpoints"],
        [decay_length(t, decay_frac=kwargs["decay_frac"], decay_steps=kwargs["decay_steps"]) for t in kwargs["checkpoints"]],
    )
    return _container_class()(optimizers, multiplier)


def plot_wsds(
    out_png: str | Path,
    *,
    training_steps: int,
    warmup_steps: int,
    checkpoints: Sequence[int],
    lr_max: float,
    lr_min: float,
    decay_frac: float | None = None,
    decay_steps: int | None = None,
    title: str | None = None,
) -> Path:
    """Write a PNG of lr over optimizer steps 0..training_steps-1 with the decay ends marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _check_int("training_steps", training_steps, 1, "pass the number of steps to plot")
    kwargs = dict(
        warmup_steps=warmup_steps,
        checkpoints=list(checkpoints),
        lr_max=lr_max,
        lr_min=lr_min,
        decay_frac=decay_frac,
        decay_steps=decay_steps,
    )
    validate_wsds_args(**kwargs)
    steps = list(range(training_steps))
    lrs = [_unchecked_wsds_lr(s, **kwargs) for s in steps]
    fig, ax = plt.subplots(figsize=(9, 3.5), dpi=100)
    try:
        ax.plot(steps, lrs, color="tab:blue", linewidth=1.2)
        for t in checkpoints:
            if t <= training_steps:
                ax.axvline(t, color="tab:red", linestyle=":", linewidth=0.8)
        ax.set_xlabel("optimizer step (0-based; TorchTitan logs step + 1)")
        ax.set_ylabel("learning rate")
        ax.set_title(title or f"WSDS: warmup {warmup_steps}, decay ends {list(checkpoints)} (red)")
        ax.set_xlim(0, training_steps)
        ax.set_ylim(0, lr_max * 1.05)
        fig.tight_layout()
        out = Path(out_png)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format="png")
    finally:
        plt.close(fig)
    return out


def plot_wsds_config(cfg: Any, training_steps: int, out_png: str | Path, *, base_lr: float | None = None) -> Path:
    """`plot_wsds` for a `[wsds_scheduler]` config section (lr_max None -> `base_lr`, the optimizer's lr)."""
    if cfg.lr_max is None and base_lr is None:
        raise ValueError("wsds_scheduler.lr_max is unset: pass base_lr (the [optimizer].lr) to plot the schedule")
    return plot_wsds(out_png, training_steps=training_steps, **_wsds_kwargs(cfg, base_lr))
