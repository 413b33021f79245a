"""Checkpoints that cannot lie: content checksums, finite weights, a finite loss.

A checkpoint file overwritten in place with the same size passes every check DCP makes
(metadata and sizes) and turns the resumed run's loss into NaN; a run whose loss went
non-finite goes on to publish an HF folder of NaN tensors. Three guards, all pure
or local to one folder:
- `write_manifest(step_dir)`: sha256 of every file of a finished save, in `checksums.json`
  (written last, atomically: a folder without it was never completed);
  `verify_manifest(step_dir)` names each file that is missing, resized or changed;
  `newest_intact(steps)` picks the newest step that verifies, warning with the file
  name for each one it passes over;
- `nonfinite_tensors(state)` / `check_finite_hf_folder(dir)`: an HF folder with a NaN or
  Inf tensor is refused before it is written or published;
- `NonFiniteLossGuard`: stops the run with a clear error after `max_steps` consecutive
  non-finite losses (a finite loss resets the count). The checkpoint manager arms one per
  Trainer (`arm_loss_guard`); patches.py feeds it every step's global gradient norm
  (`check_step_gradients`), which a NaN/Inf loss makes non-finite on every rank at once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torchtitan.tools.logging import logger

MANIFEST = "checksums.json"
FORMAT = "molgen3d-checksums-v1"
ALGORITHM = "sha256"
CHUNK = 8 << 20


class ChecksumMismatch(RuntimeError):
    """A checkpoint's files differ from its manifest."""


class NonFiniteWeightsError(RuntimeError):
    """Weights about to be written or published contain NaN/Inf."""


class NonFiniteLossError(RuntimeError):
    """The training loss stayed non-finite for too many steps."""


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)  # hashlib releases the GIL on large buffers: threads hash in parallel
    return h.hexdigest()


def _content_files(step_dir: Path) -> list[Path]:
    return sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST and not p.name.endswith(".tmp"))


def _hash_all(step_dir: Path, files: list[Path], workers: int) -> dict[str, dict[str, object]]:
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        digests = list(pool.map(_digest, files))
    return {
        p.relative_to(step_dir).as_posix(): {"size": p.stat().st_size, ALGORITHM: d} for p, d in zip(files, digests)
    }


def write_manifest(step_dir: str | os.PathLike, *, workers: int = 4) -> Path:
    """Hash every file of a finished save into `step_dir/checksums.json` (atomic rename); returns its path."""
    root = Path(step_dir)
    files = _content_files(root)
    if not files:
        raise FileNotFoundError(f"{root} has no files to checksum: the save did not complete")
    manifest = {"format": FORMAT, "algorithm": ALGORITHM, "files": _hash_all(root, files, workers)}
    target = root / MANIFEST
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, target)
    return target


def has_manifest(step_dir: str | os.PathLike) -> bool:
    return (Path(step_dir) / MANIFEST).is_file()


def verify_manifest(step_dir: str | os.PathLike, *, workers: int = 4, require: bool = True) -> list[str]:
    """Problems with `step_dir` against its manifest, one per file (empty: intact).

    Without a manifest: a problem when `require`, else nothing to check (a save from before
    checksums, or one whose manifest was still being written when the job died).
    """
    root = Path(step_dir)
    path = root / MANIFEST
    if not path.is_file():
        return [f"{path} is missing (the save never completed, or predates checksums)"] if require else []
    try:
        manifest = json.loads(path.read_text())
        listed: Mapping[str, Mapping[str, object]] = manifest["files"]
    except (ValueError, KeyError, TypeError) as exc:
        return [f"{path} is unreadable ({exc})"]
    problems: list[str] = []
    present: list[Path] = []
    for rel, entry in sorted(listed.items()):
        file = root / rel
        if not file.is_file():
            problems.append(f"{file} is missing")
        elif file.stat().st_size != entry.get("size"):
            problems.append(f"{file} has {file.stat().st_size} bytes, the manifest says {entry.get('size')}")
        else:
            present.append(file)
    for rel, entry in _hash_all(root, present, workers).items():
        if entry[ALGORITHM] != listed[rel][ALGORITHM]:
            problems.append(f"{root / rel} content changed since it was saved ({ALGORITHM} mismatch)")
    for extra in _content_files(root):
        if extra.relative_to(root).as_posix() not in listed:
            problems.append(f"{extra} is not in the manifest (written after the save)")
    return problems


@dataclass(frozen=True)
class IntactChoice:
    step: int | None
    """The newest step that verifies, or None."""
    rejected: dict[int, list[str]]
    """Newer steps passed over, with their problems."""


