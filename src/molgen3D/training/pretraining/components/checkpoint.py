"""TorchTitan's CheckpointManager, extended for MolGen runs.

What it adds to TorchTitan 0.2.2:
- a save at every WSDS decay end (`[wsds_scheduler] checkpoints`, train step == T), whatever
  `checkpoint.interval` says; decay ends are annealed models, so `keep_latest_k` counts only
  the other saves and never purges them;
- complete Hugging Face folders: after TorchTitan's last-step HF save (`last_save_in_hf`) and,
  with `checkpoint.save_hf_per_checkpoint`, an HF copy in `step-N/hf` after every save, each
  finished with `molgen3D.hf.export.complete_hf_folder` (config.json, generation_config.json, tokenizer);
- a torn or partial `step-N` folder is never picked as the latest. DCP writes `.metadata` last
  and atomically (tmp file + rename, torch 2.13), and TorchTitan's `_find_load_step` already
  requires it; that is not enough when a folder is half purged (the purge thread's rmtree
  may delete data files before `.metadata`) or re-saved over (the old `.metadata` survives
  until the new one is renamed in). So: the probe files are removed first before a folder is
  purged or re-saved, and the load step is the newest folder whose metadata reads and whose
  every referenced file is present and long enough;
- content checksums (`checkpoint_integrity.py`, `[checkpoint] checksums`): rank 0 writes a
  sha256 manifest into each step once its files are all on disk (after an async save's
  future completes); the load step is the newest one that also verifies, each newer one
  skipped with a warning naming its bad file. A step folder that already exists is moved
  aside (`step-N.replaced-<time>`), never written over in place;
- an HF folder whose tensors are not all finite is never completed (its index is removed
  and the run stops); the non-finite loss guard (`nonfinite_patch.py`) is armed here;
- after the initial load of a `scratch` or `hf_pretrain` run, the rows of the tag tokens are
  re-initialised N(0, dim**-0.5), so the new tags do not start as copies of unrelated rows,
  unless the hf_pretrain base already has trained tag rows (`[molgen_run] reinit_tag_rows`,
  hf_base.py).

Installation: TorchTitan's Trainer builds `CheckpointManager(...)` by the name bound in
`torchtitan.train`, and TrainSpec has no hook for it; `patches.py` rebinds that name, guarded.
Without MolGen config sections the class behaves as TorchTitan's. The WSDS decay ends and the
tokenizer come from the config's `molgen_resolved`.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from torchtitan.components.checkpoint import MODEL, AsyncMode, CheckpointManager
from torchtitan.tools.logging import logger

from molgen3D.chem.tagged_text import TAGS
from molgen3D.hf.export import complete_hf_folder
from molgen3D.hf.state_dict_adapter import reinit_token_rows
from molgen3D.training.pretraining.config.finalize import resolved
from molgen3D.training.pretraining import checkpoint_integrity as integrity

STEP_DIR = re.compile(r"step-(\d+)")
DCP_METADATA = ".metadata"
HF_INDEX = "model.safetensors.index.json"
PROBES = (DCP_METADATA, HF_INDEX)
HF_SUBDIR = "hf"
TRAIN_STATE = "train_state"
# What a DCP must hold for training to restart from it (top-level keys of TorchTitan's state).
TRAINING_STATE = ("optimizer", TRAIN_STATE)


# ---------------------------------------------------------------- completeness checks


def _dcp_problem(step_dir: Path) -> str | None:
    from torch.distributed.checkpoint import FileSystemReader

    try:
        metadata = FileSystemReader(str(step_dir)).read_metadata()
    except Exception as err:  # a truncated or foreign pickle: the save did not finish
        return f"{DCP_METADATA} is unreadable ({type(err).__name__}: {err})"
    needed: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        end = int(info.offset) + int(info.length)
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), end)
    for name, size in sorted(needed.items()):
        path = step_dir / name
        if not path.is_file():
            return f"{name} named by {DCP_METADATA} is missing"
        if path.stat().st_size < size:
            return f"{name} has {path.stat().st_size} bytes, {DCP_METADATA} needs {size}"
    return None


def _hf_problem(step_dir: Path) -> str | None:
    try:
        index = json.loads((step_dir / HF_INDEX).read_text(encoding="utf-8"))
        files = set(index["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return f"{HF_INDEX} is unreadable ({type(err).__name__}: {err})"
    for name in sorted(files):
        path = step_dir / name
        if not path.is_file() or path.stat().st_size < 8:
            return f"{name} named by {HF_INDEX} is missing or empty"
    return None


def checkpoint_problem(step_dir: str | os.PathLike) -> str | None:
    """Why `step_dir` is not a complete checkpoint (DCP or HF safetensors), or None if it is."""
    step_dir = Path(step_dir)
    if (step_dir / DCP_METADATA).is_file():
        return _dcp_problem(step_dir)
    if (step_dir / HF_INDEX).is_file():
        return _hf_problem(step_dir)
    return f"no {DCP_METADATA} (the save did not finish)"


def step_dirs(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    """`(step, path)` of every `step-N` directory in `folder`, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = STEP_DIR.fullmatch(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def resume_problem(step_dir: str | os.PathLike) -> str | None:
    """Why training cannot restart from `step_dir` (torn, or model weights only), or None.

    The last save of a run is often model-only or HF safetensors (`last_save_model_only`,
    `last_save_in_hf`): complete as a model, but with no optimizer, scheduler or data state,
    so a run extended past its end must resume from the newest full DCP instead.
    """
    problem = checkpoint_problem(step_dir)
    if problem is not None:
        return problem
    step_dir = Path(step_dir)
    if not (step_dir / DCP_METADATA).is_file():
        return "Hugging Face model weights only (last_save_in_hf): no optimizer, scheduler or data state"
    from torch.distributed.checkpoint import FileSystemReader

    saved = {key.split(".", 1)[0] for key in FileSystemReader(str(step_dir)).read_metadata().state_dict_metadata}
    missing = [name for name in TRAINING_STATE if name not in saved]
    if missing:
        return f"model weights only (last_save_model_only): no {' or '.join(missing)} state"
    return None


def latest_complete_step(folder: str | os.PathLike, *, resumable: bool = False) -> tuple[int, list[tuple[Path, str]]]:
    """The newest complete (with `resumable`: training can restart from it) step in `folder`, -1 if
    none, and the newer folders skipped, with why."""
    skipped: list[tuple[Path, str]] = []
    check = resume_problem if resumable else checkpoint_problem
    for step, path in reversed(step_dirs(folder)):
        problem = check(path)
        if problem is None:
            return step, skipped
        skipped.append((path, problem))
    return -1, skipped


def disarm(step_dir: str | os.PathLike) -> None:
    """Remove the probe files, so a folder about to be deleted or rewritten never looks complete."""
    for name in (*PROBES, integrity.MANIFEST):
        try:
            os.unlink(os.path.join(step_dir, name))
        except FileNotFoundError:
            pass


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


class MolGenCheckpointManager(CheckpointManager):
    """CheckpointManager with decay-end saves, complete HF folders, torn-folder safety, tag re-init."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trainer = self.states.get(TRAIN_STATE)
        self.job_config = getattr(self.trainer, "job_config", None)
        self.resolved = resolved(self.job_config) if self.is_molgen_run else None
        self.decay_end_steps = frozenset(self.resolved.decay_end_steps if self.resolved else ())
        checkpoint_config = getattr(self.job_config, "checkpoint", None)
        self.save_hf_per_checkpoint = bool(getattr(checkpoint_config, "save_hf_per_checkpoint", False))
        if self.enable and self.save_hf_per_checkpoint and self.sd_adapter is None:
            raise ValueError("[checkpoint] save_hf_per_checkpoint = true needs the train spec's state_dict_adapter")
        self.checksums = bool(getattr(checkpoint_config, "checksums", False))
        if self.is_molgen_run and self.trainer is not None:
            trainer = self.trainer
            integrity.arm_loss_guard(self.job_config.training.max_nonfinite_loss_steps, lambda: trainer.step)
        if self.enable and self.decay_end_steps:
            logger.info(f"Checkpoints also at the WSDS decay ends {sorted(self.decay_end_steps)} (never purged)")

    @property
    def is_molgen_run(self) -> bool:
        return hasattr(self.job_config, "molgen_run")

    # --- when to save ------------------------------------------------------------------

    def _should_save(self, curr_step: int, last_step: bool = False) -> bool:
        if super()._should_save(curr_step, last_step):
            return True
        return bool(self.enable and not self.load_only and curr_step in self.decay_end_steps)

    @torch.no_grad()
    def save(self, curr_step: int, last_step: bool = False) -> None:
        saving = self._should_save(curr_step, last_step)
        if saving:
            self._clear_stale_step(curr_step)
        super().save(curr_step, last_step)
        if not saving:
            return
        step_dir = self._create_checkpoint_id(curr_step)
        if last_step and self.last_save_in_hf:
            self._complete_hf(step_dir)
        elif self.save_hf_per_checkpoint:
            self._save_hf_copy(step_dir)
        self._seal(step_dir, last_step)

    def _clear_stale_step(self, step: int) -> None:
        """A `step-N` left by an earlier attempt is moved aside, never written over in place.

        Rank 0 decides and the others wait for it: a rank that looked for itself could
        already see the folder another rank just started writing.
        """
        step_dir = self._create_checkpoint_id(step)
        if _rank() == 0 and os.path.isdir(step_dir):
            aside = f"{step_dir}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
            logger.warning(f"{step_dir} already exists: moved to {aside} (a step folder is never overwritten in place)")
            os.rename(step_dir, aside)
        _barrier()

    # --- checksums -----------------------------------------------------------------------

    def _seal(self, step_dir: str, last_step: bool) -> None:
        """Rank 0 writes the step's manifest once every rank's files are on disk.

        DCP's coordinator writes `.metadata` after gathering every rank's write results, so
        rank 0's save future completing means the folder is whole.
        """
        if not self.checksums or _rank() != 0:
            return
        future = None if last_step or self.async_mode == AsyncMode.DISABLED else self.save_future
        if future is None:
            integrity.write_manifest(step_dir)
            return

        def after_save(done) -> None:
            if done.exception() is not None:
                logger.warning(f"no checksum manifest for {step_dir}: the async save failed ({done.exception()})")
                return
            try:
                integrity.write_manifest(step_dir)
            except Exception as err:  # a callback must not die silently
                logger.warning(f"no checksum manifest for {step_dir}: {type(err).__name__}: {err}")

        future.add_done_callback(after_save)

    # --- Hugging Face folders ------------------------------------------------------------

    def _save_hf_copy(self, step_dir: str) -> None:
        states = self.states[MODEL].state_dict()
        if self.export_dtype != torch.float32:
            states = {k: v.to(self.export_dtype) for k, v in states.items()}
        hf_dir = os.path.join(step_dir, HF_SUBDIR)
        self.dcp_save(states, checkpoint_id=hf_dir, async_mode=AsyncMode.DISABLED, to_hf=True)
        self._complete_hf(hf_dir)

    def _complete_hf(self, hf_dir: str) -> None:
        if not self.is_molgen_run or _rank() != 0:
            return
        try:
            integrity.check_finite_hf_folder(hf_dir)
        except integrity.NonFiniteWeightsError:
            disarm(hf_dir)  # without its index the folder is never taken for a model
            raise
        complete_hf_folder(hf_dir, self.trainer.model_args, self.resolved.tokenizer_dir)
        logger.info(f"Hugging Face model folder complete: {hf_dir}")

    # --- which step to load --------------------------------------------------------------

    def _find_load_step(self, folder: str = "") -> int:
        """The newest resumable step whose checksums verify; rank 0 reads the files, every rank gets its answer."""
        step = self._newest_intact_step(folder or self.folder) if _rank() == 0 else -1
        if dist.is_initialized() and dist.get_world_size() > 1:
            box = [step]
            dist.broadcast_object_list(box, src=0)
            step = box[0]
        return step

    def _newest_intact_step(self, folder: str) -> int:
        if not self.checksums:
            step, skipped = latest_complete_step(folder, resumable=True)
            for path, problem in skipped:
                logger.warning(f"Ignoring incomplete checkpoint {path}: {problem}")
            return step
        choice = integrity.newest_intact(step_dirs(folder), warn=logger.warning, require=False, precheck=resume_problem)
        return -1 if choice.step is None else choice.step

    def _purge_stale_checkpoints(self) -> None:
        if self.keep_latest_k <= 0 or _rank() != 0 or not os.path.isdir(self.folder):
            return
        if self.enable_ft_dataloader_checkpoints and not (
            self.ft_manager and self.ft_manager.participating_rank() == 0
        ):
            return
        purgeable = [(step, path) for step, path in step_dirs(self.folder) if step not in self.decay_end_steps]
        for _, path in purgeable[: -self.keep_latest_k]:
            disarm(path)
            self.purge_queue.put(str(path))

    # --- loading -------------------------------------------------------------------------

    @torch.no_grad()
    def load(self, step: int = -1) -> bool:
        resuming = self.enable and os.path.isdir(self.folder)
        if resuming and step != -1:
            named = self._create_checkpoint_id(step)
            problem = checkpoint_problem(named) if os.path.isdir(named) else None
            if problem is None and os.path.isdir(named) and self.checksums:
                bad = integrity.verify_manifest(named, require=False)
                problem = "checksum mismatch: " + "; ".join(bad) if bad else None
            if problem is not None:
                raise ValueError(
                    f"checkpoint.load_step = {step}: {named} is incomplete ({problem}); "
                    "name another step, or -1 for the newest complete one"
                )
        elif resuming:
            step = self._find_load_step()  # chosen once here, so TorchTitan does not search again
        # TorchTitan treats an existing folder as "resume" even when no step in it can be resumed
        # (all torn: a crash during the first save): it would then skip the HF initial load and
        # train from random weights. Such a folder is a new run.
        nothing_to_resume = resuming and step == -1
        if nothing_to_resume:
            logger.warning(
                f"{self.folder} holds no checkpoint to resume from: starting afresh, with the initial load if any"
            )
        fresh = not self.enable or not os.path.exists(self.folder) or nothing_to_resume
        if nothing_to_resume:
            folder, self.folder = self.folder, os.path.join(self.folder, ".no-complete-step")
            try:
                loaded = super().load(step)
            finally:
                self.folder = folder
        else:
            loaded = super().load(step)
        if fresh:
            self._reinit_tag_rows()
        return loaded

    def _reinit_tag_rows(self) -> None:
        """Tag-token rows ~ N(0, dim**-0.5) after a scratch or hf_pretrain initial load (see hf_base)."""
        if not self.is_molgen_run or self.job_config.molgen_run.init_mode not in ("scratch", "hf_pretrain"):
            return
        from molgen3D.training.pretraining import hf_base

        tokenizer = self.trainer.tokenizer
        run_ids = {tag: tokenizer.token_to_id(tag) for tag in TAGS}
        run_ids = {tag: i for tag, i in run_ids.items() if i is not None}
        ids = list(run_ids.values())
        if not ids:
            logger.info("Tokenizer has none of the tag tokens; no embedding rows re-initialised")
            return
        run = self.job_config.molgen_run
        base = self.resolved.paths.base_model if run.init_mode == "hf_pretrain" else None
        trained = bool(base) and os.path.isdir(base) and hf_base.has_trained_tag_rows(base, run_ids)
        mode = getattr(run, "reinit_tag_rows", "auto")
        if not hf_base.should_reinit_tag_rows(run.init_mode, mode, trained):
            why = f"reinit_tag_rows = {mode!r}"
            if trained:
                why = "the base model's tokenizer has them at the same ids (trained rows)"
            logger.info(f"Kept the embedding rows of the tag tokens {ids}: {why}")
            return
        dim = self.trainer.model_args.dim
        for model in self.states[MODEL].model:
            reinit_token_rows(model, ids, dim**-0.5, seed=self.job_config.debug.seed)
        logger.info(f"Re-initialised the embedding rows of tokens {ids} with N(0, {dim**-0.5:.4g})")
