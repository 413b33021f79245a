"""WSDS learning-rate schedule: warmup, then stable/decay "mini runs" ending at each checkpoint.

Each decay end T is a fully annealed model, so one run yields as many annealed models as there
are checkpoints. `WSDSSchedule` is the schedule as one value: it checks its own arguments when
built (so a schedule that exists is valid) and computes the learning rate of any step. The job
config's finalize step builds it once from `[wsds_scheduler]` and re-raises its
`WSDSArgumentError` under the TOML key of the same name; `components/lr_scheduler.py` plugs it
into TorchTitan.

Step indexing: `lr(s)` is the lr of the s-th optimizer step, 0-based. TorchTitan's train step n
(1-based, the number it logs and names checkpoints by) runs optimizer step s = n - 1, which is
exactly the LambdaLR's `last_epoch` at that time (LambdaLR evaluates step 0 when built and the
trainer calls `scheduler.step()` after each optimizer step).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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


@dataclass(frozen=True)
class WSDSSchedule:
    """A valid WSDS schedule; building one with a bad argument raises `WSDSArgumentError`."""

    warmup_steps: int
    checkpoints: tuple[int, ...]
    """Decay ends T1 < T2 < ..., optimizer steps at which the lr reaches lr_min (any sequence; kept as a tuple)."""
    lr_max: float
    lr_min: float
    decay_frac: float | None = None
    decay_steps: int | None = None

    def __post_init__(self) -> None:
        _check_int("warmup_steps", self.warmup_steps, 0, "set 0 or more")
        if not self.checkpoints:
            raise WSDSArgumentError(
                "checkpoints", "is empty", "list the steps at which an annealed model is wanted, e.g. [30000, 60000]"
            )
        points = tuple(self.checkpoints)
        object.__setattr__(self, "checkpoints", points)
        if any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in points):
            raise WSDSArgumentError(
                "checkpoints", f"must be integers >= 1, got {list(points)}", "list optimizer steps, e.g. [30000, 60000]"
            )
        if any(b <= a for a, b in zip(points, points[1:])):
            raise WSDSArgumentError(
                "checkpoints",
                f"must be strictly increasing (sorted and unique), got {list(points)}",
                f"write them in increasing order without repeats: {sorted(set(points))}",
            )
        if points[0] <= self.warmup_steps:
            raise WSDSArgumentError(
                "checkpoints",
                f"must start after warmup_steps = {self.warmup_steps}: the first decay end {points[0]} "
                "is inside warmup, where it is never annealed",
                "move it after warmup_steps or shorten the warmup",
            )
        if not (_is_number(self.lr_max) and self.lr_max > 0):
            raise WSDSArgumentError(
                "lr_max", f"must be > 0 and finite, got {self.lr_max!r}", "set the peak learning rate, e.g. 8e-4"
            )
        if not (_is_number(self.lr_min) and 0 <= self.lr_min <= self.lr_max):
            raise WSDSArgumentError(
                "lr_min", f"must be in [0, lr_max = {self.lr_max}], got {self.lr_min!r}", "use e.g. 0.0"
            )
        if self.decay_steps is not None:
            _check_int("decay_steps", self.decay_steps, 1, "remove it (decay_frac applies) or set a positive length")
        elif self.decay_frac is None:
            raise WSDSArgumentError(
                "decay_frac",
                "is unset and so is decay_steps: each decay needs decay_frac or decay_steps",
                "set decay_frac (fraction of each checkpoint step, e.g. 0.1) or decay_steps",
            )
        if self.decay_frac is not None and not (_is_number(self.decay_frac) and 0 < self.decay_frac <= 1):
            raise WSDSArgumentError("decay_frac", f"must be in (0, 1], got {self.decay_frac!r}", "use e.g. 0.1")

    @classmethod
    def from_section(cls, section: Any, base_lr: float | None = None) -> "WSDSSchedule":
        """The schedule of a `[wsds_scheduler]` section; lr_max None means `base_lr` (the optimizer's lr)."""
        lr_max = section.lr_max if section.lr_max is not None else base_lr
        if lr_max is None:
            raise ValueError("wsds_scheduler.lr_max is unset: pass base_lr (the [optimizer].lr) to build the schedule")
        return cls(
            warmup_steps=section.warmup_steps,
            checkpoints=tuple(section.checkpoints),
            lr_max=float(lr_max),
            lr_min=float(section.lr_min),
            decay_frac=None if section.decay_frac is None else float(section.decay_frac),
            decay_steps=section.decay_steps,
        )

    def decay_length(self, target: int) -> int:
        """D for the decay ending at `target`: `decay_steps` if set, else max(1, int(target * decay_frac))."""
        if self.decay_steps is not None:
            return self.decay_steps
        return max(1, int(target * self.decay_frac))

    def lr(self, step: int) -> float:
        """Learning rate of optimizer step `step` (0-based).

        Warmup lr_max * s / W; then for the first checkpoint T >= s: lr_max until
        max(W, T - D), linear down to exactly lr_min at s = T, back at lr_max at T + 1;
        lr_min after the last checkpoint.
        """
        _check_int("step", step, 0, "pass an optimizer step from 0 on")
        if step < self.warmup_steps:
            return self.lr_max * step / self.warmup_steps
        target = next((t for t in self.checkpoints if step <= t), None)
        if target is None or step == target:
            return float(self.lr_min)
        start = max(self.warmup_steps, target - self.decay_length(target))
        if step <= start:
            return float(self.lr_max)
        return self.lr_max + (self.lr_min - self.lr_max) * (step - start) / (target - start)


def wsds_lr(step: int, **schedule: Any) -> float:
    """Learning rate of optimizer step `step` under the schedule `WSDSSchedule(**schedule)`."""
    return WSDSSchedule(**schedule).lr(step)


def decay_ends(checkpoints: Sequence[int], training_steps: int) -> list[int]:
    """TorchTitan train steps (1-based) after which the model is annealed, within the run.

    Train step T runs optimizer step T - 1, the last one above lr_min; optimizer step T runs
    at lr_min, which leaves the weights unchanged for lr_min = 0 (AdamW's decay is lr-scaled
    too). So the annealed model of decay end T is the one saved at train step T.
    """
    _check_int("training_steps", training_steps, 1, "pass the run's training.steps")
    return sorted({int(t) for t in checkpoints if 0 < int(t) <= training_steps})


def plot_schedule(
    schedule: WSDSSchedule, training_steps: int, out_png: str | Path, *, title: str | None = None
) -> Path:
    """Write a PNG of lr over optimizer steps 0..training_steps-1 with the decay ends marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _check_int("training_steps", training_steps, 1, "pass the number of steps to plot")
    steps = list(range(training_steps))
    lrs = [schedule.lr(s) for s in steps]
    fig, ax = plt.subplots(figsize=(9, 3.5), dpi=100)
    try:
        ax.plot(steps, lrs, color="tab:blue", linewidth=1.2)
        for t in schedule.checkpoints:
            if t <= training_steps:
                ax.axvline(t, color="tab:red", linestyle=":", linewidth=0.8)
        ax.set_xlabel("optimizer step (0-based; TorchTitan logs step + 1)")
        ax.set_ylabel("learning rate")
        ax.set_title(title or f"WSDS: warmup {schedule.warmup_steps}, decay ends {list(schedule.checkpoints)} (red)")
        ax.set_xlim(0, training_steps)
        ax.set_ylim(0, schedule.lr_max * 1.05)
        fig.tight_layout()
        out = Path(out_png)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format="png")
    finally:
        plt.close(fig)
    return out


def plot_wsds(out_png: str | Path, *, training_steps: int, title: str | None = None, **schedule: Any) -> Path:
    """`plot_schedule` of `WSDSSchedule(**schedule)`."""
    return plot_schedule(WSDSSchedule(**schedule), training_steps, out_png, title=title)


def plot_wsds_config(cfg: Any, training_steps: int, out_png: str | Path, *, base_lr: float | None = None) -> Path:
    """`plot_schedule` of a `WSDSSchedule` or of a `[wsds_scheduler]` section (lr_max None -> `base_lr`)."""
    schedule = cfg if isinstance(cfg, WSDSSchedule) else WSDSSchedule.from_section(cfg, base_lr)
    return plot_schedule(schedule, training_steps, out_png)
