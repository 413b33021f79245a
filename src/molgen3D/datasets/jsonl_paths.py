"""Which JSONL files a data path names: one rule for the loader, tokenizer stats and evaluation.

A path is a file, a directory of `*.jsonl` / `*.jsonl.gz`, a glob, a `data:` alias, or a list of
those; directories and globs expand in sorted order so every machine sees the same file order.
`open_jsonl` reads either kind, and `manifest_problem` says when a folder is not what
`prepare-data` finished writing.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
from pathlib import Path
from typing import IO, Iterable

from molgen3D.chem.dataset_manifest import MANIFEST, find_manifest
from molgen3D.config.paths import is_alias, resolve

_GLOB_CHARS = frozenset("*?[")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")


class DataPathError(FileNotFoundError):
    """A data path does not exist, matches no files, or holds no data."""


def is_jsonl(path: Path) -> bool:
    return path.name.endswith(JSONL_SUFFIXES)


def open_jsonl(path: str | os.PathLike, mode: str = "rb") -> IO:
    """Open a `.jsonl` or `.jsonl.gz` file (`rb` or `rt`), so every reader takes both.

    Text mode drops a UTF-8 byte order mark, so a file saved by an editor that writes one reads the same.
    """
    path = Path(path)
    if path.name.endswith(".gz"):
        raw = gzip.open(path, "rb")
        return raw if mode == "rb" else io.TextIOWrapper(raw, encoding="utf-8-sig")
    return open(path, "rb") if mode == "rb" else open(path, encoding="utf-8-sig")


def expand_paths(
    paths: str | os.PathLike | Iterable[str | os.PathLike], *, recursive: bool = False, key: str | None = None
) -> list[Path]:
    """Files named by `paths`: a file, a directory of JSONL files, a glob, an alias, or a list of those.

    Each directory and glob expands in sorted order so the index (and thus every shuffle) is
    the same on every machine; a file reached twice is kept once. `recursive` lets a
    directory stand for every JSONL file below it (statistics over a whole data set root;
    never for training, where it would mix the splits). `key` (the config key the paths came
    from) leads every error message, so a config error names what to fix.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    prefix = f"{key}: " if key else ""
    if not items:
        raise DataPathError(f"{prefix}no data path given")
    files: list[Path] = []
    for item in items:
        try:
            files.extend(_expand_one(str(item), recursive))
        except DataPathError as err:
            raise DataPathError(f"{prefix}{err}") from None
    unique: dict[Path, Path] = {}
    for f in files:
        unique.setdefault(f.resolve(), f)
    return list(unique.values())


def _expand_one(item: str, recursive: bool) -> list[Path]:
    where = item
    if is_alias(item):
        item = resolve(item)
        where = f"{where} (= {item})"
    path = Path(item).expanduser()
    if _GLOB_CHARS & set(item):
        matches = sorted(Path(m) for m in glob.glob(str(path)) if Path(m).is_file())
        if not matches:
            raise DataPathError(f"data glob {where} matches no files")
        return matches
    if path.is_dir():
        pattern = "**/*.jsonl*" if recursive else "*.jsonl*"
        matches = sorted(p for p in path.glob(pattern) if p.is_file() and is_jsonl(p))
        if not matches:
            raise DataPathError(
                f"data directory {where} holds no *.jsonl files (nor *.jsonl.gz); point it at a split folder "
                f"written by `molgen3d prepare-data` (e.g. <output>/train)"
            )
        return matches
    if path.is_file():
        return [path]
    raise DataPathError(f"data path {where} does not exist, so there are no JSONL files at it")


def data_directories(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """The directories among `paths` (aliases resolved): the folders whose manifest is worth checking."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    found = []
    for item in items:
        text = str(item)
        path = Path(resolve(text) if is_alias(text) else text).expanduser()
        if path.is_dir():
            found.append(path)
    return found


def manifest_problem(directory: Path, lines_per_file: dict[Path, int]) -> str:
    """Why `directory` does not look like a finished `prepare-data` split ("" if it does).

    The manifest sits in the folder or its parent (the data set root, with the folder's split
    name as its key); its files and conformer count must match what is there.
    """
    found = find_manifest(directory)
    if found is None:
        return (
            f"data folder {directory} has no {MANIFEST} (nor its parent): it was not finished by `molgen3d "
            f"prepare-data` (a killed run?) or was made by hand; check it, or rebuild it"
        )
    candidate, split = found
    try:
        counts = json.loads(candidate.read_text(encoding="utf-8"))["counts"]
        entry = counts[split] if split is not None else counts["total"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"data folder {directory}: {candidate} is unreadable or has no counts for {split or 'total'!r}"
    present = {p.name: n for p, n in lines_per_file.items() if p.parent == directory}
    listed = entry.get("files")
    if listed is not None and sorted(listed) != sorted(present):
        return (
            f"data folder {directory}: {candidate} lists files {sorted(listed)} but the folder holds "
            f"{sorted(present)}; the data set was changed or only partly written, run prepare-data again"
        )
    lines = sum(present.values())
    if entry.get("conformers") is not None and entry["conformers"] != lines:
        return (
            f"data folder {directory}: {candidate} counts {entry['conformers']} conformers but the files hold "
            f"{lines} lines; the data set was changed or only partly written, run prepare-data again"
        )
    return ""
