"""TorchTitan's CheckpointManager, extended for MolGen runs.

What it adds to TorchTitan 0.2.2:
- a save at every WSDS decay end (`[wsds_scheduler] checkpoints`, train step == T), whatever
  `checkpoint.interval` says; decay ends are annealed models, so `keep_latest_k` counts only
  the other saves and never purges them;
- complete Hugging Face folders: after TorchTitan's last-step HF save (`last_save_in_hf`) and,
  with `checkpoint.save_hf_per_checkpoint`, an HF copy in `step-N/hf` after every save, each
  finished with `molgen3D.hf.export.complete_hf_folder` (config.json, generation_config.json, tokenizer);
- a torn, partial or changed `step-N` folder is never loaded. DCP writes `.metadata` last
  and atomically (tmp file + rename, torch 2.13), and TorchTitan's `_find_load_step` already
  requires it; that is not enough when a folder is half purged (the purge thread's rmtree
  may delete data files before `.metadata`) or re-saved over (the old `.metadata` survives
  until the new one is renamed in). So the probe files are removed first before a folder is
  purged or re-saved, and the load step is chosen by `molgen3D.hf.checkpoint_step.choose_step`
  (the one "is this step intact" rule: complete, resumable, checksums): rank 0 writes a sha256
  manifest into each step once its files are all on disk (after an async save's future
  completes, `[checkpoint] checksums`); a newer step that fails is skipped with a warning naming
  its bad file, a step without a manifest is loaded only when no older one verifies, with a
  warning calling it unverified, and a folder whose every finished step fails stops the run
  with each step's problem (`ResumeError`) instead of training from random weights. A step
  folder that already exists is moved aside (`step-N.replaced-<time>`), never written over;
- a save that cannot be written (read-only or full folder) stops the run naming the folder
  and the fix (`CheckpointWriteError`), not with DCP's traceback;
- an HF folder whose tensors are not all finite is never completed (its index is removed
  and the run stops);
- after the initial load of a `scratch` or `hf_pretrain` run, the rows of the tag tokens are
  re-initialised N(0, dim**-0.5), so the new tags do not start as copies of unrelated rows,
  unless the hf_pretrain base already has trained tag rows (`[molgen_run] reinit_tag_rows`,
  hf/base_model.py).

Installation: TorchTitan's Trainer builds `CheckpointManager(...)` by the name bound in
`torchtitan.train`, and TrainSpec has no hook for it; `patches.py` rebinds that name, guarded,
when the runner calls `patches.install()`.
Without MolGen config sections the class behaves as TorchTitan's. The WSDS decay ends and the
tokenizer come from the config's `molgen_resolved`.
"""

from __future__ import annotations

import errno
import os
import time
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException

from torchtitan.components.checkpoint import MODEL, AsyncMode, CheckpointManager
from torchtitan.tools.logging import logger

from molgen3D.chem.tagged_text import TAGS
from molgen3D.hf import checkpoint_step
from molgen3D.hf.checkpoint_step import DCP_METADATA, HF_INDEX, HF_SUBDIR, MANIFEST, choose_step, step_dirs
from molgen3D.hf.export import complete_hf_folder
from molgen3D.hf.state_dict_adapter import reinit_token_rows
from molgen3D.training.pretraining import checkpoint_integrity as integrity
from molgen3D.training.pretraining.config.finalize import resolved

PROBES = (DCP_METADATA, HF_INDEX)
TRAIN_STATE = "train_state"
FULL_OR_READ_ONLY = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class ResumeError(RuntimeError):
    """A run that resumes, but none of whose saved steps can be loaded."""


class CheckpointWriteError(RuntimeError):
    """A save that the file system refused (read-only, no permission, no space)."""


def resume_refusal(folder: str | os.PathLike, choice: checkpoint_step.StepChoice) -> str:
    """The error a resume gets when every saved step fails: each step and its bad file, and the way out."""
    return (
        f"cannot resume from {folder}: every saved step fails its checks\n{checkpoint_step.describe_failures(choice)}\n"
        f"Training from random weights here would look like a resumed run. To start afresh on purpose, move {folder} "
        "aside (or delete it), or give the run a new name ([molgen_run] run_name / --run-desc)."
    )


