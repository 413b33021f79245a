"""The one-time check and resolution of a merged job config: `finalize_job_config`.

Aliases go through `paths.yaml`, settings that exist twice (TorchTitan's and ours) must agree,
`init_mode` fills the checkpoint's initial-load fields, and the WSDS section becomes one
`WSDSSchedule`. The result is attached as `job_config.molgen_resolved` (a frozen
`MolGenResolved`), which the runner, the train spec, the loader, the validator and the
checkpointer read instead of working anything out again. Every error names the TOML
`[section] key` (with file:line when the key is in the file) and the fix.
"""

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from molgen3D.training.pretraining.config.batch_geometry import BatchGeometryError, apply_launch_geometry
from molgen3D.training.pretraining.config.custom_job_config import (
    DATASET_NAME,
    DEFAULT_LR,
    DEFAULT_SEED,
    DEFAULT_WARMUP_STEPS,
    INIT_MODES,
    MolGenConfigError,
)
from molgen3D.training.pretraining.config.resolve_paths import (
    STEP_DIR,
    MolGenPaths,
    required_location,
    resolve_model_location,
    resolve_molgen_paths,
)
from molgen3D.training.pretraining.config.toml_checks import check_value_types, where_set
from molgen3D.training.pretraining.wsds import WSDSArgumentError, WSDSSchedule, decay_ends

RESOLVED_ATTR = "molgen_resolved"


@dataclass(frozen=True)
class MolGenResolved:
    """Everything finalize worked out once: absolute paths, the WSDS schedule, the decay-end saves."""

    paths: MolGenPaths
    wsds: WSDSSchedule | None
    """The learning-rate schedule (None: WSDS off, TorchTitan's scheduler runs)."""
    decay_end_steps: tuple[int, ...]
    """Train steps saved as annealed models, whatever checkpoint.interval says (empty when off)."""

    @property
    def tokenizer_dir(self) -> Path:
        """The one tokenizer of the run (the Trainer's, the loader's and the model vocabulary's)."""
        return self.paths.tokenizer_dir


def finalize_job_config(job_config):
    """Validate and resolve a merged JobConfig once, in place, and attach `molgen_resolved`; returns it.

    A second call is a no-op, so consumers may call `resolved(job_config)` on a config TorchTitan's
    own entry point built.
    """
    cfg = job_config
    if getattr(cfg, RESOLVED_ATTR, None) is not None:
        return cfg

    def err(key: str, problem: str, fix: str) -> MolGenConfigError:
        return MolGenConfigError(key, problem, fix, where=where_set(cfg, key))

    check_value_types(cfg)
    if cfg.lr_scheduler.wsds is not None:
        raise err("lr_scheduler.wsds", "is internal and was set", "set the WSDS options under [wsds_scheduler]")
    _check_training(cfg, err)
    _apply_launch_geometry(cfg, err)
    paths = resolve_molgen_paths(cfg)
    _apply_paths(cfg, paths, err)
    _apply_init_mode(cfg, paths, err)
    _apply_seed(cfg, err)
    _apply_dataloader(cfg, err)
    schedule = _apply_lr_and_wsds(cfg, err)
    _check_checkpoint(cfg, err)
    _check_validation(cfg, err)
    result = MolGenResolved(paths=paths, wsds=schedule, decay_end_steps=tuple(decay_end_steps(cfg)))
    object.__setattr__(cfg, RESOLVED_ATTR, result)
    return cfg


def resolved(job_config) -> MolGenResolved:
    """The config's `MolGenResolved` (finalizing it first if nobody has)."""
    return getattr(finalize_job_config(job_config), RESOLVED_ATTR)


def decay_end_steps(job_config: Any) -> list[int]:
    """WSDS decay ends to save at: `[wsds_scheduler] checkpoints` within the run, if enabled."""
    wsds = getattr(job_config, "wsds_scheduler", None)
    if wsds is None or not wsds.enable or not wsds.save_at_decay_ends:
        return []
    return decay_ends(wsds.checkpoints, job_config.training.steps)


