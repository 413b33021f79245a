"""File helpers every layer shares: content hashes, the cache folder, whole-file writes, reproducible gzip.

One definition each, so a rule (which environment variable picks the cache, how a file is
written so a reader never sees half of it) cannot drift between the places that need it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (hashlib releases the GIL: threads hash in parallel)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def cache_root() -> Path:
    """$MOLGEN3D_CACHE, else $XDG_CACHE_HOME/molgen3d, else ~/.cache/molgen3d."""
    if os.environ.get("MOLGEN3D_CACHE"):
        return Path(os.environ["MOLGEN3D_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "molgen3d"


@contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file beside `path`; on success it replaces `path` in one rename, on error it is removed.

    A reader (or a killed writer's successor) sees the old file or the new one, never a part.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_output(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj, *, indent: int | None = 2, sort_keys: bool = False) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def gzip_text_writer(raw: IO[bytes], *, compresslevel: int = 6) -> io.TextIOWrapper:
    """A UTF-8 text writer gzipping into `raw` with no timestamp or name: same text, same bytes."""
    return io.TextIOWrapper(
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=compresslevel, mtime=0),
        encoding="utf-8",
        newline="\n",
    )
