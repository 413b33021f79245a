"""Run one TorchTitan pretraining job from a MolGen3D TOML: `molgen3d pretrain` / `python -m ...torchtitan_runner`.

read + finalize the config -> check inputs (files, seq_len against a sample of the units) -> name
the run and lay out its folders -> write TorchTitan's fields once (`write_titan_config`) -> export
the run's environment -> runtime.log banner + run_meta.json -> TorchTitan Trainer -> summary.
Works under torchrun (one process per rank) and in-process (tests, the demo): it fills the
single-process rendezvous variables itself, and restores the environment and logging afterwards
so it can run twice in one interpreter.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import importlib
import json
import logging
import os
import re
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import tyro

from molgen3D.config import hub
from molgen3D.config.paths import PathAliasError
from molgen3D.datasets.jsonl_paths import DataPathError, expand_paths
from molgen3D.training.pretraining import run_layout
from molgen3D.training.pretraining.components.checkpoint import CheckpointWriteError, ResumeError
from molgen3D.training.pretraining.config.custom_job_config import MolGenConfigError
from molgen3D.training.pretraining.config.finalize import resolved
from molgen3D.training.pretraining.config.loading import read_job_config
from molgen3D.training.pretraining.config.resolve_paths import MolGenPaths
from molgen3D.training.pretraining.config.finalize import write_titan_config
from molgen3D.training.pretraining.dataprocessing.line_index import check_gzip_shards
from molgen3D.training.pretraining.run_layout import RunLayout
from molgen3D.training.pretraining.wsds import plot_schedule

LOG_FORMAT = "[titan] %(asctime)s - %(name)s - %(levelname)s - %(message)s"
_RUN_NAME_KEY = "molgen3d/run_name"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class QwenPretrainRunConfig:
    """molgen3d pretrain: train a Qwen3-architecture model with TorchTitan.

    Any further `--section.key value` arguments override the TOML (TorchTitan's ConfigManager syntax).
    """

    train_toml: Path
    """The run's TOML (see src/molgen3D/config/pretrain/)."""

    run_desc: str | None = None
    """Short description that becomes part of the run name; default: [job] description."""


@dataclass(frozen=True)
class RunResult:
    """Where a finished run put everything, and how far it got."""

    run_name: str
    run_dir: Path
    checkpoint_dir: Path
    log_path: Path
    tb_dir: Path
    wandb_dir: Path | None
    run_meta: Path
    final_step: int
    last_loss: float | None
    losses: dict[int, float] = field(default_factory=dict)
    """Training loss at every logged step (metrics.log_freq)."""


def cli(argv: list[str]) -> int:
    args, overrides = tyro.cli(QwenPretrainRunConfig, args=argv, prog="molgen3d pretrain", return_unknown_args=True)
    try:
        run_pretraining(args.train_toml, run_desc=args.run_desc, overrides=overrides)
    except (MolGenConfigError, PathAliasError) as err:
        print(f"molgen3d pretrain: config error: {err}", file=sys.stderr)
        return 2
    except (ResumeError, CheckpointWriteError) as err:
        print(f"molgen3d pretrain: {err}", file=sys.stderr)
        return 1
    return 0


def run_pretraining(train_toml: str | Path, run_desc: str | None = None, overrides: Sequence[str] = ()) -> RunResult:
    """Train as the TOML (plus `--section.key value` overrides) says; raises MolGenConfigError on bad config."""
    job_config = read_job_config(train_toml, overrides)
    paths = resolved(job_config).paths
    warnings = check_inputs(job_config, paths)
    model_args = final_model_args(job_config)

    with _scoped_env(_rendezvous_defaults(os.environ)) as env:
        rank, world_size = int(env["RANK"]), int(env["WORLD_SIZE"])
        run_name = run_layout.choose_run_name(job_config, run_desc, env, datetime.now(), run_layout.new_token())
        if world_size > 1 and not (resolved(job_config).run_name or env.get(run_layout.RUN_NAME_ENV)):
            run_name = _agree_on_run_name(run_name, env)
        layout = run_layout.plan_run_layout(job_config, run_name, env)
        settled = write_titan_config(job_config, layout)
        if job_config.checkpoint.enable:
            check_checkpoint_folder(layout.checkpoint_dir)
        run_layout.ensure_run_dirs(layout, wandb=job_config.metrics.enable_wandb)
        with (
            _scoped_env(run_layout.run_environment(layout, env)),
            _runtime_logging(layout.runtime_log if rank == 0 else None),
        ):
            if rank == 0:
                logging.getLogger().info(startup_banner(job_config, layout, paths, world_size))
                for line in warnings:
                    logging.getLogger().warning(line)
                write_run_meta(layout, job_config, model_args, paths)
                if settled.wsds is not None:
                    plot_schedule(settled.wsds, job_config.training.steps, layout.run_dir / "lr_schedule.png")
            # The banner printed the resolved config; TorchTitan would print it again.
            job_config.job.print_config = False
            final_step, losses = _train(job_config)
    result = RunResult(
        run_name=layout.run_name,
        run_dir=layout.run_dir,
        checkpoint_dir=layout.checkpoint_dir,
        log_path=layout.runtime_log,
        tb_dir=layout.tb_dir,
        wandb_dir=layout.wandb_dir if job_config.metrics.enable_wandb else None,
        run_meta=layout.run_meta,
        final_step=final_step,
        last_loss=losses[max(losses)] if losses else None,
        losses=losses,
    )
    if rank == 0:
        print(summary(result, job_config))
    return result


# ---------------------------------------------------------------- checks before training


def check_inputs(job_config, paths: MolGenPaths) -> list[str]:
    """Everything the run reads must exist and seq_len must fit the units before the Trainer starts; errors name
    the key and how to make it. Returns the warnings to show (a small share of units longer than seq_len)."""
    from molgen3D.training.pretraining.device_check import NoAcceleratorError, check_device
    from molgen3D.training.pretraining.patches import accelerator_available
    from molgen3D.training.pretraining.seq_len_check import check_seq_len

    try:
        check_device(job_config.model.flavor, job_config.molgen_run.allow_cpu, accelerator_available())
    except NoAcceleratorError as err:
        raise MolGenConfigError("molgen_run.allow_cpu", err.problem, err.fix) from None
    if (
        not (paths.tokenizer_dir / "tokenizer.json").is_file()
        and not (paths.tokenizer_dir / "tokenizer_config.json").is_file()
    ):
        if (missing := hub.unavailable(paths.tokenizer_dir)) is not None:
            raise MolGenConfigError("molgen_run.tokenizer_tag", missing.problem, missing.fix)
        raise MolGenConfigError(
            "molgen_run.tokenizer_tag",
            f"no tokenizer files in {paths.tokenizer_dir}",
            "build the tokenizers with `molgen3d build-tokenizer` or point tokenizer_tag at a tokenizer folder",
        )
    _check_data("training.dataset_path", paths.train_data)
    if job_config.validation.enable:
        _check_data("validation.dataset_path", paths.valid_data)
    mode = job_config.molgen_run.init_mode
    if mode == "hf_pretrain":
        base = Path(paths.base_model)
        if (missing := hub.unavailable(base)) is not None:
            raise MolGenConfigError("molgen_run.base_model_tag", missing.problem, missing.fix)
        if not base.is_dir():
            raise MolGenConfigError(
                "molgen_run.base_model_tag",
                f"{paths.base_model!r} is not a local folder",
                "point it at a Hugging Face model folder, or at hf:<org>/<name>@<revision> (fetched into the "
                "Hugging Face cache), e.g. base_paths:qwen3_0.6b_base_model",
            )
        if not any(base.glob("*.safetensors")):
            raise MolGenConfigError(
                "molgen_run.base_model_tag",
                f"{base} holds no *.safetensors",
                "point it at a Hugging Face model folder (safetensors + config.json)",
            )
    if mode == "resume":
        # Rank 0 reads every byte (the checkpoint manager reuses its verdict); the others check structure.
        first_rank = os.environ.get("RANK", "0") == "0"
        _check_resume_checkpoint(paths.resume_checkpoint, job_config.checkpoint.checksums and first_rank)
    warning = check_seq_len(job_config, paths)
    return [warning] if warning else []


def _check_resume_checkpoint(location: Path, checksums: bool) -> None:
    """A resume needs a step training can restart from, intact (`checkpoint_step.choose_step`, the rule the
    checkpoint manager loads by): else TorchTitan would start from random weights or fail mid-load."""
    from molgen3D.hf.checkpoint_step import check_step, choose_step, describe_failures, step_number

    if step_number(location) is not None:
        check = check_step(location, resumable=True, checksums=checksums)
        problem = None if check.usable else "; ".join(check.problems)
    else:
        choice = choose_step(location, resumable=True, checksums=checksums)
        problem = None
        if choice.step < 0:
            problem = (
                f"every saved step fails its checks:\n{describe_failures(choice)}\n"
                if choice.passed_over
                else "it holds no step-N checkpoint"
            )
    if problem is not None:
        raise MolGenConfigError(
            "molgen_run.resume_run_path_tag",
            f"{location} cannot be resumed ({problem})",
            "point it at a run dir (or its checkpoint folder / a step-N) that has an intact saved step; to start "
            'afresh on purpose, set init_mode = "scratch" (or "hf_pretrain") with a new run name',
        )


def check_checkpoint_folder(folder: Path) -> None:
    """The run's checkpoint folder must take a file now, not fail at the first save after hours of training."""
    import tempfile

    from molgen3D.training.pretraining.components.checkpoint import write_refusal

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as err:
        raise CheckpointWriteError(write_refusal(folder, err)) from None


def _check_data(key: str, location: Path | None) -> None:
    """The loader's own rule (`expand_paths`) decides, so what passes here also loads; gzip shards read whole."""
    try:
        expand_paths(str(location))
    except DataPathError as err:
        raise MolGenConfigError(
            key,
            f"no data at {location} ({err})",
            "prepare it with `molgen3d prepare-data` or point the key at a JSONL file, a folder of *.jsonl or a glob",
        ) from None
    try:
        check_gzip_shards(str(location))
    except DataPathError as err:
        raise MolGenConfigError(key, str(err).split("; ")[0], "re-create the shard (or use the plain .jsonl)") from None


def final_model_args(job_config) -> Any:
    """The train spec's model args for the flavor, updated from the config (vocab from the tokenizer), without
    touching the spec."""
    from torchtitan.protocols.train_spec import get_train_spec

    importlib.import_module(job_config.experimental.custom_import)
    try:
        spec = get_train_spec(job_config.model.name)
    except ValueError as err:
        raise MolGenConfigError(
            "model.name", str(err), f'set name = "molgen_qwen3" (registered by {job_config.experimental.custom_import})'
        ) from None
    if job_config.model.flavor not in spec.model_args:
        raise MolGenConfigError(
            "model.flavor",
            f"{job_config.model.flavor!r} is not a flavor of {job_config.model.name}",
            f"use one of: {', '.join(spec.model_args)}",
        )
    args = copy.deepcopy(spec.model_args[job_config.model.flavor])
    args.update_from_config(job_config)
    return args


# ---------------------------------------------------------------- run metadata and logging


def startup_banner(job_config, layout: RunLayout, paths: MolGenPaths, world_size: int) -> str:
    c, r = job_config, resolved(job_config)
    lines = [
        "=" * 72,
        f"MolGen3D pretraining run {layout.run_name}",
        f"  model         {c.model.name} / {c.model.flavor}, init_mode {c.molgen_run.init_mode}"
        + (f" from {r.initial_load.path}" if r.initial_load.path else ""),
        f"  tokenizer     {paths.tokenizer_dir}",
        f"  train data    {paths.train_data}",
        f"  valid data    {paths.valid_data if c.validation.enable else '(validation off)'}",
        f"  steps         {c.training.steps}, seq_len {r.seq_len}, "
        f"local batch {r.batch.local_batch}, global batch {r.batch.global_batch}, world size {world_size}",
        f"  lr            {r.lr}, "
        + (
            f"WSDS warmup {r.warmup_steps}, decay ends {list(r.wsds.checkpoints)}"
            if r.wsds
            else f"TorchTitan scheduler, warmup {r.warmup_steps}"
        ),
        f"  run dir       {layout.run_dir}",
        f"  checkpoints   {layout.checkpoint_dir}" + ("" if c.checkpoint.enable else " (checkpointing off)"),
        f"  runtime log   {layout.runtime_log}",
        f"  tensorboard   {layout.tb_dir}" + ("" if c.metrics.enable_tensorboard else " (off)"),
        f"  wandb         {layout.wandb_dir} ({os.environ.get('WANDB_MODE', 'online')})"
        if c.metrics.enable_wandb
        else "  wandb         off",
        "=" * 72,
    ]
    if c.job.print_config:
        lines.append("Resolved config:\n" + json.dumps(config_dict(c), indent=2, default=str))
        lines.append("MolGen3D resolved values:\n" + json.dumps(dataclasses.asdict(r), indent=2, default=str))
    return "\n".join(lines)


def config_dict(job_config) -> dict[str, Any]:
    return dataclasses.asdict(job_config)


def write_run_meta(layout: RunLayout, job_config, model_args: Any, paths: MolGenPaths) -> None:
    """`<run dir>/run_meta.json`: what export-hf needs to rebuild the model without the TOML."""
    meta = {
        "run_name": layout.run_name,
        "model_name": job_config.model.name,
        "flavor": job_config.model.flavor,
        "model_args": dataclasses.asdict(model_args),
        "tokenizer_dir": str(paths.tokenizer_dir),
        "job_config": config_dict(job_config),
        "molgen_resolved": dataclasses.asdict(resolved(job_config)),
    }
    tmp = layout.run_meta.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(layout.run_meta)


class _PlainFormatter(logging.Formatter):
    """TorchTitan colours its metric lines for terminals; the log file gets them without escape codes."""

    def format(self, record: logging.LogRecord) -> str:
        return _ANSI.sub("", super().format(record))


@contextlib.contextmanager
def _runtime_logging(log_file: Path | None) -> Iterator[None]:
    """INFO from TorchTitan (it logs on the root logger) to runtime.log, and to the console when nothing else
    shows it."""
    root = logging.getLogger()
    previous_level = root.level
    added: list[logging.Handler] = []
    if not root.handlers:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter(LOG_FORMAT))
        added.append(console)
    if log_file is not None:
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(_PlainFormatter(LOG_FORMAT))
        added.append(file_handler)
    for handler in added:
        handler.setLevel(logging.INFO)
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        for handler in added:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(previous_level)