def _check_training(cfg, err) -> None:
    t = cfg.training
    if t.dataset != DATASET_NAME:
        raise err(
            "training.dataset",
            f"{t.dataset!r} is not supported",
            f'set dataset = "{DATASET_NAME}" (the packed conformer JSONL loader)',
        )
    if cfg.validation.dataset != DATASET_NAME:
        raise err(
            "validation.dataset",
            f"{cfg.validation.dataset!r} is not supported",
            f'set dataset = "{DATASET_NAME}" or remove the key',
        )
    for key, value, minimum in (
        ("training.steps", t.steps, 1),
        ("training.local_batch_size", t.local_batch_size, 1),
        ("training.seq_len", t.seq_len, 2),
    ):
        if value < minimum:
            raise err(key, f"must be >= {minimum}, got {value}", "set a positive value")
    if t.global_batch_size != -1 and (t.global_batch_size < 1 or t.global_batch_size % t.local_batch_size):
        raise err(
            "training.global_batch_size",
            f"{t.global_batch_size} is not a positive multiple of local_batch_size = {t.local_batch_size}",
            "use -1 (local batch x data-parallel degree) or a multiple of local_batch_size x data-parallel degree",
        )


def _apply_launch_geometry(cfg, err) -> None:
    """HSDP degrees and the global batch for this launch's world size, before any data or model is built."""
    from torchtitan.tools.logging import logger

    try:
        apply_launch_geometry(cfg, os.environ, log=logger.info)
    except BatchGeometryError as e:
        raise err(e.key, e.problem, e.fix) from None


def _apply_paths(cfg, paths: MolGenPaths, err) -> None:
    cfg.molgen_run.tokenizer_tag = str(paths.tokenizer_dir)
    if cfg.molgen_data.tokenizer_key:
        cfg.molgen_data.tokenizer_key = str(paths.tokenizer_dir)
    cfg.training.dataset_path = cfg.molgen_data.train_path_key = str(paths.train_data)
    if paths.valid_data is not None:
        cfg.validation.dataset_path = cfg.molgen_data.valid_path_key = str(paths.valid_data)
    elif cfg.validation.enable:
        raise err(
            "validation.dataset_path",
            "validation is enabled but no validation data is named",
            'set dataset_path = "data:conformers_valid" or [validation] enable = false',
        )
    cfg.job.dump_folder = str(paths.dump_folder)
    cfg.molgen_run.logs_root = str(
        required_location(
            "molgen_run.logs_root", cfg.molgen_run.logs_root, cfg, 'e.g. logs_root = "base_paths:outputs_root"'
        )
    )
    if paths.base_model is not None:
        cfg.molgen_run.base_model_tag = paths.base_model
    if cfg.model.hf_assets_path:
        cfg.model.hf_assets_path = resolve_model_location(cfg.model.hf_assets_path)


def _apply_init_mode(cfg, paths: MolGenPaths, err) -> None:
    run, ckpt = cfg.molgen_run, cfg.checkpoint
    if run.init_mode not in INIT_MODES:
        raise err(
            "molgen_run.init_mode",
            f"{run.init_mode!r} is not one of {', '.join(INIT_MODES)}",
            'set init_mode = "scratch", "hf_pretrain" or "resume"',
        )
    if ckpt.initial_load_path:
        raise err(
            "checkpoint.initial_load_path",
            "is set by [molgen_run] init_mode and must not be given",
            'remove it; use init_mode = "hf_pretrain" + base_model_tag or "resume" + resume_run_path_tag',
        )
    if run.init_mode != "scratch" and not ckpt.enable:
        raise err(
            "checkpoint.enable",
            f'init_mode = "{run.init_mode}" loads through the checkpointer, which is disabled',
            "set [checkpoint] enable = true",
        )
    if run.init_mode == "hf_pretrain":
        if not paths.base_model:
            raise err(
                "molgen_run.base_model_tag",
                'is required when init_mode = "hf_pretrain"',
                'set base_model_tag = "base_paths:qwen3_0.6b_base_model" (a folder of HF safetensors)',
            )
        ckpt.initial_load_path = paths.base_model
        ckpt.initial_load_model_only = True
        ckpt.initial_load_in_hf = True
        cfg.model.hf_assets_path = cfg.model.hf_assets_path or paths.base_model
    elif run.init_mode == "resume":
        if paths.resume_run_dir is None:
            raise err(
                "molgen_run.resume_run_path_tag",
                'is required when init_mode = "resume"',
                'set it to the run to continue, e.g. "ckpts:qwen3_06b/<run-name>"',
            )
        step = STEP_DIR.match(paths.resume_checkpoint.name)
        name = paths.resume_run_dir.name
        if run.run_name and run.run_name != name:
            raise err(
                "molgen_run.run_name",
                f"{run.run_name!r} differs from the resumed run's name {name!r}",
                "remove run_name (a resumed run keeps its name)",
            )
        run.resume_run_path_tag = str(paths.resume_checkpoint)
        run.run_name = name
        # The run dir becomes job.dump_folder, so TorchTitan finds the DCPs in its own checkpoint folder.
        ckpt.initial_load_path = None
        ckpt.initial_load_model_only = False
        ckpt.initial_load_in_hf = False
        if step:
            named = int(step.group(1))
            if ckpt.load_step not in (-1, named):
                raise err(
                    "checkpoint.load_step",
                    f"{ckpt.load_step} disagrees with the step named by [molgen_run] resume_run_path_tag "
                    f"({paths.resume_checkpoint.name})",
                    "set only one of them",
                )
            ckpt.load_step = named
    else:
        ckpt.initial_load_path = None
        ckpt.initial_load_in_hf = False


