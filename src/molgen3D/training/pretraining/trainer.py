"""`MolGenTrainer`: TorchTitan's Trainer plus the two hand-overs its TrainSpec builders cannot make.

TorchTitan builds the train loader (`build_dataloader_fn`) and the metrics processor
(`build_metrics_processor_fn`) separately and gives neither the other; it sets the processor's
`model_parts` and `optimizers` itself, but not the loader. And nothing between backward and the
optimizer step is a hook. So, as TorchTitan's own trainer subclasses do:
- after `Trainer.__init__`, the processor gets `self.dataloader` (`attach_loader`): units/s,
  padding and skipped units in the training log;
- the Trainer owns the non-finite loss guard (`[training] max_nonfinite_loss_steps`); each
  `train_step` runs inside `patches.gradient_norm_check`, which hands the step's global gradient
  norm to the guard (a non-finite norm skips the update; too many in a row stop the run).
The runner calls `patches.install()` before building one (CPU layer, checkpoint manager, WandB folder).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torchtitan.train import Trainer

from molgen3D.training.pretraining import patches
from molgen3D.training.pretraining.checkpoint_integrity import NonFiniteLossGuard


class MolGenTrainer(Trainer):
    """The Trainer `molgen3d pretrain` runs (see the module docstring for what it adds)."""

    def __init__(self, job_config: Any):
        super().__init__(job_config)
        self.loss_guard = NonFiniteLossGuard(job_config.training.max_nonfinite_loss_steps)
        attach_loader = getattr(self.metrics_processor, "attach_loader", None)
        if callable(attach_loader) and self.dataloader is not None:
            attach_loader(self.dataloader)

    def check_gradients(self, params: list[torch.Tensor], grad_norm: torch.Tensor) -> None:
        self.loss_guard.check_gradients(self.step, params, grad_norm)

    def train_step(self, data_iterator: Iterator[Any]) -> None:
        with patches.gradient_norm_check(self.check_gradients):
            super().train_step(data_iterator)
