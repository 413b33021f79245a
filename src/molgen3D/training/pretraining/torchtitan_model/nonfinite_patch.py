"""Stop a run whose loss is not finite, before its weights are.

A NaN/Inf loss makes the global gradient norm non-finite on every rank (it is all-reduced),
and TorchTitan would then step the optimizer with NaN gradients: every later loss is NaN,
and the next checkpoint and the final HF folder hold NaN weights. `install()` wraps
TorchTitan's `clip_grad_norm_` (the Trainer calls it once per step, after the backward and
before the optimizer): a non-finite norm drops every gradient (the optimizer skips
parameters without one, so the weights stay as they were) and counts; after
`[training] max_nonfinite_loss_steps` consecutive such steps the run stops with
`NonFiniteLossError` on every rank at once. Reading the norm costs one scalar sync per step.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torchtitan.tools.logging import logger

from molgen3D.training.pretraining.checkpoint_integrity import NonFiniteLossGuard

TARGET = ("torchtitan.distributed.utils", "clip_grad_norm_")


class _State:
    guard: NonFiniteLossGuard | None = None
    step: Callable[[], int] = staticmethod(lambda: -1)
    original: Callable[..., torch.Tensor] | None = None


def configure(max_steps: int, step_source: Callable[[], int]) -> None:
    """Arm the guard for this Trainer (the checkpoint manager calls it: it holds the trainer)."""
    _State.guard = NonFiniteLossGuard(max_steps)
    _State.step = step_source


def disarm() -> None:
    _State.guard = None


def guarded_clip_grad_norm_(parameters: torch.Tensor | Iterable[torch.Tensor], max_norm: float, *args: Any,
                            **kwargs: Any) -> torch.Tensor:
    params = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
    norm = _State.original(params, max_norm, *args, **kwargs)
    guard = _State.guard
    if guard is None:
        return norm
    value = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
    if not math.isfinite(value):
        for param in params:
            param.grad = None
        logger.warning(
            f"step {_State.step()}: gradient norm {value} (non-finite loss or gradient): update skipped, weights unchanged "
            f"({guard.streak + 1} in a row; the run stops at {guard.max_steps or 'never'})"
        )
    guard.update(_State.step(), value)
    return norm


def install() -> None:
    """Wrap TorchTitan's clip_grad_norm_ (idempotent); unarmed until `configure`."""
    module = importlib.import_module(TARGET[0])
    current = getattr(module, TARGET[1])
    if current is guarded_clip_grad_norm_:
        return
    _State.original = current
    setattr(module, TARGET[1], guarded_clip_grad_norm_)
