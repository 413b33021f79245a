"""Weights and losses that cannot lie: finite weights, a finite loss.

A run whose loss went non-finite goes on to publish an HF folder of NaN tensors. Two guards:
- `nonfinite_tensors(state)` / `check_finite_hf_folder(dir)`: an HF folder with a NaN or
  Inf tensor is refused before it is written or published;
- `NonFiniteLossGuard`: stops the run with a clear error after `max_steps` consecutive
  non-finite losses (a finite loss resets the count). The Trainer (`trainer.MolGenTrainer`) owns
  one and feeds it every step's global gradient norm (`check_gradients`), which a NaN/Inf loss
  makes non-finite on every rank at once.
Whether a saved step's files are intact (checksums) is `molgen3D.hf.checkpoint_step`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torchtitan.tools.logging import logger


class NonFiniteWeightsError(RuntimeError):
    """Weights about to be written or published contain NaN/Inf."""


class NonFiniteLossError(RuntimeError):
    """The training loss stayed non-finite for too many steps."""


def nonfinite_tensors(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of floating tensors holding a NaN or Inf (DTensors are checked on their local shard)."""
    bad: list[str] = []
    for name, tensor in state.items():
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        if isinstance(local, torch.Tensor) and local.is_floating_point() and local.numel():
            if not bool(torch.isfinite(local).all()):
                bad.append(name)
    return bad


def require_finite(state: Mapping[str, torch.Tensor], where: str) -> None:
    """Raise `NonFiniteWeightsError` naming the tensors when any is not finite."""
    bad = nonfinite_tensors(state)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise NonFiniteWeightsError(
            f"{where}: {len(bad)} of {len(state)} tensors contain NaN/Inf ({shown}); refusing to write or publish "
            "them. Resume from the newest finite checkpoint (lower the lr or check the data) instead."
        )


def check_finite_hf_folder(hf_dir: str | os.PathLike) -> None:
    """Read every safetensors file of an HF folder and `require_finite` it."""
    from safetensors.torch import load_file

    root = Path(hf_dir)
    shards = sorted(root.glob("*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"{root} has no *.safetensors files")
    for shard in shards:
        require_finite(load_file(str(shard)), str(shard))


class NonFiniteLossGuard:
    """Counts consecutive non-finite losses; raises `NonFiniteLossError` at `max_steps` of them (0: off)."""

    def __init__(self, max_steps: int, key: str = "[training] max_nonfinite_loss_steps"):
        if max_steps < 0:
            raise ValueError(f"{key} = {max_steps} must be >= 0 (0 turns the guard off)")
        self.max_steps = max_steps
        self.key = key
        self.streak = 0
        self.first_bad_step: int | None = None

    def update(self, step: int, loss: float) -> None:
        if math.isfinite(loss):
            self.streak = 0
            self.first_bad_step = None
            return
        if self.streak == 0:
            self.first_bad_step = step
        self.streak += 1
        if self.max_steps and self.streak >= self.max_steps:
            raise NonFiniteLossError(
                f"loss is {loss} at step {step}, non-finite for {self.streak} consecutive step(s) since step "
                f"{self.first_bad_step} ({self.key} = {self.max_steps}); stopping before it reaches a checkpoint. "
                "Resume from the last checkpoint with a lower [optimizer] lr, or check the data at these steps."
            )

    def check_gradients(self, step: int, params: Sequence[torch.Tensor], grad_norm: torch.Tensor) -> None:
        """After the step's gradient norm: a non-finite one drops every gradient (the optimizer then
        skips those parameters, so the weights stay as they were) and counts towards the stop."""
        value = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        if not math.isfinite(value):
            for param in params:
                param.grad = None
            logger.warning(
                f"step {step}: gradient norm {value} (non-finite loss or gradient): update skipped, "
                f"weights unchanged ({self.streak + 1} in a row; the run stops at {self.max_steps or 'never'})"
            )
        self.update(step, value)
