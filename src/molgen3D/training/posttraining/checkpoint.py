"""Post-training checkpoints: TRL/transformers' `checkpoint-N` folders made loadable by `generate`, and resume.

A `checkpoint-N` folder holds the model (safetensors + config.json), the tokenizer, the optimizer,
the scheduler, every RNG state and the trainer state (step, log history): what an exact resume
needs. `complete_model_folder` adds what `generate`/`evaluate` read beyond transformers' files:
the start model's `coordinate_format.json` (the format to sample in) and its generation config.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

EXTRA_FILES = ("coordinate_format.json", "generation_config.json")


def complete_model_folder(folder: str | Path, start_model: str | Path) -> Path:
    """Copy the start model's `coordinate_format.json` (and generation config) into a saved model folder."""
    folder, start_model = Path(folder), Path(start_model)
    for name in EXTRA_FILES:
        if (start_model / name).is_file():
            shutil.copy2(start_model / name, folder / name)
    return folder


def resume_checkpoint(out: str | Path) -> Path | None:
    """The newest complete `checkpoint-N` in the run folder (trainer state written last), or None."""
    out = Path(out)
    if not out.is_dir():
        return None
    found = get_last_checkpoint(str(out))
    return Path(found) if found else None


class CompleteCheckpoints(TrainerCallback):
    """After every save, make `checkpoint-N` a model folder `generate` loads."""

    def __init__(self, start_model: Path):
        self.start_model = start_model

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if folder.is_dir():
            complete_model_folder(folder, self.start_model)
        return control


class StopAfter(TrainerCallback):
    """Stop (with a checkpoint) after optimizer step `step` or `minutes` of training, as a killed run leaves it."""

    def __init__(self, step: int | None = None, minutes: float = 0.0):
        self.step, self.seconds = step, minutes * 60.0
        self.start = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()
        return control

    def on_step_end(self, args, state, control, **kwargs):
        late = self.seconds and time.monotonic() - self.start >= self.seconds
        if late or (self.step is not None and state.global_step >= self.step):
            control.should_save = True
            control.should_training_stop = True
        return control
