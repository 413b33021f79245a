"""Path aliases and plain paths of a job config -> absolute locations (`MolGenPaths`).

Every location can be a `paths.yaml` alias or a plain path; two settings of one location (ours
and TorchTitan's) may both be given only if they name the same place. Only `finalize_job_config`
calls `resolve_molgen_paths`; everything else reads the result it keeps.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from molgen3D.config import paths as path_aliases
from molgen3D.hf.checkpoint_step import STEP_DIR
from molgen3D.training.pretraining.config.custom_job_config import MolGenConfigError
from molgen3D.training.pretraining.config.toml_checks import where_set


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


def _resolve_local(value: str | Path, *, default_section: str | None = None) -> Path:
    """Alias or plain path -> absolute local path (plain relative paths are relative to the working dir)."""
    return Path(os.path.abspath(path_aliases.resolve(value, default_section=default_section)))


def resolve_model_location(value: str) -> str:
    """Alias/path/`hf:` id -> an absolute local path, or the hub id when it names none locally."""
    resolved = path_aliases.resolve(value)
    if os.path.isabs(resolved) or os.path.exists(resolved) or value.startswith((".", "/", "~")):
        return os.path.abspath(os.path.expanduser(resolved))
    if path_aliases.is_alias(value) or value.startswith(path_aliases.HUB_PREFIX) or resolved.count("/") == 1:
        return resolved
    return os.path.abspath(resolved)


def _agreeing_path(
    primary_key: str, primary: str | None, secondary_key: str, secondary: str | None, cfg
) -> Path | None:
    """Resolve two settings of one location: either may be set; if both are, they must name the same place."""
    a = _alias_error_as_config_error(primary_key, primary, cfg)
    b = _alias_error_as_config_error(secondary_key, secondary, cfg)
    if a is not None and b is not None and os.path.realpath(a) != os.path.realpath(b):
        primary_section, _, primary_name = primary_key.rpartition(".")
        raise MolGenConfigError(
            secondary_key,
            f"{secondary!r} resolves to {b}, but [{primary_section}] {primary_name} = {primary!r} resolves to {a}",
            "set only one of them, or make both name the same location",
            where=where_set(cfg, secondary_key),
        )
    return a if a is not None else b


def _alias_error_as_config_error(key: str, value: str | None, cfg, default_section: str | None = None) -> Path | None:
    if not value:
        return None
    try:
        return _resolve_local(value, default_section=default_section)
    except path_aliases.PathAliasError as err:
        raise MolGenConfigError(
            key, str(err), "use an alias defined in paths.yaml or a plain path", where=where_set(cfg, key)
        ) from None


def required_location(key: str, value: str, cfg, example: str) -> Path:
    """A folder setting that may not be empty (a bare name is a `base_paths` key)."""
    location = _alias_error_as_config_error(key, value, cfg, default_section="base_paths")
    if location is None:
        raise MolGenConfigError(key, "is empty", f"name a folder, {example}", where=where_set(cfg, key))
    return location


def _resume_locations(run_path: Path, checkpoint_folder: str) -> tuple[Path, Path]:
    """resume_run_path_tag -> (run dir, its checkpoint folder or the named step dir)."""
    if STEP_DIR.match(run_path.name):
        return run_path.parent.parent, run_path
    if run_path.name == checkpoint_folder:
        return run_path.parent, run_path
    return run_path, run_path / checkpoint_folder


def resolve_molgen_paths(job_config) -> MolGenPaths:
    """The absolute paths named by a raw config, free of side effects; finalize calls it once and keeps the result."""
    cfg = job_config
    run, data = cfg.molgen_run, cfg.molgen_data
    if not run.tokenizer_tag:
        raise MolGenConfigError(
            "molgen_run.tokenizer_tag",
            "is required",
            'name the tokenizer, e.g. tokenizer_tag = "tokenizers:qwen3_0.6b_custom"',
        )
    tokenizer_dir = _agreeing_path(
        "molgen_run.tokenizer_tag", run.tokenizer_tag, "molgen_data.tokenizer_key", data.tokenizer_key, cfg
    )
    train = _agreeing_path(
        "training.dataset_path", cfg.training.dataset_path, "molgen_data.train_path_key", data.train_path_key, cfg
    )
    if train is None:
        raise MolGenConfigError(
            "training.dataset_path",
            "no training data is named (neither it nor [molgen_data] train_path_key is set)",
            'set dataset_path = "data:conformers_train" (or train_path_key)',
            where=where_set(cfg, "training.dataset_path"),
        )
    valid = _agreeing_path(
        "validation.dataset_path", cfg.validation.dataset_path, "molgen_data.valid_path_key", data.valid_path_key, cfg
    )
    base_model = None
    if run.base_model_tag:
        try:
            base_model = resolve_model_location(run.base_model_tag)
        except path_aliases.PathAliasError as err:
            raise MolGenConfigError(
                "molgen_run.base_model_tag", str(err), "use an alias defined in paths.yaml or a plain path"
            ) from None
    resume_dir = resume_ckpt = None
    if run.resume_run_path_tag:
        resume_path = _alias_error_as_config_error("molgen_run.resume_run_path_tag", run.resume_run_path_tag, cfg)
        resume_dir, resume_ckpt = _resume_locations(resume_path, cfg.checkpoint.folder)
    dump = required_location(
        "job.dump_folder", cfg.job.dump_folder, cfg, 'e.g. dump_folder = "qwen3_06b_ckpts" (a base_paths key) or a path'
    )
    return MolGenPaths(
        tokenizer_dir=tokenizer_dir,
        train_data=train,
        valid_data=valid,
        base_model=base_model,
        resume_run_dir=resume_dir,
        resume_checkpoint=resume_ckpt,
        dump_folder=dump,
    )
