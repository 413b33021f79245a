"""Is a saved training step intact? One answer for the trainer, the runner, export and generate.

A step folder `step-N` is a DCP save (`.metadata` + shards) or an HF folder (index + safetensors).
It is intact when:
- its save finished and nothing it names is missing or short (`structure_problem`): DCP writes
  `.metadata` last, but a half-purged or re-saved folder can keep an old one;
- with `resumable`, it also holds optimizer and train state (`resume_problem`): a run's last save
  is often model-only or HF weights, which cannot restart training;
- its `checksums.json` (sha256 of every file, written last by rank 0) still matches
  (`verify_manifest`): a file overwritten in place with the same size passes every check DCP makes.
  A step without the manifest is *unverified*: usable, but only with a warning naming it, and an
  older verified step is preferred (`choose_step`).
A resume checks the chosen step twice in one process (the runner's pre-flight, then the checkpoint
manager): the second reuses the first content verdict while every file of the step, the manifest
included, has the same size, mtime, ctime and inode (`_VERDICTS`), so each file is hashed once. As in
git's "racy clean" rule, a verdict on a file changed within `_RACY_NS` of it is not kept: the file
system's clock ticks coarsely, and a rewrite in the same tick would keep every timestamp.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from molgen3D.files import sha256_file, write_json_atomic

STEP_DIR = re.compile(r"^step-(\d+)$")
"""The name of a saved step's folder, `step-N` (TorchTitan's `_create_checkpoint_id`)."""
MANIFEST = "checksums.json"
FORMAT = "molgen3d-checksums-v1"
ALGORITHM = "sha256"
DCP_METADATA = ".metadata"
HF_INDEX = "model.safetensors.index.json"
HF_SUBDIR = "hf"
"""`step-N/hf`: the HF copy `save_hf_per_checkpoint` writes beside a DCP save."""
TRAINING_STATE = ("optimizer", "train_state")
"""What a DCP must hold for training to restart from it (top-level keys of TorchTitan's state)."""


class StepNotIntactError(RuntimeError):
    """A saved step that must not be used (torn, or its files differ from its checksums)."""


# ---------------------------------------------------------------- which folders are steps


def step_number(path: str | os.PathLike) -> int | None:
    """N of a `step-N` folder name, else None."""
    match = STEP_DIR.fullmatch(Path(path).name)
    return int(match.group(1)) if match else None


def is_saved_step(path: str | os.PathLike) -> bool:
    """`path` is a training run's `step-N` folder or the HF copy inside one."""
    path = Path(path)
    return step_number(path) is not None or (path.name == HF_SUBDIR and step_number(path.parent) is not None)


def step_dirs(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    """`(step, path)` of every `step-N` directory in `folder`, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(step_number(entry), entry) for entry in folder.iterdir() if entry.is_dir()]
    return sorted((n, entry) for n, entry in found if n is not None)


# ---------------------------------------------------------------- checksums


def _content_files(step_dir: Path) -> list[Path]:
    return sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST and not p.name.endswith(".tmp"))


def _hash_all(step_dir: Path, files: list[Path], workers: int) -> dict[str, dict[str, object]]:
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        digests = list(pool.map(sha256_file, files))
    return {
        p.relative_to(step_dir).as_posix(): {"size": p.stat().st_size, ALGORITHM: d} for p, d in zip(files, digests)
    }


_VERDICTS: dict[tuple[str, str], tuple[tuple, list[str]]] = {}
"""(step folder, subfolder) -> (the files' stat fingerprint, the content check's problems), this process only."""
_VERDICTS_KEPT = 64
_RACY_NS = 100_000_000


def _fingerprint(root: Path) -> tuple:
    """Every file of the step as (name, size, mtime, ctime, inode): a rewrite, even one that restores the mtime,
    moves the ctime."""
    stats = ((p.relative_to(root).as_posix(), p.stat()) for p in sorted(root.rglob("*")) if p.is_file())
    return tuple((rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) for rel, st in stats)


def write_manifest(step_dir: str | os.PathLike, *, workers: int = 4) -> Path:
    """Hash every file of a finished save into `step_dir/checksums.json` (atomic rename); returns its path."""
    root = Path(step_dir)
    files = _content_files(root)
    if not files:
        raise FileNotFoundError(f"{root} has no files to checksum: the save did not complete")
    manifest = {"format": FORMAT, "algorithm": ALGORITHM, "files": _hash_all(root, files, workers)}
    return write_json_atomic(root / MANIFEST, manifest, indent=1, sort_keys=True)


def verify_manifest(
    step_dir: str | os.PathLike, *, workers: int = 4, contents: bool = True, under: str = ""
) -> list[str] | None:
    """Problems with `step_dir` against its manifest, one per file naming it (empty: intact; None: no manifest).

    `contents=False` checks only what the manifest says without reading the files (names and sizes):
    the run summary's view of steps the trainer itself just sealed. `under` ("hf/") limits the check
    to one subfolder of the step (its HF copy).
    """
    root = Path(step_dir)
    path = root / MANIFEST
    if not path.is_file():
        return None
    if not contents:
        return _verify(root, path, workers, contents, under)
    key = (os.path.realpath(root), under)
    now = time.time_ns()
    fingerprint = _fingerprint(root)  # taken before reading: a change during the hashing is seen next time
    known = _VERDICTS.pop(key, None)
    if known is not None and known[0] == fingerprint:
        _VERDICTS[key] = known
        return list(known[1])
    problems = _verify(root, path, workers, contents, under)
    if all(ctime < now - _RACY_NS for _, _, _, ctime, _ in fingerprint):
        while len(_VERDICTS) >= _VERDICTS_KEPT:
            _VERDICTS.pop(next(iter(_VERDICTS)))
        _VERDICTS[key] = (fingerprint, list(problems))
    return problems


def _verify(root: Path, path: Path, workers: int, contents: bool, under: str) -> list[str]:
    try:
        listed: Mapping[str, Mapping[str, object]] = json.loads(path.read_text())["files"]
        if not isinstance(listed, dict):
            raise TypeError(f"'files' is a {type(listed).__name__}")
    except (ValueError, KeyError, TypeError) as exc:
        return [f"{path} is unreadable ({exc})"]
    listed = {rel: entry for rel, entry in listed.items() if rel.startswith(under)}
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
    for rel, entry in (_hash_all(root, present, workers) if contents else {}).items():
        if entry[ALGORITHM] != listed[rel][ALGORITHM]:
            problems.append(f"{root / rel} content changed since it was saved ({ALGORITHM} mismatch)")
    for extra in _content_files(root / under if under else root):
        if extra.relative_to(root).as_posix() not in listed:
            problems.append(f"{extra} is not in the manifest (written after the save)")
    return problems


# ---------------------------------------------------------------- structure


def _dcp_problem(step_dir: Path) -> str | None:
    from torch.distributed.checkpoint import FileSystemReader

    try:
        metadata = FileSystemReader(str(step_dir)).read_metadata()
    except Exception as err:  # a truncated or foreign pickle: the save did not finish
        return f"{step_dir / DCP_METADATA} is unreadable ({type(err).__name__}: {err})"
    needed: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        end = int(info.offset) + int(info.length)
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), end)
    for name, size in sorted(needed.items()):
        path = step_dir / name
        if not path.is_file():
            return f"{path} named by {DCP_METADATA} is missing"
        if path.stat().st_size < size:
            return f"{path} has {path.stat().st_size} bytes, {DCP_METADATA} needs {size}"
    return None


def _hf_problem(step_dir: Path) -> str | None:
    try:
        index = json.loads((step_dir / HF_INDEX).read_text(encoding="utf-8"))
        files = set(index["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return f"{step_dir / HF_INDEX} is unreadable ({type(err).__name__}: {err})"
    for name in sorted(files):
        path = step_dir / name
        if not path.is_file() or path.stat().st_size < 8:
            return f"{path} named by {HF_INDEX} is missing or empty"
    return None


def save_finished(step_dir: str | os.PathLike) -> bool:
    """The save wrote its last file (`.metadata` or the HF index): a crash before that left no step at all."""
    return (Path(step_dir) / DCP_METADATA).is_file() or (Path(step_dir) / HF_INDEX).is_file()


def structure_problem(step_dir: str | os.PathLike) -> str | None:
    """Why `step_dir` is not a complete checkpoint (DCP or HF safetensors), or None if it is."""
    step_dir = Path(step_dir)
    if (step_dir / DCP_METADATA).is_file():
        return _dcp_problem(step_dir)
    if (step_dir / HF_INDEX).is_file():
        return _hf_problem(step_dir)
    return f"no {DCP_METADATA} (the save did not finish)"


def resume_problem(step_dir: str | os.PathLike) -> str | None:
    """Why training cannot restart from `step_dir` (torn, or model weights only), or None.

    The last save of a run is often model-only or HF safetensors (`last_save_model_only`,
    `last_save_in_hf`): complete as a model, but with no optimizer, scheduler or data state.
    """
    problem = structure_problem(step_dir)
    if problem is not None:
        return problem
    step_dir = Path(step_dir)
    if not (step_dir / DCP_METADATA).is_file():
        return "Hugging Face model weights only (last_save_in_hf): no optimizer, scheduler or data state"
    from torch.distributed.checkpoint import FileSystemReader

    saved = {key.split(".", 1)[0] for key in FileSystemReader(str(step_dir)).read_metadata().state_dict_metadata}
    missing = [name for name in TRAINING_STATE if name not in saved]
    if missing:
        return f"model weights only (last_save_model_only): no {' or '.join(missing)} state"
    return None


# ---------------------------------------------------------------- the one verdict


@dataclass(frozen=True)
class StepCheck:
    """What one saved step is: its problems (none: usable) and whether its checksums vouch for it."""

    path: Path
    problems: tuple[str, ...] = ()
    verified: bool = False
    """Its checksums.json lists every file and each one matches."""
    complete: bool = True
    """Complete (and resumable, when asked): any problems are its checksums'."""

    @property
    def usable(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        """`<path>, it fails its checksums: <files>` / `incomplete <path>: <why>` / verified / unverified."""
        if not self.complete:
            return f"incomplete checkpoint {self.path}: " + "; ".join(self.problems)
        if self.problems:
            return f"checkpoint {self.path}, it fails its checksums: " + "; ".join(self.problems)
        return f"checkpoint {self.path}: " + ("verified" if self.verified else f"unverified (no {MANIFEST})")


def check_step(
    step_dir: str | os.PathLike,
    *,
    resumable: bool = False,
    checksums: bool = True,
    contents: bool = True,
    workers: int = 4,
) -> StepCheck:
    """Is `step_dir` intact: complete (with `resumable`, training can restart from it) and, with
    `checksums`, its files still what its manifest says (`contents=False`: names and sizes only, for
    steps this process just sealed). A missing manifest is not a problem here, only `verified=False`:
    the caller decides (warn, or prefer an older verified step)."""
    path = Path(step_dir)
    if not path.is_dir():
        return StepCheck(path, ("the folder does not exist",), complete=False)
    problem = (resume_problem if resumable else structure_problem)(path)
    if problem is not None:
        return StepCheck(path, (problem,), complete=False)
    if not checksums:
        return StepCheck(path)
    if path.name == HF_SUBDIR and step_number(path.parent) is not None:  # `step-N/hf`: the step's manifest covers it
        bad = verify_manifest(path.parent, workers=workers, contents=contents, under=f"{HF_SUBDIR}/")
    else:
        bad = verify_manifest(path, workers=workers, contents=contents)
    if bad is None:
        return StepCheck(path)
    return StepCheck(path, tuple(bad), verified=not bad)


def require_intact(step_dir: str | os.PathLike, *, warn: Callable[[str], None] | None = None) -> StepCheck:
    """`check_step`, raising `StepNotIntactError` naming the bad files; an unverified step is warned about."""
    check = check_step(step_dir)
    if check.problems:
        raise StepNotIntactError(
            f"{check.path} fails its checks, refusing to use it: " + "; ".join(check.problems) + ". "
            "Use an earlier step of the run (see the run summary), or re-train from one."
        )
    if not check.verified and warn is not None:
        warn(f"{check.path} has no {MANIFEST}: its weights are UNVERIFIED (nothing can tell whether they changed)")
    return check


@dataclass(frozen=True)
class StepChoice:
    """The step to load from a folder of `step-N`, and every newer one passed over."""

    step: int
    """-1 when no step is usable."""
    chosen: StepCheck | None
    passed_over: list[tuple[int, StepCheck]] = field(default_factory=list)

    @property
    def any_finished(self) -> bool:
        """Some step passed over had finished saving (so its rejection is a fault, not a crash mid-save)."""
        return any(save_finished(check.path) for _, check in self.passed_over)


def choose_step(
    folder: str | os.PathLike,
    *,
    resumable: bool = True,
    checksums: bool = True,
    warn: Callable[[str], None] | None = None,
    workers: int = 4,
) -> StepChoice:
    """The newest usable step of `folder`; with `checksums`, the newest verified one beats a newer
    unverified one, and an unverified one is taken only when none verifies (warned as UNVERIFIED)."""
    passed: list[tuple[int, StepCheck]] = []
    unverified: tuple[int, StepCheck] | None = None
    for step, path in reversed(step_dirs(folder)):
        check = check_step(path, resumable=resumable, checksums=checksums, workers=workers)
        if check.usable and (check.verified or not checksums):
            if unverified is not None and warn is not None:
                warn(f"Passing over {unverified[1].path}: no {MANIFEST} (unverified); {path} verifies")
            return StepChoice(step, check, passed)
        if check.usable:
            if unverified is None:
                unverified = (step, check)
            passed.append((step, check))
            continue
        passed.append((step, check))
        if warn is not None:
            warn(f"Ignoring {check.describe()}")
    if unverified is not None:
        if warn is not None:
            warn(
                f"Loading {unverified[1].path} UNVERIFIED: it has no {MANIFEST} (the save predates checksums, or the "
                "run died before rank 0 wrote it), and no older step verifies"
            )
        return StepChoice(unverified[0], unverified[1], [p for p in passed if p[0] > unverified[0]])
    return StepChoice(-1, None, passed)


def describe_failures(choice: StepChoice) -> str:
    """One line per step passed over, naming its bad file."""
    return "\n".join(f"  step-{step}: " + "; ".join(check.problems) for step, check in choice.passed_over)