def _apply_seed(cfg, err) -> None:
    t_seed, d_seed = cfg.training.seed, cfg.debug.seed
    if t_seed is not None and d_seed is not None and t_seed != d_seed:
        raise err("training.seed", f"{t_seed} disagrees with [debug] seed = {d_seed}", "set only one of them")
    seed = t_seed if t_seed is not None else d_seed if d_seed is not None else DEFAULT_SEED
    cfg.training.seed = cfg.debug.seed = seed
    if cfg.molgen_data.seed is None:
        cfg.molgen_data.seed = seed


_LOADER_DEFAULTS = {"num_workers": 0, "pin_memory": False, "prefetch_factor": None, "persistent_workers": False}


def _apply_dataloader(cfg, err) -> None:
    data, loader = cfg.molgen_data, cfg.training.dataloader
    for name, default in _LOADER_DEFAULTS.items():
        ours, titan = getattr(data, name), getattr(loader, name)
        if ours is not None and titan != default and titan != ours:
            raise err(
                f"molgen_data.{name}",
                f"{ours!r} disagrees with [training.dataloader] {name} = {titan!r}",
                "set only one of them",
            )
        value = ours if ours is not None else titan
        setattr(data, name, value)
        setattr(loader, name, value)
    if data.num_workers < 0:
        raise err(
            "molgen_data.num_workers",
            f"must be >= 0, got {data.num_workers}",
            "use 0 (load in the main process) or more",
        )
    if data.num_workers == 0 and (data.persistent_workers or data.prefetch_factor is not None):
        key = "molgen_data.persistent_workers" if data.persistent_workers else "molgen_data.prefetch_factor"
        raise err(key, "only applies with worker processes, but num_workers = 0", "remove it or set num_workers > 0")
    if data.num_workers > 0 and data.prefetch_factor is None:
        data.prefetch_factor = loader.prefetch_factor = 2
    for key, value, minimum in (
        ("molgen_data.min_emb_len", data.min_emb_len, 0),
        ("molgen_data.lookahead_limit", data.lookahead_limit, 1),
    ):
        if value < minimum:
            raise err(key, f"must be >= {minimum}, got {value}", "set a larger value")


