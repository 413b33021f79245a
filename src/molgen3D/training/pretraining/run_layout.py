"""Where one pretraining run puts its files, and what it is called.

Layout:
    <dump_folder>/<run-name>/checkpoint/step-N     TorchTitan DCPs (and HF folders)
    <dump_folder>/<run-name>/run_meta.json         model args + tokenizer for export-hf
    <logs_root>/pretrain_logs/<run-name>/runtime.log and tb/
    <repo>/wandb/<run-name>                         WandB files (unless $WANDB_DIR is set)

Planning is pure (name and paths from the resolved config, environment and clock);
`config.finalize.write_titan_config(job_config, layout)` then writes TorchTitan's fields
once, with the run dir as `job.dump_folder`, and `ensure_run_dirs` creates the folders.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from molgen3D.config import paths as path_aliases
from molgen3D.hf.export import RUN_META
from molgen3D.training.pretraining.config.custom_job_config import MolGenConfigError
from molgen3D.training.pretraining.config.finalize import resolved

RUN_NAME_ENV = "WANDB_RUN_NAME"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_DESCRIPTION = 48


@dataclass(frozen=True)
class RunLayout:
    """Every path a run writes to; `run_dir` becomes `job.dump_folder`."""

    run_name: str
    run_dir: Path
    checkpoint_dir: Path
    run_meta: Path
    log_dir: Path
    runtime_log: Path
    tb_dir: Path
    wandb_dir: Path


def slugify(text: str) -> str:
    """A description as a file-name-safe fragment ("Qwen3 0.6B / hf" -> "Qwen3-0.6B-hf")."""
    slug = _UNSAFE.sub("-", text.strip()).strip("-._")
    return slug[:_MAX_DESCRIPTION].rstrip("-._") or "run"


def make_run_name(description: str, now: datetime, token: str) -> str:
    """`YYMMDD-HHMM-<4 hex>-<description>`: sortable by start time, unique within a minute."""
    if not re.fullmatch(r"[0-9a-f]{4}", token):
        raise ValueError(f"run-name token must be 4 lowercase hex digits, got {token!r}")
    return f"{now:%y%m%d-%H%M}-{token}-{slugify(description)}"


def new_token() -> str:
    return secrets.token_hex(2)


def check_run_name(name: str, key: str) -> str:
    """A fixed run name must be one path component."""
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise MolGenConfigError(
            key,
            f"{name!r} is not a usable run name (it becomes one folder name)",
            "use letters, digits, '-', '_' or '.'",
        )
    return name


def choose_run_name(job_config, run_desc: str | None, env: Mapping[str, str], now: datetime, token: str) -> str:
    """The resolved fixed name (a resumed run's, or [molgen_run] run_name), else $WANDB_RUN_NAME, else a new
    dated name; conflicts are errors."""
    fixed = resolved(job_config).run_name
    from_env = env.get(RUN_NAME_ENV) or None
    if fixed and from_env and fixed != from_env:
        what = "the resumed run's name" if job_config.molgen_run.init_mode == "resume" else "[molgen_run] run_name"
        raise MolGenConfigError(
            "molgen_run.run_name",
            f"${RUN_NAME_ENV}={from_env!r} disagrees with {what} {fixed!r}",
            f"unset {RUN_NAME_ENV} or make it equal",
        )
    if fixed:
        return check_run_name(fixed, "molgen_run.run_name")
    if from_env:
        return check_run_name(from_env, "molgen_run.run_name")
    return make_run_name(run_desc or job_config.job.description, now, token)


def plan_run_layout(job_config, run_name: str, env: Mapping[str, str]) -> RunLayout:
    """Paths of the run `run_name` under a finalized config (a resumed run keeps its own directory)."""
    paths = resolved(job_config).paths
    run_dir = paths.resume_run_dir if paths.resume_run_dir is not None else paths.runs_root / run_name
    log_dir = paths.logs_root / "pretrain_logs" / run_name
    wandb_dir = Path(env["WANDB_DIR"]) if env.get("WANDB_DIR") else path_aliases.repo_root() / "wandb" / run_name
    return RunLayout(
        run_name=run_name,
        run_dir=run_dir,
        checkpoint_dir=run_dir / job_config.checkpoint.folder,
        run_meta=run_dir / RUN_META,
        log_dir=log_dir,
        runtime_log=log_dir / "runtime.log",
        tb_dir=log_dir / job_config.metrics.save_tb_folder,
        wandb_dir=wandb_dir,
    )


def ensure_run_dirs(layout: RunLayout, *, wandb: bool) -> None:
    for folder in (layout.run_dir, layout.log_dir) + ((layout.wandb_dir,) if wandb else ()):
        folder.mkdir(parents=True, exist_ok=True)


def run_environment(layout: RunLayout, env: Mapping[str, str]) -> dict[str, str]:
    """Variables the run exports: names and WandB folder; offline WandB unless an API key is present."""
    values = {
        "RUN_NAME": layout.run_name,
        RUN_NAME_ENV: layout.run_name,
        "WANDB_DIR": str(layout.wandb_dir),
    }
    if not env.get("WANDB_MODE") and not env.get("WANDB_API_KEY"):
        values["WANDB_MODE"] = "offline"
    if not env.get("WANDB_PROJECT"):
        values["WANDB_PROJECT"] = "molgen3d"
    return values