# ---------------------------------------------------------------- process environment


@contextlib.contextmanager
def _scoped_env(values: Mapping[str, str]) -> Iterator[Mapping[str, str]]:
    """Export `values` for the duration of the block, then restore what was there."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield os.environ
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _rendezvous_defaults(env: Mapping[str, str]) -> dict[str, str]:
    """Single-process rendezvous variables when not started by torchrun (nothing when it was)."""
    if "LOCAL_RANK" in env or "TORCHELASTIC_RUN_ID" in env:
        return {}
    return {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": env.get("MASTER_ADDR", "127.0.0.1"),
        "MASTER_PORT": env.get("MASTER_PORT") or str(_free_port()),
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _agree_on_run_name(candidate: str, env: Mapping[str, str]) -> str:
    """All ranks adopt the first rank's generated name, through torchrun's rendezvous store."""
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        raise MolGenConfigError(
            "molgen_run.run_name",
            "ranks were started without torchrun, so they cannot agree on a generated run name",
            f"export {run_layout.RUN_NAME_ENV}=<name> on every rank or set [molgen_run] run_name",
        )
    from torch.distributed import TCPStore

    store = TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), is_master=False, timeout=timedelta(seconds=300))
    return store.compare_set(_RUN_NAME_KEY, "", candidate).decode()


# ---------------------------------------------------------------- training


def _train(job_config) -> tuple[int, dict[int, float]]:
    """`MolGenTrainer` start to finish, after the TorchTitan patches; the process group is destroyed if this
    call created it."""
    import torch.distributed as dist

    from molgen3D.training.pretraining import patches
    from molgen3D.training.pretraining.trainer import MolGenTrainer

    patches.install()
    had_process_group = dist.is_initialized()
    gc_was_enabled = gc.isenabled()  # TorchTitan's GarbageCollection turns automatic gc off
    losses: dict[int, float] = {}
    trainer = None
    try:
        trainer = MolGenTrainer(job_config)
        trainer.train()
        losses.update(getattr(trainer.metrics_processor, "losses", {}))
        return trainer.step, losses
    finally:
        if trainer is not None:
            trainer.close()
        if not had_process_group and dist.is_initialized():
            dist.destroy_process_group()
        if gc_was_enabled:
            gc.enable()


def step_kind(step_dir: Path) -> str:
    """What a saved step is, for the end-of-run summary: `check_step` on its structure and on what its
    checksum manifest says (names, sizes), without reading the weights again (the trainer hashed them)."""
    from molgen3D.hf.checkpoint_step import HF_SUBDIR, MANIFEST, check_step, resume_problem, structure_problem

    check = check_step(step_dir, contents=False)
    if check.problems:
        return f"{step_dir.name} BROKEN ({'; '.join(check.problems)})"
    if resume_problem(step_dir) is None:
        kind = "resumable"
    elif (step_dir / "config.json").is_file():
        kind = "HF model"
    else:
        kind = "model only"
    hf = step_dir / HF_SUBDIR
    if (hf / "config.json").is_file() and structure_problem(hf) is None:
        kind += " + HF model in hf/"
    if not check.verified:
        kind += f", no {MANIFEST}"
    return f"{step_dir.name} ({kind})"


def summary(result: RunResult, job_config) -> str:
    from molgen3D.hf.checkpoint_step import step_dirs

    steps = [path for _, path in step_dirs(result.checkpoint_dir)]
    lines = [
        f"run {result.run_name}: finished at step {result.final_step}"
        + (f", last logged loss {result.last_loss:.4f}" if result.last_loss is not None else ""),
        f"  checkpoints   {result.checkpoint_dir}: {', '.join(step_kind(p) for p in steps) or 'none'}",
        f"  run meta      {result.run_meta}",
    ]
    if (result.run_dir / "lr_schedule.png").is_file():
        lines.append(f"  lr schedule   {result.run_dir / 'lr_schedule.png'}")
    lines += [
        f"  runtime log   {result.log_path}",
    ]
    if job_config.metrics.enable_tensorboard:
        lines.append(f"  tensorboard   {result.tb_dir}")
    if result.wandb_dir is not None:
        lines.append(f"  wandb         {result.wandb_dir}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
