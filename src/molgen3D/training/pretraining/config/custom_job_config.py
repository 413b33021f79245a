"""MolGen3D extension of TorchTitan 0.2.2's JobConfig, and its one-time validation.

TorchTitan's `ConfigManager` merges the `JobConfig` below into its own, section by section
(`[job] custom_config_module` names this module). Note: no `from __future__ import annotations`
here: the manager merges nested sections only when field types are real classes.

`finalize_job_config` is the single place where the merged config is checked and resolved:
aliases go through `paths.yaml`, settings that exist twice (TorchTitan's and ours) must agree,
`init_mode` fills the checkpoint's initial-load fields, and the WSDS section is attached to
`lr_scheduler.wsds` because TorchTitan's LR scheduler builder never sees the whole job config.
Every error names the TOML `[section] key` (with file:line when the key is in the file) and the fix.
"""

import dataclasses
import difflib
import math
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import tyro

from molgen3D.config import paths as path_aliases
from molgen3D.training.pretraining.helpers.wsds_scheduler import WSDSArgumentError, validate_wsds_args

THIS_MODULE = "molgen3D.training.pretraining.config.custom_job_config"
TRAIN_SPEC_NAME = "molgen_qwen3"
TRAIN_SPEC_MODULE = "molgen3D.training.pretraining.torchtitan_model.qwen3_custom"
DATASET_NAME = "molgen_jsonl"
INIT_MODES = ("scratch", "hf_pretrain", "resume")
DEFAULT_LR = 8e-4
DEFAULT_WARMUP_STEPS = 200
DEFAULT_SEED = 1234
_STEP_DIR = re.compile(r"^step-(\d+)$")


class MolGenConfigError(ValueError):
    """A config value is missing, malformed or conflicts with another; the message names the key and the fix."""

    def __init__(self, key: str, problem: str, fix: str, where: str = "") -> None:
        self.key = key
        section, _, name = key.rpartition(".")
        label = f"[{section}] {name}" if section else f"[{name}]"
        located = f" ({where})" if where else ""
        super().__init__(f"{label}{located}: {problem}. Fix: {fix}")


@dataclass
class MolGenRunConfig:
    """`[molgen_run]`: how the model is initialised and which tokenizer it uses."""

    init_mode: str = ""
    """Required. "scratch" (random init), "hf_pretrain" (HF weights from base_model_tag) or "resume" (a previous run's DCP)."""

    tokenizer_tag: str = ""
    """Required. The tokenizer directory: a `tokenizers:` alias or a path. The only setting that decides the tokenizer."""

    base_model_tag: Optional[str] = None
    """HF model folder for init_mode = "hf_pretrain": a `base_paths:`/`models:` alias or a path."""

    resume_run_path_tag: Optional[str] = None
    """For init_mode = "resume": the run dir, its checkpoint folder, or one `step-N` in it (alias or path)."""

    run_name: Optional[str] = None
    """Force the run name (else $WANDB_RUN_NAME, else YYMMDD-HHMM-<4 hex>-<description>)."""

    logs_root: str = "base_paths:outputs_root"
    """Root of pretrain_logs/<run-name>/ (runtime.log, tb/): a base_paths key, an alias or a path."""


@dataclass
class MolGenDataConfig:
    """`[molgen_data]`: the packed JSONL dataloader (JsonlTaggedPackedDataset)."""

    train_path_key: Optional[str] = None
    """Training split (alias or path: a dir of JSONL files, a glob or one file); same role as training.dataset_path."""

    valid_path_key: Optional[str] = None
    """Validation split; same role as validation.dataset_path (either may be set, both must then agree)."""

    tokenizer_key: Optional[str] = None
    """Optional second statement of the tokenizer; must resolve to the same directory as molgen_run.tokenizer_tag."""

    min_emb_len: int = 16
    """Drop units whose embedded (coordinate) text is shorter than this many characters."""

    shuffle_lines: bool = True
    """Shuffle the global line order every epoch (seeded, identical on all ranks)."""

    infinite: bool = True
    """Start a new epoch when the split is exhausted instead of ending the stream."""

    seed: Optional[int] = None
    """Dataloader seed; None -> training.seed -> 1234."""

    num_workers: Optional[int] = None
    """Dataloader worker processes; None -> training.dataloader.num_workers (0)."""

    pin_memory: Optional[bool] = None
    """Pin batches in page-locked memory (GPU runs); None -> training.dataloader.pin_memory (false)."""

    prefetch_factor: Optional[int] = None
    """Batches prefetched per worker (needs num_workers > 0); None -> training.dataloader.prefetch_factor."""

    persistent_workers: Optional[bool] = None
    """Keep workers alive across epochs (needs num_workers > 0); None -> training.dataloader.persistent_workers."""

    lookahead_limit: int = 100
    """How many pending units the packer inspects to fill each sequence."""

    truncate_overflow_units: bool = True
    """A unit longer than seq_len - 1 tokens is truncated (true) or dropped (false); either way it is counted."""


