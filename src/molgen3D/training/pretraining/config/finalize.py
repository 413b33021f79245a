"""The one-time check and resolution of a merged job config: `finalize_job_config`.

Aliases go through `paths.yaml`, settings stated in two places (`twins.TWINS`) become one value,
`init_mode` decides the checkpoint's initial-load fields, the batch geometry follows the launch,
and the WSDS section becomes one `WSDSSchedule`. The result is attached as
`job_config.molgen_resolved` (a frozen `MolGenResolved`), which the runner, the train spec, the
loader, the validator and the checkpointer read instead of working anything out again; finalize
writes nothing back into the config. TorchTitan's own copy of these values is written once, by
`write_titan_config`: by `load_job_config` for library callers (the dump folder is then the runs
root), or by the runner after it has planned the run's folders (the dump folder is the run dir);
a second write is refused, so the two cannot drift apart. Every error names the TOML
`[section] key` (with file:line when the key is in the file) and the fix.
"""

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from molgen3D.training.pretraining.config.batch_geometry import (
    BatchGeometry,
    BatchGeometryError,
    resolve_launch_geometry,
)
from molgen3D.training.pretraining.config.custom_job_config import (
    DATASET_NAME,
    DEFAULT_LR,
    DEFAULT_SEED,
    DEFAULT_WARMUP_STEPS,
    INIT_MODES,
    MolGenConfigError,
)
from molgen3D.training.pretraining.config.resolve_paths import STEP_DIR, MolGenPaths, resolve_molgen_paths
from molgen3D.training.pretraining.config.toml_checks import check_value_types, where_set
from molgen3D.training.pretraining.config.twins import label, one_value
from molgen3D.training.pretraining.wsds import WSDSArgumentError, WSDSSchedule, decay_ends

RESOLVED_ATTR = "molgen_resolved"


@dataclass(frozen=True)
class LoaderSettings:
    """Worker settings of the packed loader (`[molgen_data]`, TorchTitan's `[training.dataloader]` follows)."""

    num_workers: int
    pin_memory: bool
    prefetch_factor: int | None
    persistent_workers: bool


@dataclass(frozen=True)
class InitialLoad:
    """TorchTitan's checkpoint load fields, as `init_mode` decides them."""

    path: str | None
    model_only: bool
    in_hf: bool
    load_step: int


@dataclass(frozen=True)
class MolGenResolved:
    """Everything finalize worked out once; TorchTitan's config gets its copy from here."""

    paths: MolGenPaths
    wsds: WSDSSchedule | None
    """The learning-rate schedule (None: WSDS off, TorchTitan's scheduler runs)."""
    decay_end_steps: tuple[int, ...]
    """Train steps saved as annealed models, whatever checkpoint.interval says (empty when off)."""
    lr: float
    """The optimizer's lr and the WSDS peak."""
    warmup_steps: int
    seed: int
    """TorchTitan's RNG seed (`training.seed` = `debug.seed`)."""
    data_seed: int
    """The loader's shuffle seed (`[molgen_data] seed`, else `seed`)."""
    seq_len: int
    valid_seq_len: int
    batch: BatchGeometry
    """Local and global batch, data-parallel degree and accumulation for this launch."""
    hsdp_degrees: tuple[int, int] | None
    """(replicate, shard) when `hsdp_across_nodes` decides them, else None (the TOML's degrees stand)."""
    loader: LoaderSettings
    initial_load: InitialLoad
    run_name: str | None
    """A fixed run name: the resumed run's, else `[molgen_run] run_name` (None: the runner makes one)."""

    @property
    def tokenizer_dir(self) -> Path:
        """The one tokenizer of the run (the Trainer's, the loader's and the model vocabulary's)."""
        return self.paths.tokenizer_dir


