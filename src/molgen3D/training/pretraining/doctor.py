"""`molgen3d doctor`: a preflight of a training run, in seconds, before it burns an allocation.

What a first cluster run otherwise finds minutes into a queued job, one thing at a time: a CPU
build of torch, GPUs not visible inside the srun step, NCCL missing or on the wrong interface,
no bf16, an attention backend this machine cannot run, data/tokenizer/base model missing (or not
downloadable), a batch that does not divide for N nodes, too little disk for the checkpoints the
run keeps, output folders that cannot be written. One table, a verdict per line (ok / warn /
BLOCKER; doctor_checks.py), exit 1 on a blocker. Nothing is downloaded: hub snapshots are looked
up in the cache (`hub.lookups_only`) and the hub is only asked whether it answers.
`scripts/launch_torchtitan.sh` runs it first (MOLGEN3D_SKIP_DOCTOR=1 or --skip-doctor skips it).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import tyro

from molgen3D.config import hub
from molgen3D.config import paths as path_aliases
from molgen3D.files import write_json_atomic
from molgen3D.training.pretraining import doctor_checks as checks
from molgen3D.training.pretraining.doctor_checks import BLOCKER, OK, Check

DEFAULT_TOML = Path(__file__).resolve().parents[2] / "config" / "pretrain" / "qwen3_06b.toml"
PINNED_PACKAGES = ("torch", "torchtitan", "torchdata")


@dataclass
class DoctorConfig:
    """molgen3d doctor: check this machine (and the Slurm allocation) for a training run; exit 1 on a BLOCKER."""

    train_toml: Path = DEFAULT_TOML
    """The run's TOML."""

    nodes: int | None = None
    """Nodes of the run (default: $SLURM_NNODES, else 1)."""

    gpus_per_node: int | None = None
    """Ranks per node (default: $NGPU_PER_NODE, $SLURM_GPUS_ON_NODE, the visible GPUs, else 8 for GPU flavors)."""

    json: Path | None = None
    """Also write the checks as JSON to this file."""

    srun_timeout: float = 60.0
    """Seconds for the `srun nvidia-smi -L` probe inside an allocation."""


def pins() -> dict[str, str]:
    """The exact versions pyproject.toml pins for torch, torchtitan and torchdata (from the installed metadata)."""
    try:
        requires = importlib.metadata.requires("molgen3d") or []
    except importlib.metadata.PackageNotFoundError:
        return {}
    found = {}
    for line in requires:
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^;\s]+)", line)
        if match and match.group(1) in PINNED_PACKAGES:
            found[match.group(1)] = match.group(2)
    return found