@dataclass
class WSDSConfig:
    """`[wsds_scheduler]`: warmup, then stable/decay mini runs ending at each checkpoint (FACTS.md section 3)."""

    enable: bool = True
    """Use WSDS; false falls back to TorchTitan's scheduler from [lr_scheduler]."""

    warmup_steps: Optional[int] = None
    """Linear warmup steps; None -> lr_scheduler.warmup_steps (the two must agree when both are set)."""

    checkpoints: list[int] = field(default_factory=list)
    """Decay ends T1 < T2 < ... <= training.steps (each an annealed model); empty -> [training.steps]."""

    lr_max: Optional[float] = None
    """Peak learning rate; None -> optimizer.lr (the two must agree when both are set)."""

    lr_min: float = 0.0
    """Learning rate reached exactly at each decay end."""

    decay_frac: float = 0.1
    """Decay length as a fraction of each checkpoint step T (D = max(1, int(T * decay_frac)))."""

    decay_steps: Optional[int] = None
    """Fixed decay length in steps; overrides decay_frac when set."""

    save_at_decay_ends: bool = True
    """Save a checkpoint at every decay end, whatever checkpoint.interval is."""


@dataclass
class Checkpoint:
    """MolGen3D extras of `[checkpoint]`."""

    save_hf_per_checkpoint: bool = False
    """Also write a complete Hugging Face folder next to every DCP save (not only the last)."""


@dataclass
class Validation:
    """MolGen3D defaults and conformer-sampling extras of `[validation]`."""

    dataset: str = DATASET_NAME
    """Validation data format; only "molgen_jsonl" is supported."""

    seq_len: Optional[int] = None
    """Validation packing length; None -> training.seq_len (it may not exceed it)."""

    sample_conformers_freq: int = 0
    """Every N steps, sample conformers and score them (0 = off)."""

    sample_conformers_molecules: int = 4
    """Validation molecules to sample conformers for."""

    sample_conformers_per_molecule: int = 2
    """Conformers sampled per molecule."""

    sample_max_new_tokens: int = 1024
    """Token budget of one sampled conformer."""

    sample_temperature: float = 1.0
    """Sampling temperature (1.0 = the model's distribution)."""


@dataclass
class Optimizer:
    """`[optimizer]` with an unset learning rate allowed."""

    lr: Optional[float] = None
    """Learning rate; None -> wsds_scheduler.lr_max -> 8e-4 (the two must agree when both are set)."""


@dataclass
class LRScheduler:
    """`[lr_scheduler]` with an unset warmup allowed, plus the WSDS section finalize attaches."""

    warmup_steps: Optional[int] = None
    """Warmup steps; None -> wsds_scheduler.warmup_steps -> 200 (the two must agree when both are set)."""

    wsds: tyro.conf.Suppress[Optional[WSDSConfig]] = None
    """Internal: the resolved [wsds_scheduler] when WSDS is enabled, filled by finalize_job_config; not a TOML key."""


@dataclass
class Training:
    """MolGen3D defaults and extras of `[training]`."""

    dataset: str = DATASET_NAME
    """Training data format; only "molgen_jsonl" is supported."""

    seed: Optional[int] = None
    """Base seed; None -> debug.seed -> 1234. Also becomes debug.seed (TorchTitan's RNG seed)."""


