"""`TrainSpec.build_lr_schedulers_fn` for `molgen_qwen3`: the WSDS schedule as TorchTitan LambdaLRs.

TorchTitan hands this builder only the `[lr_scheduler]` section, so the job config's finalize
step puts the run's one `WSDSSchedule` on it as `lr_scheduler.wsds` (None when WSDS is off,
and then TorchTitan's own scheduler runs).
"""

from __future__ import annotations

import copy
import functools
import logging
from typing import Any

from molgen3D.training.pretraining.wsds import WSDSSchedule

logger = logging.getLogger(__name__)


@functools.cache
def _container_class():
    """Built on first use: importing TorchTitan costs seconds."""
    from torchtitan.components.lr_scheduler import LRSchedulersContainer

    class WSDSLRSchedulersContainer(LRSchedulersContainer):
        """TorchTitan's container with a resume that keeps this run's base lr.

        The multiplier is lr(s) / base_lr with base_lr from the current config; restoring the
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
    """WSDS when `lr_scheduler_config.wsds` is set (and enabled), else TorchTitan's scheduler.

    `wsds` is the finalized `WSDSSchedule`, or a bare `[wsds_scheduler]` section (its lr_max
    defaulting to the optimizer's lr) when the builder is used without the job config.
    """
    wsds = getattr(lr_scheduler_config, "wsds", None)
    if wsds is None or not getattr(wsds, "enable", True):
        from torchtitan.components.lr_scheduler import build_lr_schedulers

        return build_lr_schedulers(optimizers, lr_scheduler_config, training_steps)

    base_lr = _optimizer_base_lr(optimizers)
    schedule = wsds if isinstance(wsds, WSDSSchedule) else WSDSSchedule.from_section(wsds, base_lr)
    if schedule.checkpoints[-1] > training_steps:
        raise ValueError(
            f"wsds_scheduler.checkpoints ends at {schedule.checkpoints[-1]}, beyond training.steps={training_steps}"
        )

    def multiplier(step: int) -> float:
        # A plain closure (not a callable object): LambdaLR would otherwise save and restore its
        # __dict__, freezing the old schedule into the checkpoint.
        return schedule.lr(step) / base_lr

    logger.info(
        "WSDS lr schedule: warmup %d, lr_max %g, lr_min %g, decay ends at %s (decay lengths %s)",
        schedule.warmup_steps,
        schedule.lr_max,
        schedule.lr_min,
        schedule.checkpoints,
        [schedule.decay_length(t) for t in schedule.checkpoints],
    )
    return _container_class()(optimizers, multiplier)
