"""Random access to every line of a set of JSONL files through a byte-offset index.

The packed dataset shuffles lines globally and reads them one by one, so it needs line i of
the data set without holding any text: the index keeps one int64 offset per line (8 bytes a
line) and reads the line's byte range with `os.pread`, which never moves a shared file offset,
so forked DataLoader workers can use descriptors they inherited. Descriptors are opened
lazily, at most _MAX_OPEN at a time (data sets have hundreds of shards), are not pickled, and
are closed when the index is dropped (nothing else closes them).

A `.jsonl.gz` shard has no byte offsets to seek to, so it is decompressed once into a cache
(`molgen3D.files.cache_root()`: $MOLGEN3D_CACHE, else $XDG_CACHE_HOME/molgen3d, else ~/.cache/molgen3d;
under jsonl/) as a plain copy named by the shard's
path, size and mtime; later runs, ranks and workers reuse it, and the index reads the copy while
messages keep naming the .gz. This costs disk (the uncompressed size), not memory. A folder
without a `prepare-data` manifest, or whose manifest disagrees with its files, is a warning.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from molgen3D.datasets.jsonl_paths import DataPathError, data_directories, expand_paths, manifest_problem
from molgen3D.files import cache_root

logger = logging.getLogger(__name__)

_CHUNK = 1 << 24
_PROGRESS_MIN_BYTES = 256 << 20
_MAX_OPEN = 64


def _line_starts(path: Path, progress: tqdm) -> tuple[np.ndarray, int, bool]:
    """Byte offsets of every line of `path`, its size, and whether any byte is not whitespace."""
    parts = []
    has_content = False
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            newlines = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10)
            parts.append(newlines.astype(np.int64) + (size + 1))
            if not has_content:
                has_content = bool(chunk.strip())
            size += len(chunk)
            progress.update(len(chunk))
    if size == 0:
        return np.zeros(0, dtype=np.int64), 0, False
    starts = np.concatenate([np.zeros(1, dtype=np.int64), *parts])
    return starts[starts < size], size, has_content


def cache_dir() -> Path:
    """Where decompressed `.jsonl.gz` copies live: the project's one cache root (`files.cache_root`), `jsonl/`."""
    return cache_root() / "jsonl"


def plain_copy(path: Path) -> Path:
    """`path` itself, or for a `.jsonl.gz` its decompressed copy in the cache (made once, atomically)."""
    if not path.name.endswith(".gz"):
        return path
    stat = path.stat()
    tag = hashlib.sha256(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:20]
    target = cache_dir() / f"{path.name[:-3]}.{tag}"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        with gzip.open(path, "rb") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
    except (EOFError, OSError, zlib.error) as err:
        partial.unlink(missing_ok=True)
        raise DataPathError(
            f"{path}: truncated or corrupt gzip ({err}); re-create it or use the plain .jsonl"
        ) from None
    os.replace(partial, target)
    return target


def check_gzip_shards(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Every file `paths` names, each `.jsonl.gz` decompressed whole into the cache first (CRC and length checked).

    The runner's pre-flight: a truncated or corrupt shard is a `DataPathError` naming the file and
    the fix before the Trainer starts, and the cached copies it leaves are the ones the loader reads.
    """
    files = expand_paths(paths)
    for f in files:
        plain_copy(f)
    return files


class LineIndex:
    """Line i of the data set (over all files in order) -> raw bytes and `file:line`."""

    def __init__(self, paths: str | os.PathLike | Iterable[str | os.PathLike]):
        self._fds: OrderedDict[int, int] = OrderedDict()
        self.files = expand_paths(paths)
        self._sources = [plain_copy(f) for f in self.files]
        total = sum(f.stat().st_size for f in self._sources)
        offsets, counts, sizes, any_content = [], [], [], False
        quiet = total < _PROGRESS_MIN_BYTES
        with tqdm(total=total, unit="B", unit_scale=True, desc="indexing lines", disable=quiet) as bar:
            for f in self._sources:
                starts, size, has_content = _line_starts(f, bar)
                offsets.append(starts)
                counts.append(len(starts))
                sizes.append(size)
                any_content |= has_content
        if not any_content:
            shown = ", ".join(str(f) for f in self.files[:5]) + (" ..." if len(self.files) > 5 else "")
            raise DataPathError(f"data set is empty: no non-blank line in {shown}")
        self.offsets = np.concatenate(offsets)
        self.file_starts = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(counts, dtype=np.int64)])
        self.file_sizes = np.array(sizes, dtype=np.int64)
        lines_per_file = dict(zip(self.files, counts))
        for directory in data_directories(paths):
            problem = manifest_problem(directory, lines_per_file)
            if problem:
                logger.warning("%s", problem)

    def __len__(self) -> int:
        return len(self.offsets)

    def _file_of(self, i: int) -> int:
        return int(np.searchsorted(self.file_starts, i, side="right")) - 1

    def location(self, i: int) -> str:
        """`file:line` (1-based) of global line i, for messages."""
        f = self._file_of(i)
        return f"{self.files[f]}:{i - int(self.file_starts[f]) + 1}"

    def length(self, i: int) -> int:
        """Bytes of global line i (its line ending included), known from the index without reading it."""
        f = self._file_of(i)
        end = int(self.offsets[i + 1]) if i + 1 < self.file_starts[f + 1] else int(self.file_sizes[f])
        return end - int(self.offsets[i])

    def read(self, i: int) -> bytes:
        """Raw bytes of global line i without its line ending."""
        f = self._file_of(i)
        start = int(self.offsets[i])
        end = int(self.offsets[i + 1]) if i + 1 < self.file_starts[f + 1] else int(self.file_sizes[f])
        return os.pread(self._fd(f), end - start, start).rstrip(b"\r\n")

    def _fd(self, f: int) -> int:
        fd = self._fds.get(f)
        if fd is None:
            if len(self._fds) >= _MAX_OPEN:
                os.close(self._fds.popitem(last=False)[1])
            fd = self._fds[f] = os.open(self._sources[f], os.O_RDONLY)
        else:
            self._fds.move_to_end(f)
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fds"] = OrderedDict()
        return state