@dataclass
class Model:
    """MolGen3D defaults of `[model]`."""

    name: str = TRAIN_SPEC_NAME
    """TrainSpec name; "molgen_qwen3" is registered by experimental.custom_import."""

    hf_assets_path: str = ""
    """HF assets folder (its safetensors index shards HF saves); "" -> the base model for hf_pretrain, else none."""


@dataclass
class Experimental:
    """MolGen3D default of `[experimental]`."""

    custom_import: str = TRAIN_SPEC_MODULE
    """Module imported by the Trainer first; it registers the molgen_qwen3 TrainSpec."""


@dataclass
class JobConfig:
    """Merged into TorchTitan's JobConfig by config/manager.py."""

    molgen_run: MolGenRunConfig = field(default_factory=MolGenRunConfig)
    molgen_data: MolGenDataConfig = field(default_factory=MolGenDataConfig)
    wsds_scheduler: WSDSConfig = field(default_factory=WSDSConfig)
    checkpoint: Checkpoint = field(default_factory=Checkpoint)
    validation: Validation = field(default_factory=Validation)
    optimizer: Optimizer = field(default_factory=Optimizer)
    lr_scheduler: LRScheduler = field(default_factory=LRScheduler)
    training: Training = field(default_factory=Training)
    model: Model = field(default_factory=Model)
    experimental: Experimental = field(default_factory=Experimental)


@dataclass(frozen=True)
class MolGenPaths:
    """Absolute locations the train spec and runner need, resolved from a job config."""

    tokenizer_dir: Path
    train_data: Path
    valid_data: Path | None
    base_model: str | None
    """Local folder, or a hub id when the alias says `hf:` (never downloaded at run time)."""
    resume_run_dir: Path | None
    resume_checkpoint: Path | None
    """The resumed run's checkpoint folder, or the `step-N` dir when one was named."""
    dump_folder: Path


# ---------------------------------------------------------------- loading


def merged_config_class() -> type:
    """TorchTitan's JobConfig merged with ours, exactly as ConfigManager builds it."""
    from torchtitan.config import ConfigManager
    from torchtitan.config import JobConfig as TitanJobConfig

    return ConfigManager._merge_configs(TitanJobConfig, JobConfig)


def load_job_config(train_toml: str | Path, overrides: typing.Sequence[str] = ()) -> Any:
    """TOML + `--section.key value` overrides -> finalized JobConfig (TorchTitan's ConfigManager does the parsing)."""
    from torchtitan.config import ConfigManager
    from torchtitan.tools.logging import logger as titan_logger

    train_toml = Path(train_toml)
    values = _read_toml(train_toml)
    custom = values.get("job", {}).get("custom_config_module") if isinstance(values.get("job"), dict) else None
    if custom != THIS_MODULE:
        raise MolGenConfigError(
            "job.custom_config_module",
            f"{train_toml} sets it to {custom!r}, so the MolGen3D sections would be unknown to TorchTitan",
            f'add custom_config_module = "{THIS_MODULE}" under [job]',
            where=_locate(train_toml, "job.custom_config_module"),
        )
    check_toml_keys(values, merged_config_class(), train_toml)
    quiet = _DropMessages("HF assets path")  # aliases and "" are resolved by finalize, not by the manager
    titan_logger.addFilter(quiet)
    try:
        job_config = ConfigManager().parse_args(["--job.config_file", str(train_toml), *overrides])
    finally:
        titan_logger.removeFilter(quiet)
    object.__setattr__(job_config, "_molgen_cli_keys", _cli_keys(overrides))
    return finalize_job_config(job_config)