def os_error_of(exc: BaseException) -> OSError | None:
    """The OSError behind a failed save (DCP wraps each rank's in a CheckpointException), else None."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, OSError):
            return err
        if isinstance(err, CheckpointException):
            todo += [failure[0] if isinstance(failure, tuple) else failure for failure in err.failures.values()]
        todo += [err.__cause__, err.__context__]
    return None


def write_refusal(folder: str | os.PathLike, err: OSError) -> str:
    """What to tell a user whose checkpoint folder cannot be written."""
    why = os.strerror(err.errno) if err.errno else str(err)
    return (
        f"cannot write checkpoints into {folder}: {why} ({err.filename or folder}). Make the folder writable "
        "(chmod u+w, or point [job] dump_folder at a writable disk) or free space on it, then resume the run "
        "(same run name); or set [checkpoint] enable = false to train without saving."
    )


def disarm(step_dir: str | os.PathLike) -> None:
    """Remove the probe files, so a folder about to be deleted or rewritten never looks complete."""
    for name in (*PROBES, MANIFEST):
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
        try:
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
        except (OSError, CheckpointException) as exc:
            err = os_error_of(exc)
            if err is None or err.errno not in FULL_OR_READ_ONLY:
                raise
            raise CheckpointWriteError(write_refusal(self.folder, err)) from None

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
            checkpoint_step.write_manifest(step_dir)
            return

        def after_save(done) -> None:
            if done.exception() is not None:
                logger.warning(f"no checksum manifest for {step_dir}: the async save failed ({done.exception()})")
                return
            try:
                checkpoint_step.write_manifest(step_dir)
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
        """The step to resume (`choose_step`); rank 0 reads the files, every rank gets its answer.

        -1 when the folder holds no finished save (a crash during the first save: a new run);
        a folder whose every finished save fails raises `ResumeError` on every rank.
        """
        folder = folder or self.folder
        answer: tuple[int, str | None] = (-1, None)
        if _rank() == 0:
            choice = choose_step(folder, resumable=True, checksums=self.checksums, warn=logger.warning)
            refusal = resume_refusal(folder, choice) if choice.step < 0 and choice.any_finished else None
            answer = (choice.step, refusal)
        if dist.is_initialized() and dist.get_world_size() > 1:
            box = [answer]
            dist.broadcast_object_list(box, src=0)
            answer = box[0]
        step, refusal = answer
        if refusal is not None:
            raise ResumeError(refusal)
        return step

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
            check = checkpoint_step.check_step(named, checksums=self.checksums) if os.path.isdir(named) else None
            if check is not None and check.problems:
                raise ResumeError(
                    f"checkpoint.load_step = {step}: {named} fails its checks ({'; '.join(check.problems)}); "
                    "name another step, or -1 for the newest intact one"
                )
            if check is not None and self.checksums and not check.verified:
                logger.warning(f"Loading {named} UNVERIFIED: it has no {MANIFEST}")
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
        """Tag-token rows ~ N(0, dim**-0.5) after a scratch or hf_pretrain initial load (see hf/base_model.py)."""
        if not self.is_molgen_run or self.job_config.molgen_run.init_mode not in ("scratch", "hf_pretrain"):
            return
        from molgen3D.hf import base_model

        tokenizer = self.trainer.tokenizer
        run_ids = {tag: tokenizer.token_to_id(tag) for tag in TAGS}
        run_ids = {tag: i for tag, i in run_ids.items() if i is not None}
        ids = list(run_ids.values())
        if not ids:
            logger.info("Tokenizer has none of the tag tokens; no embedding rows re-initialised")
            return
        run = self.job_config.molgen_run
        base = self.resolved.paths.base_model if run.init_mode == "hf_pretrain" else None
        trained = bool(base) and os.path.isdir(base) and base_model.has_trained_tag_rows(base, run_ids)
        mode = getattr(run, "reinit_tag_rows", "auto")
        if not base_model.should_reinit_tag_rows(run.init_mode, mode, trained):
            why = f"reinit_tag_rows = {mode!r}"
            if trained:
                why = "the base model's tokenizer has them at the same ids (trained rows)"
            logger.info(f"Kept the embedding rows of the tag tokens {ids}: {why}")
            return
        dim = self.trainer.model_args.dim
        for model in self.states[MODEL].model:
            reinit_token_rows(model, ids, dim**-0.5, seed=self.job_config.debug.seed)
        logger.info(f"Re-initialised the embedding rows of tokens {ids} with N(0, {dim**-0.5:.4g})")