def finalize_job_config(job_config):
    """Validate and resolve a merged JobConfig once and attach `molgen_resolved`; returns the config.

    A second call is a no-op. Only value types are normalised in place (an int TOML value for a
    float key); every resolved value lives in `molgen_resolved`.
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
    batch, hsdp = _launch_geometry(cfg, err)
    paths = resolve_molgen_paths(cfg)
    if paths.valid_data is None and cfg.validation.enable:
        raise err(
            "validation.dataset_path",
            "validation is enabled but no validation data is named",
            'set dataset_path = "data:conformers_valid" or [validation] enable = false',
        )
    initial_load, run_name = _initial_load(cfg, paths, err)
    seed, data_seed = _seeds(cfg)
    loader = _loader(cfg, err)
    lr, warmup, schedule = _lr_and_wsds(cfg, err)
    _check_checkpoint(cfg, err)
    valid_seq_len = _validation_seq_len(cfg, err)
    result = MolGenResolved(
        paths=paths,
        wsds=schedule,
        decay_end_steps=tuple(decay_end_steps(cfg)),
        lr=lr,
        warmup_steps=warmup,
        seed=seed,
        data_seed=data_seed,
        seq_len=cfg.training.seq_len,
        valid_seq_len=valid_seq_len,
        batch=batch,
        hsdp_degrees=hsdp,
        loader=loader,
        initial_load=initial_load,
        run_name=run_name,
    )
    object.__setattr__(cfg, RESOLVED_ATTR, result)
    return cfg


def resolved(job_config) -> MolGenResolved:
    """The config's `MolGenResolved`. A config nobody finalized is finalized and TorchTitan's fields written."""
    if getattr(job_config, RESOLVED_ATTR, None) is None:
        write_titan_config(finalize_job_config(job_config))
    return getattr(job_config, RESOLVED_ATTR)


def decay_end_steps(job_config: Any) -> list[int]:
    """WSDS decay ends to save at: `[wsds_scheduler] checkpoints` within the run, if enabled."""
    wsds = getattr(job_config, "wsds_scheduler", None)
    if wsds is None or not wsds.enable or not wsds.save_at_decay_ends:
        return []
    return decay_ends(wsds.checkpoints or [job_config.training.steps], job_config.training.steps)


# ---------------------------------------------------------------- TorchTitan's copy

WRITTEN_ATTR = "_molgen_titan_written"


class RunFolders(Protocol):
    """What the run layout decides: its name, its own folder and its TensorBoard folder."""

    run_name: str
    run_dir: Path
    tb_dir: Path


def write_titan_config(job_config: Any, run: RunFolders | None = None) -> MolGenResolved:
    """Write TorchTitan's fields from `molgen_resolved` (placed in `run`'s folders when given); once per config.

    Returns the final `molgen_resolved` (with the run's folder as `paths.dump_folder` and its name).
    """
    settled: MolGenResolved | None = getattr(job_config, RESOLVED_ATTR, None)
    if settled is None:
        raise RuntimeError("write_titan_config needs a finalized config (finalize_job_config first)")
    if getattr(job_config, WRITTEN_ATTR, False):
        raise RuntimeError("TorchTitan's config was already written from molgen_resolved; it is written once")
    if run is not None:
        settled = dataclasses.replace(
            settled,
            paths=dataclasses.replace(settled.paths, dump_folder=Path(run.run_dir)),
            run_name=run.run_name,
        )
        object.__setattr__(job_config, RESOLVED_ATTR, settled)
        job_config.metrics.save_tb_folder = str(run.tb_dir)
    c, paths = job_config, settled.paths
    c.job.dump_folder = str(paths.dump_folder)
    c.training.dataset_path = str(paths.train_data)
    if paths.valid_data is not None:
        c.validation.dataset_path = str(paths.valid_data)
    c.validation.seq_len = settled.valid_seq_len
    c.model.hf_assets_path = paths.hf_assets_path
    c.training.seed = c.debug.seed = settled.seed
    c.training.global_batch_size = settled.batch.global_batch
    if settled.hsdp_degrees is not None:
        c.parallelism.data_parallel_replicate_degree, c.parallelism.data_parallel_shard_degree = settled.hsdp_degrees
    for name, value in dataclasses.asdict(settled.loader).items():
        setattr(c.training.dataloader, name, value)
    c.optimizer.lr = settled.lr
    c.lr_scheduler.warmup_steps = settled.warmup_steps
    c.lr_scheduler.wsds = settled.wsds
    load = settled.initial_load
    c.checkpoint.initial_load_path = load.path
    c.checkpoint.initial_load_model_only = load.model_only
    c.checkpoint.initial_load_in_hf = load.in_hf
    c.checkpoint.load_step = load.load_step
    object.__setattr__(job_config, WRITTEN_ATTR, True)
    return settled


# ---------------------------------------------------------------- checks and resolution


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


def _launch_geometry(cfg, err) -> tuple[BatchGeometry, tuple[int, int] | None]:
    """The batch and HSDP degrees for this launch's world size, before any data or model is built."""
    from torchtitan.tools.logging import logger

    try:
        return resolve_launch_geometry(cfg, os.environ, log=logger.info)
    except BatchGeometryError as e:
        raise err(e.key, e.problem, e.fix) from None


def _initial_load(cfg, paths: MolGenPaths, err) -> tuple[InitialLoad, str | None]:
    """TorchTitan's load fields from `init_mode`, and the run name a resume fixes."""
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
        return InitialLoad(paths.base_model, True, True, ckpt.load_step), run.run_name or None
    if run.init_mode == "scratch":
        return InitialLoad(None, ckpt.initial_load_model_only, False, ckpt.load_step), run.run_name or None
    if paths.resume_run_dir is None:
        raise err(
            "molgen_run.resume_run_path_tag",
            'is required when init_mode = "resume"',
            'set it to the run to continue, e.g. "ckpts:qwen3_06b/<run-name>"',
        )
    name = paths.resume_run_dir.name
    if run.run_name and run.run_name != name:
        raise err(
            "molgen_run.run_name",
            f"{run.run_name!r} differs from the resumed run's name {name!r} "
            f"({label(cfg, 'molgen_run.resume_run_path_tag', run.resume_run_path_tag)})",
            "remove run_name (a resumed run keeps its name)",
        )
    load_step = ckpt.load_step
    step = STEP_DIR.match(paths.resume_checkpoint.name)
    if step:
        named = int(step.group(1))
        if load_step not in (-1, named):
            raise err(
                "checkpoint.load_step",
                f"{load_step} disagrees with the step named by "
                f"{label(cfg, 'molgen_run.resume_run_path_tag', run.resume_run_path_tag)}",
                "set only one of them",
            )
        load_step = named
    # The run dir becomes job.dump_folder, so TorchTitan finds the DCPs in its own checkpoint folder.
    return InitialLoad(None, False, False, load_step), name


def _seeds(cfg) -> tuple[int, int]:
    seed, _ = one_value(cfg, "seed")
    seed = DEFAULT_SEED if seed is None else seed
    return seed, seed if cfg.molgen_data.seed is None else cfg.molgen_data.seed


def _loader(cfg, err) -> LoaderSettings:
    values = {name: one_value(cfg, name)[0] for name in ("num_workers", "pin_memory", "prefetch_factor")}
    values["persistent_workers"] = one_value(cfg, "persistent_workers")[0]
    workers = values["num_workers"] or 0
    if workers < 0:
        raise err(
            "molgen_data.num_workers",
            f"must be >= 0, got {workers}",
            "use 0 (load in the main process) or more",
        )
    if workers == 0 and (values["persistent_workers"] or values["prefetch_factor"] is not None):
        key = "molgen_data.persistent_workers" if values["persistent_workers"] else "molgen_data.prefetch_factor"
        raise err(key, "only applies with worker processes, but num_workers = 0", "remove it or set num_workers > 0")
    data = cfg.molgen_data
    for key, value, minimum in (
        ("molgen_data.min_emb_len", data.min_emb_len, 0),
        ("molgen_data.lookahead_limit", data.lookahead_limit, 1),
    ):
        if value < minimum:
            raise err(key, f"must be >= {minimum}, got {value}", "set a larger value")
    prefetch = values["prefetch_factor"]
    return LoaderSettings(
        num_workers=workers,
        pin_memory=bool(values["pin_memory"]),
        prefetch_factor=2 if workers > 0 and prefetch is None else prefetch,
        persistent_workers=bool(values["persistent_workers"]),
    )


def _lr_and_wsds(cfg, err) -> tuple[float, int, WSDSSchedule | None]:
    """(lr, warmup steps, the schedule when WSDS is on) from `[optimizer]`, `[lr_scheduler]`, `[wsds_scheduler]`."""
    wsds = cfg.wsds_scheduler
    lr, lr_key = one_value(cfg, "lr", same=lambda a, b: math.isclose(a, b, rel_tol=1e-12))
    lr = DEFAULT_LR if lr is None else float(lr)
    if not (math.isfinite(lr) and lr > 0):
        raise err(lr_key or "optimizer.lr", f"must be a positive number, got {lr}", "set e.g. 8e-4")

    warmup, warmup_key = one_value(cfg, "warmup_steps")
    if warmup is None:
        if wsds.enable:
            raise err(
                "wsds_scheduler.warmup_steps",
                "is required when WSDS is enabled",
                "set warmup_steps (e.g. 500) under [wsds_scheduler]",
            )
        warmup = DEFAULT_WARMUP_STEPS
    if warmup < 0:
        raise err(warmup_key or "wsds_scheduler.warmup_steps", f"must be >= 0, got {warmup}", "set 0 or more")

    steps = cfg.training.steps
    points = list(wsds.checkpoints) or [steps]
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
            checkpoints=tuple(points),
            lr_max=lr,
            lr_min=wsds.lr_min,
            decay_frac=wsds.decay_frac,
            decay_steps=wsds.decay_steps,
        )
    except WSDSArgumentError as e:
        raise err(f"wsds_scheduler.{e.argument}", e.problem, e.fix) from None
    return lr, warmup, schedule if wsds.enable else None


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


def _validation_seq_len(cfg, err) -> int:
    """The validation packing length (None -> training.seq_len); also checks the rest of `[validation]`."""
    v = cfg.validation
    seq_len = cfg.training.seq_len if v.seq_len is None else v.seq_len
    if seq_len > cfg.training.seq_len or seq_len < 2:
        raise err(
            "validation.seq_len",
            f"{seq_len} is outside 2..training.seq_len = {cfg.training.seq_len} (the model's rotary table)",
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
    return seq_len