def _apply_lr_and_wsds(cfg, err) -> WSDSSchedule | None:
    opt, sched, wsds = cfg.optimizer, cfg.lr_scheduler, cfg.wsds_scheduler
    if opt.lr is not None and wsds.lr_max is not None and not math.isclose(opt.lr, wsds.lr_max, rel_tol=1e-12):
        raise err(
            "wsds_scheduler.lr_max",
            f"{wsds.lr_max} disagrees with [optimizer] lr = {opt.lr}",
            "set only one of them (the other follows)",
        )
    lr = opt.lr if opt.lr is not None else wsds.lr_max if wsds.lr_max is not None else DEFAULT_LR
    if not (math.isfinite(lr) and lr > 0):
        raise err(
            "optimizer.lr" if opt.lr is not None else "wsds_scheduler.lr_max",
            f"must be a positive number, got {lr}",
            "set e.g. 8e-4",
        )
    opt.lr = wsds.lr_max = float(lr)

    if sched.warmup_steps is not None and wsds.warmup_steps is not None and sched.warmup_steps != wsds.warmup_steps:
        raise err(
            "wsds_scheduler.warmup_steps",
            f"{wsds.warmup_steps} disagrees with [lr_scheduler] warmup_steps = {sched.warmup_steps}",
            "set both to the same value (or only one)",
        )
    warmup = sched.warmup_steps if sched.warmup_steps is not None else wsds.warmup_steps
    if warmup is None:
        if wsds.enable:
            raise err(
                "wsds_scheduler.warmup_steps",
                "is required when WSDS is enabled",
                "set warmup_steps (e.g. 500) under [wsds_scheduler]",
            )
        warmup = DEFAULT_WARMUP_STEPS
    if warmup < 0:
        raise err("wsds_scheduler.warmup_steps", f"must be >= 0, got {warmup}", "set 0 or more")
    sched.warmup_steps = wsds.warmup_steps = warmup

    steps = cfg.training.steps
    if not wsds.checkpoints:
        wsds.checkpoints = [steps]
    points = list(wsds.checkpoints)
    if min(points) < 1 or max(points) > steps:
        raise err(
            "wsds_scheduler.checkpoints",
            f"{points} must lie within 1..training.steps = {steps}",
            "drop the steps beyond training.steps or raise training.steps",
        )
    if wsds.enable and max(points) < steps:
        raise err(
            "wsds_scheduler.checkpoints",
            f"{points} ends at step {max(points)} but training.steps = {steps}: steps {max(points) + 1}-{steps} "
            f"would train at lr_min = {wsds.lr_min}",
            f"add {steps} as a new decay end (checkpoints = {points + [steps]}: the extension becomes a new annealed "
            f"mini run), or set training.steps = {max(points)}",
        )
    try:
        # The schedule's own rules live in WSDSSchedule. A disabled section is still checked,
        # but its decay ends need not clear the warmup: that warmup is TorchTitan's scheduler's.
        schedule = WSDSSchedule(
            warmup_steps=warmup if wsds.enable else 0,
            checkpoints=points,
            lr_max=wsds.lr_max,
            lr_min=wsds.lr_min,
            decay_frac=wsds.decay_frac,
            decay_steps=wsds.decay_steps,
        )
    except WSDSArgumentError as e:
        raise err(f"wsds_scheduler.{e.argument}", e.problem, e.fix) from None
    sched.wsds = schedule if wsds.enable else None
    return sched.wsds


def _check_checkpoint(cfg, err) -> None:
    c = cfg.checkpoint
    if c.interval < 1:
        raise err("checkpoint.interval", f"must be >= 1, got {c.interval}", "set the number of steps between saves")
    if c.keep_latest_k == 1 or c.keep_latest_k < 0:
        raise err(
            "checkpoint.keep_latest_k",
            f"{c.keep_latest_k} is not allowed (the newest may still be in flight)",
            "use 0 (keep all) or 2 or more",
        )
    if (c.last_save_in_hf or c.save_hf_per_checkpoint) and not c.last_save_model_only:
        key = "checkpoint.last_save_in_hf" if c.last_save_in_hf else "checkpoint.save_hf_per_checkpoint"
        raise err(
            key,
            "HF safetensors hold only the model, but last_save_model_only = false",
            "set [checkpoint] last_save_model_only = true",
        )


def _check_validation(cfg, err) -> None:
    v = cfg.validation
    if v.seq_len is None:
        v.seq_len = cfg.training.seq_len
    if v.seq_len > cfg.training.seq_len or v.seq_len < 2:
        raise err(
            "validation.seq_len",
            f"{v.seq_len} is outside 2..training.seq_len = {cfg.training.seq_len} (the model's rotary table)",
            "remove it (defaults to training.seq_len) or lower it",
        )
    if v.enable:
        for key, value in (("validation.freq", v.freq), ("validation.local_batch_size", v.local_batch_size)):
            if value < 1:
                raise err(key, f"must be >= 1, got {value}", "set a positive value")
    for key, value, minimum in (
        ("validation.sample_conformers_freq", v.sample_conformers_freq, 0),
        ("validation.sample_conformers_molecules", v.sample_conformers_molecules, 1),
        ("validation.sample_conformers_per_molecule", v.sample_conformers_per_molecule, 1),
        ("validation.sample_max_new_tokens", v.sample_max_new_tokens, 1),
    ):
        if value < minimum:
            raise err(key, f"must be >= {minimum}, got {value}", "set a larger value")
    if not v.sample_temperature > 0:
        raise err("validation.sample_temperature", f"must be > 0, got {v.sample_temperature}", "use e.g. 1.0")