def installed(names) -> dict[str, str | None]:
    result = {}
    for name in names:
        try:
            result[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            result[name] = None
    return result


def srun_gpu_counts(nodes: int, per_node: int, timeout: float) -> tuple[list[int], str]:
    """GPUs `nvidia-smi -L` lists on each node inside an srun step like the launcher's ([] and why on failure)."""
    cmd = ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1"]
    if per_node:
        cmd.append(f"--gpus-per-node={per_node}")
    cmd += ["--label", "nvidia-smi", "-L"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [], f"`{' '.join(cmd)}` took over {timeout:.0f} s. "
    counts = checks.parse_srun_listing(done.stdout)
    if done.returncode != 0 and not counts:
        return [], f"`{' '.join(cmd)}` failed (exit {done.returncode}): {done.stderr.strip()[-300:]}. "
    return [counts.get(task, 0) for task in range(nodes)], ""


def network_interfaces() -> tuple[list[str], list[str]]:
    """(network interfaces, InfiniBand devices) from /sys/class."""

    def names(folder: str) -> list[str]:
        path = Path(folder)
        return sorted(p.name for p in path.iterdir()) if path.is_dir() else []

    return names("/sys/class/net"), names("/sys/class/infiniband")


def hub_reachable(ref: hub.HubRef) -> str | None:
    """None when the hub answers for `ref` within 10 s, else why not (no files are downloaded)."""
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(ref.repo_id, revision=ref.revision, timeout=10)
    except Exception as exc:  # connection, unknown repo/revision, gated: all mean "cannot download"
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    return None


@contextlib.contextmanager
def _launch_env(nodes: int, per_node: int) -> Iterator[None]:
    """The environment the launch will have (N nodes x G ranks) while the config is finalized."""
    saved = dict(os.environ)
    for name in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "SLURM_GPUS_ON_NODE"):
        os.environ.pop(name, None)
    os.environ.update({"SLURM_NNODES": str(nodes), "NGPU_PER_NODE": str(per_node)})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _count(env: Mapping[str, str], name: str) -> int | None:
    match = re.match(r"^\s*(\d+)", env.get(name, ""))
    return int(match.group(1)) if match and int(match.group(1)) > 0 else None


def _hub_check(name: str, value: str, location: Path, need_weights: bool, offline: bool) -> tuple[Check, bool]:
    """(check, missing from the cache) for a model/tokenizer setting that may name a hub snapshot."""
    ref = path_aliases.hub_ref(value)
    missing = ref is not None and hub.unavailable(location) is not None
    reachable = hub_reachable(ref) if missing and not offline else None
    return checks.hub_model(name, location, ref, not missing, offline, reachable, need_weights), missing


def flavor_args(job):
    """The flavor's model args as the train spec defines them (vocabulary before the tokenizer sizes it)."""
    import copy

    from molgen3D.training.pretraining.torchtitan_model.qwen3_custom import MOLGEN_FLAVORS

    if job.model.flavor not in MOLGEN_FLAVORS:
        raise KeyError(f"[model] flavor = {job.model.flavor!r} is not one of {', '.join(MOLGEN_FLAVORS)}")
    return copy.deepcopy(MOLGEN_FLAVORS[job.model.flavor])


def _path_checks(job, paths, raw_run: Mapping[str, str], offline: bool) -> tuple[list[Check], bool]:
    """Data, tokenizer and (hf_pretrain) base model; True when some hub snapshot still has to be downloaded."""
    from molgen3D.datasets.jsonl_paths import DataPathError, expand_paths

    found: list[Check] = []
    for name, location in (("train data", paths.train_data), ("valid data", paths.valid_data)):
        if name == "valid data" and not job.validation.enable:
            location = None
        try:
            files = None if location is None else len(expand_paths(str(location)))
            found.append(checks.data(name, location, files))
        except DataPathError as err:
            found.append(checks.data(name, location, None, str(err)))
    tokenizer_tag = str(raw_run.get("tokenizer_tag", ""))
    token_check, download = _hub_check("tokenizer", tokenizer_tag, paths.tokenizer_dir, False, offline)
    has_files = any((paths.tokenizer_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
    if not has_files and path_aliases.hub_ref(tokenizer_tag) is None:
        token_check = Check(
            "tokenizer", BLOCKER, f"no tokenizer files in {paths.tokenizer_dir}; `molgen3d build-tokenizer`"
        )
    found.append(token_check)
    if job.molgen_run.init_mode == "hf_pretrain":
        base_tag = str(raw_run.get("base_model_tag", ""))
        base_check, missing = _hub_check("base model", base_tag, Path(paths.base_model), True, offline)
        found.append(base_check)
        download = download or missing
    return found, download


def _disk_check(job, model_args, decay_ends) -> Check:
    import torch
    from torchtitan.models.qwen3 import Qwen3Model

    from molgen3D.training.pretraining.flops import count_params

    with torch.device("meta"):
        params = count_params(Qwen3Model(model_args)).total
    c = job.checkpoint
    saves = checks.checkpoint_saves(c.enable, c.keep_latest_k, c.interval, job.training.steps, decay_ends)
    hf_copies = int(c.enable and c.last_save_in_hf) + (saves if c.enable and c.save_hf_per_checkpoint else 0)
    hf_bytes = hf_copies * params * (4 if c.export_dtype == "float32" else 2)
    where = checks.existing_ancestor(Path(job.job.dump_folder))
    return checks.checkpoint_disk(params, saves, hf_bytes, shutil.disk_usage(where).free, where)


def run_checks(cfg: DoctorConfig, env: Mapping[str, str] | None = None) -> list[Check]:
    """Every check, in the order a run meets them."""
    import torch

    env = os.environ if env is None else env
    if not cfg.train_toml.is_file():
        return [Check("config", BLOCKER, f"--train-toml {cfg.train_toml} does not exist")]
    raw = tomllib.loads(cfg.train_toml.read_text(encoding="utf-8"))
    flavor = str(raw.get("model", {}).get("flavor", "?"))
    cuda = torch.cuda.is_available()
    nodes = cfg.nodes or _count(env, "SLURM_NNODES") or 1
    visible = torch.cuda.device_count() if cuda else 0
    per_node = (
        cfg.gpus_per_node
        or _count(env, "NGPU_PER_NODE")
        or _count(env, "SLURM_GPUS_ON_NODE")
        or visible
        or (8 if checks.gpu_flavor(flavor) else 1)
    )
    found = [checks.torch_build(flavor, torch.__version__, torch.version.cuda, installed(PINNED_PACKAGES), pins())]
    if env.get("SLURM_JOB_ID") and shutil.which("srun"):
        counts, problem = srun_gpu_counts(nodes, per_node if checks.gpu_flavor(flavor) else 0, cfg.srun_timeout)
        found.append(checks.gpus(flavor, counts, per_node, f"inside srun on {nodes} node(s)", problem))
    else:
        from molgen3D.training.pretraining.device_check import cuda_problem

        problem = "" if cuda else f"{cuda_problem(env)}. "
        where = "on this machine" + (" (outside an allocation: other nodes unchecked)" if nodes > 1 else "")
        found.append(checks.gpus(flavor, [visible], per_node, where, problem))
    nccl_version = None
    if cuda and torch.distributed.is_available() and torch.distributed.is_nccl_available():
        nccl_version = ".".join(map(str, torch.cuda.nccl.version()))
    found.append(checks.nccl(flavor, nccl_version, env, *network_interfaces(), nodes))
    training = raw.get("training", {})
    found.append(
        checks.bf16(
            flavor, training.get("mixed_precision_param", "bfloat16"), cuda, cuda and torch.cuda.is_bf16_supported()
        )
    )
    found.append(
        checks.batch(
            int(training.get("local_batch_size", 8)),
            int(training.get("global_batch_size", -1)),
            str(training.get("global_batch_rounding", "exact")),
            nodes,
            per_node,
            int(training.get("seq_len", 2048)),
        )
    )
    return found + _config_checks(cfg, raw, nodes, per_node, cuda, env)


def _config_checks(cfg: DoctorConfig, raw: dict, nodes: int, per_node: int, cuda: bool, env) -> list[Check]:
    """What needs the loaded config: attention, data/tokenizer/base model, checkpoint disk, writable outputs."""
    from molgen3D.config.paths import PathAliasError
    from molgen3D.training.pretraining.config.custom_job_config import MolGenConfigError
    from molgen3D.training.pretraining.config.finalize import resolved
    from molgen3D.training.pretraining.config.loading import load_job_config

    titan = logging.getLogger()
    level = titan.level
    titan.setLevel(logging.WARNING)
    try:
        with _launch_env(nodes, per_node), hub.lookups_only():
            job = load_job_config(cfg.train_toml)
            model_args = flavor_args(job)
    except (MolGenConfigError, PathAliasError, ValueError, KeyError) as err:
        return [Check("config", BLOCKER, f"{cfg.train_toml}: {err}")]
    finally:
        titan.setLevel(level)
    found = [Check("config", OK, f"{cfg.train_toml} loads for {nodes} node(s) x {per_node}")]
    found.append(
        checks.attention(
            job.model.document_masking, job.model.attention_backend, cuda, model_args.n_heads, model_args.n_kv_heads
        )
    )
    settled = resolved(job)
    offline = hub.offline(env)
    path_found, download = _path_checks(job, settled.paths, raw.get("molgen_run", {}), offline)
    found += path_found
    found.append(_disk_check(job, model_args, settled.decay_end_steps))
    folders = {
        "dump_folder": Path(job.job.dump_folder),
        "logs_root": Path(job.molgen_run.logs_root),
        "torchrun logs": Path(env.get("TORCHRUN_LOG_DIR") or path_aliases.repo_root() / "outputs" / "torchrun_logs"),
    }
    if download:
        folders["HF cache"] = hub.hub_cache(env)
    found.append(checks.writable(folders))
    return found


def format_table(found: list[Check]) -> str:
    width = max(len(c.name) for c in found)
    lines = [f"{'check':<{width}}  {'verdict':<7}  detail", "-" * (width + 60)]
    lines += [f"{c.name:<{width}}  {c.verdict:<7}  {c.detail}" for c in found]
    blockers = sum(c.verdict == BLOCKER for c in found)
    warnings = sum(c.verdict == checks.WARN for c in found)
    lines.append(f"{blockers} blocker(s), {warnings} warning(s)" + ("" if blockers else ": ready to launch"))
    return "\n".join(lines)


def cli(argv: list[str]) -> int:
    cfg = tyro.cli(DoctorConfig, args=argv, prog="molgen3d doctor")
    found = run_checks(cfg)
    print(format_table(found))
    if cfg.json is not None:
        write_json_atomic(cfg.json, [asdict(c) for c in found])
    return 1 if any(c.verdict == BLOCKER for c in found) else 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