class _DropMessages:
    """A logging filter that hides records starting with one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def filter(self, record) -> bool:
        return not str(record.getMessage()).startswith(self.prefix)


def _read_toml(train_toml: Path) -> dict[str, Any]:
    try:
        with open(train_toml, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise MolGenConfigError("job.config_file", f"{train_toml} does not exist", "pass an existing TOML (see src/molgen3D/config/pretrain/)") from None
    except tomllib.TOMLDecodeError as err:
        raise MolGenConfigError("job.config_file", f"{train_toml} is not valid TOML ({err})", "fix the syntax at that line") from None


def check_toml_keys(values: dict[str, Any], config_cls: type, toml_path: Path | str = "", prefix: str = "") -> None:
    """Reject any TOML key the merged config does not define (naming it and the closest valid key) or a value of the wrong type."""
    valid = {f.name: f for f in fields(config_cls)}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if dotted == "lr_scheduler.wsds":
            raise MolGenConfigError(dotted, "this field is internal (filled from [wsds_scheduler])", "set the WSDS options under [wsds_scheduler]")
        if key not in valid:
            close = difflib.get_close_matches(key, list(valid), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            section = prefix.rstrip(".") or "top level"
            raise MolGenConfigError(
                dotted,
                f"unknown key {key!r} in {toml_path or 'the TOML'} ({section} accepts: {', '.join(sorted(valid))})",
                f"{hint}remove or rename it",
                where=_locate(toml_path, dotted) if toml_path else "",
            )
        sub = valid[key].type
        if is_dataclass(sub):
            if not isinstance(value, dict):
                raise MolGenConfigError(dotted, f"must be a [section], got a {type(value).__name__}", f"write it as [{dotted}] with key = value lines")
            check_toml_keys(value, sub, toml_path, f"{dotted}.")
        elif not _matches(value, sub)[0]:
            raise MolGenConfigError(dotted, f"got {value!r}, expected {_describe(sub)}", "change the value to that type", where=_locate(toml_path, dotted) if toml_path else "")


def _cli_keys(overrides: typing.Sequence[str]) -> frozenset[str]:
    """`section.key` names set by `--section.key[=value]` / `--section.no-key` overrides."""
    keys = set()
    for token in overrides:
        if token.startswith("--"):
            section, _, name = token[2:].split("=", 1)[0].replace("-", "_").rpartition(".")
            keys.add(f"{section}.{name.removeprefix('no_')}")
            keys.add(f"{section}.{name}")
    return frozenset(keys)


def _where(cfg, key: str) -> str:
    """Where a value came from: the command-line override, else `file:line` in the TOML (or "")."""
    if key in getattr(cfg, "_molgen_cli_keys", ()):
        return f"command-line override --{key}"
    return _locate(cfg.job.config_file, key)


def _locate(toml_path: Path | str | None, key: str) -> str:
    """`file:line` of `key` ("section.name") in the TOML, or "" when the file does not set it."""
    if not toml_path or not os.path.isfile(toml_path):
        return ""
    section, _, name = key.rpartition(".")
    current = ""
    pattern = re.compile(rf"^\s*{re.escape(name)}\s*=")
    with open(toml_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            header = re.match(r"^\s*\[\s*([^\]]+?)\s*\]", line)
            if header:
                current = header.group(1)
            elif current == section and pattern.match(line):
                return f"{toml_path}:{lineno}"
    return ""


# ---------------------------------------------------------------- resolution


def _resolve_local(value: str | Path, *, default_section: str | None = None) -> Path:
    """Alias or plain path -> absolute local path (plain relative paths are relative to the working dir)."""
    return Path(os.path.abspath(path_aliases.resolve(value, default_section=default_section)))


def _resolve_model_location(value: str) -> str:
    """Alias/path/`hf:` id -> an absolute local path, or the hub id when it names none locally."""
    resolved = path_aliases.resolve(value)
    if os.path.isabs(resolved) or os.path.exists(resolved) or value.startswith((".", "/", "~")):
        return os.path.abspath(os.path.expanduser(resolved))
    if path_aliases.is_alias(value) or value.startswith(path_aliases.HUB_PREFIX) or resolved.count("/") == 1:
        return resolved
    return os.path.abspath(resolved)


def _agreeing_path(primary_key: str, primary: str | None, secondary_key: str, secondary: str | None, cfg) -> Path | None:
    """Resolve two settings of one location: either may be set; if both are, they must name the same place."""
    a = _alias_error_as_config_error(primary_key, primary, cfg)
    b = _alias_error_as_config_error(secondary_key, secondary, cfg)
    if a is not None and b is not None and os.path.realpath(a) != os.path.realpath(b):
        raise MolGenConfigError(
            secondary_key,
            f"{secondary!r} resolves to {b}, but [{primary_key.rpartition('.')[0]}] {primary_key.rpartition('.')[2]} = {primary!r} resolves to {a}",
            "set only one of them, or make both name the same location",
            where=_where(cfg, secondary_key),
        )
    return a if a is not None else b


def _alias_error_as_config_error(key: str, value: str | None, cfg, default_section: str | None = None) -> Path | None:
    if not value:
        return None
    try:
        return _resolve_local(value, default_section=default_section)
    except path_aliases.PathAliasError as err:
        raise MolGenConfigError(key, str(err), "use an alias defined in paths.yaml or a plain path", where=_where(cfg, key)) from None


def _required_location(key: str, value: str, cfg, example: str) -> Path:
    """A folder setting that may not be empty (a bare name is a `base_paths` key)."""
    location = _alias_error_as_config_error(key, value, cfg, default_section="base_paths")
    if location is None:
        raise MolGenConfigError(key, "is empty", f"name a folder, {example}", where=_where(cfg, key))
    return location


def _resume_locations(run_path: Path, checkpoint_folder: str) -> tuple[Path, Path]:
    """resume_run_path_tag -> (run dir, its checkpoint folder or the named step dir)."""
    if _STEP_DIR.match(run_path.name):
        return run_path.parent.parent, run_path
    if run_path.name == checkpoint_folder:
        return run_path.parent, run_path
    return run_path, run_path / checkpoint_folder


def resolve_molgen_paths(job_config) -> MolGenPaths:
    """The absolute paths named by a (finalized or raw) config; cheap and free of side effects."""
    cfg = job_config
    run, data = cfg.molgen_run, cfg.molgen_data
    if not run.tokenizer_tag:
        raise MolGenConfigError("molgen_run.tokenizer_tag", "is required", 'name the tokenizer, e.g. tokenizer_tag = "tokenizers:qwen3_0.6b_custom"')
    tokenizer_dir = _agreeing_path("molgen_run.tokenizer_tag", run.tokenizer_tag, "molgen_data.tokenizer_key", data.tokenizer_key, cfg)
    train = _agreeing_path("training.dataset_path", cfg.training.dataset_path, "molgen_data.train_path_key", data.train_path_key, cfg)
    if train is None:
        raise MolGenConfigError(
            "training.dataset_path", "no training data is named (neither it nor [molgen_data] train_path_key is set)",
            'set dataset_path = "data:conformers_train" (or train_path_key)', where=_where(cfg, "training.dataset_path"),
        )
    valid = _agreeing_path("validation.dataset_path", cfg.validation.dataset_path, "molgen_data.valid_path_key", data.valid_path_key, cfg)
    base_model = None
    if run.base_model_tag:
        try:
            base_model = _resolve_model_location(run.base_model_tag)
        except path_aliases.PathAliasError as err:
            raise MolGenConfigError("molgen_run.base_model_tag", str(err), "use an alias defined in paths.yaml or a plain path") from None
    resume_dir = resume_ckpt = None
    if run.resume_run_path_tag:
        resume_path = _alias_error_as_config_error("molgen_run.resume_run_path_tag", run.resume_run_path_tag, cfg)
        resume_dir, resume_ckpt = _resume_locations(resume_path, cfg.checkpoint.folder)
    dump = _required_location("job.dump_folder", cfg.job.dump_folder, cfg, 'e.g. dump_folder = "qwen3_06b_ckpts" (a base_paths key) or a path')
    return MolGenPaths(
        tokenizer_dir=tokenizer_dir,
        train_data=train,
        valid_data=valid,
        base_model=base_model,
        resume_run_dir=resume_dir,
        resume_checkpoint=resume_ckpt,
        dump_folder=dump,
    )


# ---------------------------------------------------------------- finalize


def finalize_job_config(job_config):
    """Validate and resolve a merged JobConfig once, in place; returns it. A second call is a no-op."""
    cfg = job_config
    if getattr(cfg, "_molgen_finalized", False):
        return cfg

    def err(key: str, problem: str, fix: str) -> MolGenConfigError:
        return MolGenConfigError(key, problem, fix, where=_where(cfg, key))

    check_value_types(cfg)
    if cfg.lr_scheduler.wsds is not None:
        raise err("lr_scheduler.wsds", "is internal and was set", "set the WSDS options under [wsds_scheduler]")
    _check_training(cfg, err)
    paths = resolve_molgen_paths(cfg)
    _apply_paths(cfg, paths, err)
    _apply_init_mode(cfg, paths, err)
    _apply_seed(cfg, err)
    _apply_dataloader(cfg, err)
    _apply_lr_and_wsds(cfg, err)
    _check_checkpoint(cfg, err)
    _check_validation(cfg, err)
    object.__setattr__(cfg, "_molgen_finalized", True)
    return cfg


def _check_training(cfg, err) -> None:
    t = cfg.training
    if t.dataset != DATASET_NAME:
        raise err("training.dataset", f"{t.dataset!r} is not supported", f'set dataset = "{DATASET_NAME}" (the packed conformer JSONL loader)')
    if cfg.validation.dataset != DATASET_NAME:
        raise err("validation.dataset", f"{cfg.validation.dataset!r} is not supported", f'set dataset = "{DATASET_NAME}" or remove the key')
    for key, value, minimum in (("training.steps", t.steps, 1), ("training.local_batch_size", t.local_batch_size, 1), ("training.seq_len", t.seq_len, 2)):
        if value < minimum:
            raise err(key, f"must be >= {minimum}, got {value}", "set a positive value")
    if t.global_batch_size != -1 and (t.global_batch_size < 1 or t.global_batch_size % t.local_batch_size):
        raise err(
            "training.global_batch_size", f"{t.global_batch_size} is not a positive multiple of local_batch_size = {t.local_batch_size}",
            "use -1 (local batch x data-parallel degree) or a multiple of local_batch_size x data-parallel degree",
        )


def _apply_paths(cfg, paths: MolGenPaths, err) -> None:
    cfg.molgen_run.tokenizer_tag = str(paths.tokenizer_dir)
    if cfg.molgen_data.tokenizer_key:
        cfg.molgen_data.tokenizer_key = str(paths.tokenizer_dir)
    cfg.training.dataset_path = cfg.molgen_data.train_path_key = str(paths.train_data)
    if paths.valid_data is not None:
        cfg.validation.dataset_path = cfg.molgen_data.valid_path_key = str(paths.valid_data)
    elif cfg.validation.enable:
        raise err("validation.dataset_path", "validation is enabled but no validation data is named", 'set dataset_path = "data:conformers_valid" or [validation] enable = false')
    cfg.job.dump_folder = str(paths.dump_folder)
    cfg.molgen_run.logs_root = str(_required_location("molgen_run.logs_root", cfg.molgen_run.logs_root, cfg, 'e.g. logs_root = "base_paths:outputs_root"'))
    if paths.base_model is not None:
        cfg.molgen_run.base_model_tag = paths.base_model
    if cfg.model.hf_assets_path:
        cfg.model.hf_assets_path = _resolve_model_location(cfg.model.hf_assets_path)


def _apply_init_mode(cfg, paths: MolGenPaths, err) -> None:
    run, ckpt = cfg.molgen_run, cfg.checkpoint
    if run.init_mode not in INIT_MODES:
        raise err("molgen_run.init_mode", f"{run.init_mode!r} is not one of {', '.join(INIT_MODES)}", 'set init_mode = "scratch", "hf_pretrain" or "resume"')
    if ckpt.initial_load_path:
        raise err("checkpoint.initial_load_path", "is set by [molgen_run] init_mode and must not be given", "remove it; use init_mode = \"hf_pretrain\" + base_model_tag or \"resume\" + resume_run_path_tag")
    if run.init_mode != "scratch" and not ckpt.enable:
        raise err("checkpoint.enable", f'init_mode = "{run.init_mode}" loads through the checkpointer, which is disabled', "set [checkpoint] enable = true")
    if run.init_mode == "hf_pretrain":
        if not paths.base_model:
            raise err("molgen_run.base_model_tag", 'is required when init_mode = "hf_pretrain"', 'set base_model_tag = "base_paths:qwen3_0.6b_base_model" (a folder of HF safetensors)')
        ckpt.initial_load_path = paths.base_model
        ckpt.initial_load_model_only = True
        ckpt.initial_load_in_hf = True
        cfg.model.hf_assets_path = cfg.model.hf_assets_path or paths.base_model
    elif run.init_mode == "resume":
        if paths.resume_run_dir is None:
            raise err("molgen_run.resume_run_path_tag", 'is required when init_mode = "resume"', 'set it to the run to continue, e.g. "ckpts:qwen3_06b/<run-name>"')
        step = _STEP_DIR.match(paths.resume_checkpoint.name)
        name = paths.resume_run_dir.name
        if run.run_name and run.run_name != name:
            raise err("molgen_run.run_name", f"{run.run_name!r} differs from the resumed run's name {name!r}", "remove run_name (a resumed run keeps its name)")
        run.resume_run_path_tag = str(paths.resume_checkpoint)
        run.run_name = name
        # The run dir becomes job.dump_folder, so TorchTitan finds the DCPs in its own checkpoint folder.
        ckpt.initial_load_path = None
        ckpt.initial_load_model_only = False
        ckpt.initial_load_in_hf = False
        if step:
            named = int(step.group(1))
            if ckpt.load_step not in (-1, named):
                raise err("checkpoint.load_step", f"{ckpt.load_step} disagrees with the step named by [molgen_run] resume_run_path_tag ({paths.resume_checkpoint.name})", "set only one of them")
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
            raise err(f"molgen_data.{name}", f"{ours!r} disagrees with [training.dataloader] {name} = {titan!r}", "set only one of them")
        value = ours if ours is not None else titan
        setattr(data, name, value)
        setattr(loader, name, value)
    if data.num_workers < 0:
        raise err("molgen_data.num_workers", f"must be >= 0, got {data.num_workers}", "use 0 (load in the main process) or more")
    if data.num_workers == 0 and (data.persistent_workers or data.prefetch_factor is not None):
        key = "molgen_data.persistent_workers" if data.persistent_workers else "molgen_data.prefetch_factor"
        raise err(key, "only applies with worker processes, but num_workers = 0", "remove it or set num_workers > 0")
    if data.num_workers > 0 and data.prefetch_factor is None:
        data.prefetch_factor = loader.prefetch_factor = 2
    for key, value, minimum in (("molgen_data.min_emb_len", data.min_emb_len, 0), ("molgen_data.lookahead_limit", data.lookahead_limit, 1)):
        if value < minimum:
            raise err(key, f"must be >= {minimum}, got {value}", "set a larger value")


def _apply_lr_and_wsds(cfg, err) -> None:
    opt, sched, wsds = cfg.optimizer, cfg.lr_scheduler, cfg.wsds_scheduler
    if opt.lr is not None and wsds.lr_max is not None and not math.isclose(opt.lr, wsds.lr_max, rel_tol=1e-12):
        raise err("wsds_scheduler.lr_max", f"{wsds.lr_max} disagrees with [optimizer] lr = {opt.lr}", "set only one of them (the other follows)")
    lr = opt.lr if opt.lr is not None else wsds.lr_max if wsds.lr_max is not None else DEFAULT_LR
    if not (math.isfinite(lr) and lr > 0):
        raise err("optimizer.lr" if opt.lr is not None else "wsds_scheduler.lr_max", f"must be a positive number, got {lr}", "set e.g. 8e-4")
    opt.lr = wsds.lr_max = float(lr)

    if sched.warmup_steps is not None and wsds.warmup_steps is not None and sched.warmup_steps != wsds.warmup_steps:
        raise err("wsds_scheduler.warmup_steps", f"{wsds.warmup_steps} disagrees with [lr_scheduler] warmup_steps = {sched.warmup_steps}", "set both to the same value (or only one)")
    warmup = sched.warmup_steps if sched.warmup_steps is not None else wsds.warmup_steps
    if warmup is None:
        if wsds.enable:
            raise err("wsds_scheduler.warmup_steps", "is required when WSDS is enabled", "set warmup_steps (e.g. 500) under [wsds_scheduler]")
        warmup = DEFAULT_WARMUP_STEPS
    if warmup < 0:
        raise err("wsds_scheduler.warmup_steps", f"must be >= 0, got {warmup}", "set 0 or more")
    sched.warmup_steps = wsds.warmup_steps = warmup

    steps = cfg.training.steps
    if not wsds.checkpoints:
        wsds.checkpoints = [steps]
    points = list(wsds.checkpoints)
    if min(points) < 1 or max(points) > steps:
        raise err("wsds_scheduler.checkpoints", f"{points} must lie within 1..training.steps = {steps}", "drop the steps beyond training.steps or raise training.steps")
    try:
        # The schedule's own rules live in wsds_scheduler. A disabled section is still checked,
        # but its decay ends need not clear the warmup: that warmup is TorchTitan's scheduler's.
        validate_wsds_args(
            warmup_steps=warmup if wsds.enable else 0,
            checkpoints=points,
            lr_max=wsds.lr_max,
            lr_min=wsds.lr_min,
            decay_frac=wsds.decay_frac,
            decay_steps=wsds.decay_steps,
        )
    except WSDSArgumentError as e:
        raise err(f"wsds_scheduler.{e.argument}", e.problem, e.fix) from None
    sched.wsds = dataclasses.replace(wsds, checkpoints=points) if wsds.enable else None


def _check_checkpoint(cfg, err) -> None:
    c = cfg.checkpoint
    if c.interval < 1:
        raise err("checkpoint.interval", f"must be >= 1, got {c.interval}", "set the number of steps between saves")
    if c.keep_latest_k == 1 or c.keep_latest_k < 0:
        raise err("checkpoint.keep_latest_k", f"{c.keep_latest_k} is not allowed (the newest may still be in flight)", "use 0 (keep all) or 2 or more")
    if (c.last_save_in_hf or c.save_hf_per_checkpoint) and not c.last_save_model_only:
        key = "checkpoint.last_save_in_hf" if c.last_save_in_hf else "checkpoint.save_hf_per_checkpoint"
        raise err(key, "HF safetensors hold only the model, but last_save_model_only = false", "set [checkpoint] last_save_model_only = true")


def _check_validation(cfg, err) -> None:
    v = cfg.validation
    if v.seq_len is None:
        v.seq_len = cfg.training.seq_len
    if v.seq_len > cfg.training.seq_len or v.seq_len < 2:
        raise err("validation.seq_len", f"{v.seq_len} is outside 2..training.seq_len = {cfg.training.seq_len} (the model's rotary table)", "remove it (defaults to training.seq_len) or lower it")
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


# ---------------------------------------------------------------- value types


def check_value_types(cfg) -> None:
    """TOML values bypass tyro: check each against its annotation (Literal choices included), naming the key."""

    def walk(obj, prefix: str) -> None:
        for f in fields(obj):
            value, key = getattr(obj, f.name), f"{prefix}{f.name}"
            if is_dataclass(value):
                walk(value, f"{key}.")
                continue
            annotation = _strip_annotated(f.type)
            ok, coerced = _matches(value, annotation)
            if not ok:
                raise MolGenConfigError(key, f"got {value!r}, expected {_describe(annotation)}", "change the value to that type", where=_where(cfg, key))
            if coerced is not value:
                setattr(obj, f.name, coerced)

    walk(cfg, "")


def _strip_annotated(tp):
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _matches(value, tp) -> tuple[bool, Any]:
    """(value fits tp, value with ints widened to float where tp wants a float). Unknown annotations pass."""
    tp = _strip_annotated(tp)
    origin = typing.get_origin(tp)
    if tp is Any or isinstance(tp, (str, typing.TypeVar)):
        return True, value
    if origin is Literal:
        return value in typing.get_args(tp), value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            ok, coerced = _matches(value, option)
            if ok:
                return True, coerced
        return False, value
    if tp is type(None):
        return value is None, value
    if origin is list:
        if not isinstance(value, list):
            return False, value
        (item_tp,) = typing.get_args(tp) or (Any,)
        results = [_matches(v, item_tp) for v in value]
        if not all(ok for ok, _ in results):
            return False, value
        coerced = [c for _, c in results]
        return True, (coerced if any(c is not v for c, v in zip(coerced, value)) else value)
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, int) and not isinstance(value, bool):
            return True, float(value)
        return isinstance(value, float), value
    if tp is str:
        return isinstance(value, str), value
    return True, value


def _describe(tp) -> str:
    tp = _strip_annotated(tp)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        return f"list of {_describe(item_tp)}"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))
