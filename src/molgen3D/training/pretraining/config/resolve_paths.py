"""Path aliases and plain paths of a job config -> absolute locations (`MolGenPaths`).

Every location can be a `paths.yaml` alias or a plain path; a location stated twice (`twins.TWINS`:
the tokenizer, the train and validation data) may be given twice only if both name the same place.
Only `finalize_job_config` calls `resolve_molgen_paths`; everything else reads the result it keeps.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from molgen3D.config import paths as path_aliases
from molgen3D.hf.checkpoint_step import STEP_DIR
from molgen3D.training.pretraining.config.custom_job_config import MolGenConfigError
from molgen3D.training.pretraining.config.toml_checks import where_set
from molgen3D.training.pretraining.config.twins import one_value


@dataclass(frozen=True)
class MolGenPaths:
    """Absolute locations the train spec and runner need, resolved from a job config."""

    tokenizer_dir: Path
    train_data: Path
    valid_data: Path | None
    base_model: str | None
    """Local folder (an `hf:` alias: its snapshot in the Hugging Face cache, config/hub.py); None for a scratch
    run, which never reads it."""
    resume_run_dir: Path | None
    resume_checkpoint: Path | None
    """The resumed run's checkpoint folder, or the `step-N` dir when one was named."""
    runs_root: Path
    """`[job] dump_folder` resolved: the folder that holds one folder per run."""
    dump_folder: Path
    """TorchTitan's `job.dump_folder`: the run's own folder once the run layout is planned (`runs_root`
    until then)."""
    logs_root: Path
    """Root of `pretrain_logs/<run-name>/`."""
    hf_assets_path: str
    """TorchTitan's `model.hf_assets_path`: the TOML's, else the base model (not for scratch), else "" (none)."""


def _resolve_local(value: str | Path, *, default_section: str | None = None) -> Path:
    """Alias or plain path -> absolute local path (plain relative paths are relative to the working dir)."""
    return Path(os.path.abspath(path_aliases.resolve(value, default_section=default_section)))


def resolve_model_location(value: str) -> str:
    """Alias/path/`hf:` id -> an absolute local path (hub ids: their cache snapshot), or a bare `org/name` as is."""
    resolved = path_aliases.resolve(value)
    if os.path.isabs(resolved) or os.path.exists(resolved) or value.startswith((".", "/", "~")):
        return os.path.abspath(os.path.expanduser(resolved))
    if path_aliases.is_alias(value) or value.startswith(path_aliases.HUB_PREFIX) or resolved.count("/") == 1:
        return resolved
    return os.path.abspath(resolved)


def _agreeing_path(cfg, twin_name: str) -> Path | None:
    """One location stated in two places: either may be set; if both are, they must name the same place."""
    location, _ = one_value(
        cfg,
        twin_name,
        convert=lambda key, value: _alias_error_as_config_error(key, value, cfg),
        same=lambda a, b: os.path.realpath(a) == os.path.realpath(b),
    )
    return location


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
    """The absolute paths named by a raw config (an `hf:` snapshot is fetched once if missing); finalize keeps them."""
    cfg = job_config
    run = cfg.molgen_run
    if not run.tokenizer_tag:
        raise MolGenConfigError(
            "molgen_run.tokenizer_tag",
            "is required",
            'name the tokenizer, e.g. tokenizer_tag = "tokenizers:qwen3_0.6b_custom"',
        )
    tokenizer_dir = _agreeing_path(cfg, "tokenizer")
    train = _agreeing_path(cfg, "train_data")
    if train is None:
        raise MolGenConfigError(
            "training.dataset_path",
            "no training data is named (neither it nor [molgen_data] train_path_key is set)",
            'set dataset_path = "data:conformers_train" (or train_path_key)',
            where=where_set(cfg, "training.dataset_path"),
        )
    valid = _agreeing_path(cfg, "valid_data")
    base_model = None
    # A scratch run reads nothing of the base model: resolving an `hf:` tag would download it for nothing.
    if run.base_model_tag and run.init_mode != "scratch":
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
    runs_root = required_location(
        "job.dump_folder", cfg.job.dump_folder, cfg, 'e.g. dump_folder = "qwen3_06b_ckpts" (a base_paths key) or a path'
    )
    logs_root = required_location(
        "molgen_run.logs_root", run.logs_root, cfg, 'e.g. logs_root = "base_paths:outputs_root"'
    )
    if cfg.model.hf_assets_path:
        hf_assets = resolve_model_location(cfg.model.hf_assets_path)
    else:
        hf_assets = base_model or ""
    return MolGenPaths(
        tokenizer_dir=tokenizer_dir,
        train_data=train,
        valid_data=valid,
        base_model=base_model,
        resume_run_dir=resume_dir,
        resume_checkpoint=resume_ckpt,
        runs_root=runs_root,
        dump_folder=runs_root,
        logs_root=logs_root,
        hf_assets_path=hf_assets,
    )