def newest_intact(
    steps: Iterable[tuple[int, str | os.PathLike]],
    *,
    warn: Callable[[str], None] | None = None,
    workers: int = 4,
    require: bool = True,
    precheck: Callable[[Path], str | None] | None = None,
) -> IntactChoice:
    """Walk `(step, folder)` newest first; the first that passes `precheck` (a structural check: the
    problem, or None) and verifies wins. Each newer one is warned about with its problem or its files."""
    rejected: dict[int, list[str]] = {}
    for step, folder in sorted(steps, key=lambda item: item[0], reverse=True):
        folder = Path(folder)
        problem = precheck(folder) if precheck is not None else None
        if problem is not None:
            rejected[step] = [problem]
            if warn is not None:
                warn(f"Ignoring incomplete checkpoint {folder}: {problem}")
            continue
        problems = verify_manifest(folder, workers=workers, require=require)
        if not problems:
            return IntactChoice(step, rejected)
        rejected[step] = problems
        if warn is not None:
            warn(f"Ignoring checkpoint {folder}, it fails its checksums: " + "; ".join(problems))
    return IntactChoice(None, rejected)


def nonfinite_tensors(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of floating tensors holding a NaN or Inf (DTensors are checked on their local shard)."""
    bad: list[str] = []
    for name, tensor in state.items():
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        if isinstance(local, torch.Tensor) and local.is_floating_point() and local.numel():
            if not bool(torch.isfinite(local).all()):
                bad.append(name)
    return bad


def require_finite(state: Mapping[str, torch.Tensor], where: str) -> None:
    """Raise `NonFiniteWeightsError` naming the tensors when any is not finite."""
    bad = nonfinite_tensors(state)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise NonFiniteWeightsError(
            f"{where}: {len(bad)} of {len(state)} tensors contain NaN/Inf ({shown}); refusing to write or publish "
            "them. Resume from the newest finite checkpoint (lower the lr or check the data) instead."
        )


def check_finite_hf_folder(hf_dir: str | os.PathLike) -> None:
    """Read every safetensors file of an HF folder and `require_finite` it."""
    from safetensors.torch import load_file

    root = Path(hf_dir)
    shards = sorted(root.glob("*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"{root} has no *.safetensors files")
    for shard in shards:
        require_finite(load_file(str(shard)), str(shard))


class NonFiniteLossGuard:
    """Counts consecutive non-finite losses; raises `NonFiniteLossError` at `max_steps` of them (0: off)."""

    def __init__(self, max_steps: int, key: str = "[training] max_nonfinite_loss_steps"):
        if max_steps < 0:
            raise ValueError(f"{key} = {max_steps} must be >= 0 (0 turns the guard off)")
        self.max_steps = max_steps
        self.key = key
        self.streak = 0
        self.first_bad_step: int | None = None

    def update(self, step: int, loss: float) -> None:
        if math.isfinite(loss):
            self.streak = 0
            self.first_bad_step = None
            return
        if self.streak == 0:
            self.first_bad_step = step
        self.streak += 1
        if self.max_steps and self.streak >= self.max_steps:
            raise NonFiniteLossError(
                f"loss is {loss} at step {step}, non-finite for {self.streak} consecutive step(s) since step "
                f"{self.first_bad_step} ({self.key} = {self.max_steps}); stopping before it reaches a checkpoint. "
                "Resume from the last checkpoint with a lower [optimizer] lr, or check the data at these steps."
            )


class _ArmedGuard:
    guard: NonFiniteLossGuard | None = None
    step: Callable[[], int] = staticmethod(lambda: -1)


def arm_loss_guard(max_steps: int, step_source: Callable[[], int]) -> None:
    """Check every following training step (`step_source` names it in messages)."""
    _ArmedGuard.guard = NonFiniteLossGuard(max_steps)
    _ArmedGuard.step = step_source


def disarm_loss_guard() -> None:
    _ArmedGuard.guard = None


def check_step_gradients(params: Sequence[torch.Tensor], grad_norm: torch.Tensor) -> None:
    """After the step's gradient norm: a non-finite one drops every gradient (the optimizer then
    skips those parameters, so the weights stay as they were) and counts towards the guard's stop."""
    guard = _ArmedGuard.guard
    if guard is None:
        return
    value = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
    if not math.isfinite(value):
        for param in params:
            param.grad = None
        logger.warning(
            f"step {_ArmedGuard.step()}: gradient norm {value} (non-finite loss or gradient): update skipped, "
            f"weights unchanged ({guard.streak + 1} in a row; the run stops at {guard.max_steps or 'never'})"
        )
    guard.update(_ArmedGuard.step(), value)
