"""Which JSONL files a data path names: one rule for the loader, tokenizer stats and evaluation.

A path is a file, a directory of `*.jsonl`, a glob, a `data:` alias, or a list of those;
directories and globs expand in sorted order so every machine sees the same file order.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable

from molgen3D.config.paths import is_alias, resolve

_GLOB_CHARS = frozenset("*?[")


class DataPathError(FileNotFoundError):
    """A data path does not exist, matches no files, or holds no data."""


def expand_paths(paths: str | os.PathLike | Iterable[str | os.PathLike], *, recursive: bool = False) -> list[Path]:
    """Files named by `paths`: a file, a directory of `*.jsonl`, a glob, an alias, or a list of those.

    Each directory and glob expands in sorted order so the index (and thus every shuffle) is
    the same on every machine; a file reached twice is kept once. `recursive` lets a
    directory stand for every `*.jsonl` below it (statistics over a whole data set root;
    never for training, where it would mix the splits).
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise DataPathError("no data path given")
    files: list[Path] = []
    for item in items:
        files.extend(_expand_one(str(item), recursive))
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
        matches = sorted(p for p in path.glob("**/*.jsonl" if recursive else "*.jsonl") if p.is_file())
        if not matches:
            raise DataPathError(f"data directory {where} holds no *.jsonl files")
        return matches
    if path.is_file():
        return [path]
    raise DataPathError(f"data path {where} does not exist, so there are no JSONL files at it")
