"""Write one split as numbered JSONL shards: `part-00000.jsonl`, ... (or `.jsonl.gz`)."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any, TextIO

SHARD_PATTERNS = ("part-*.jsonl", "part-*.jsonl.gz")


def conformer_line(canonical_smiles: str, embedded_smiles: str, **extras: Any) -> str:
    """One JSONL line, newline included; `extras` (name, boltzmann_weight, energy) follow the two text fields."""
    record = {"canonical_smiles": canonical_smiles, "embedded_smiles": embedded_smiles, **extras}
    return json.dumps(record) + "\n"


class ShardWriter:
    """Appends lines to `directory/part-NNNNN.jsonl`, starting a new shard every `lines_per_shard` lines.

    Stale shards of an earlier run in `directory` are deleted first, so a smaller rebuild
    leaves no leftovers behind.
    """

    def __init__(self, directory: Path, lines_per_shard: int, compress: bool = False):
        if lines_per_shard < 1:
            raise ValueError(f"lines_per_shard must be >= 1, got {lines_per_shard}")
        self.directory = directory
        self.lines_per_shard = lines_per_shard
        self.compress = compress
        self.files: list[str] = []
        self.lines = 0
        self._handle: TextIO | None = None
        directory.mkdir(parents=True, exist_ok=True)
        for pattern in SHARD_PATTERNS:
            for stale in directory.glob(pattern):
                stale.unlink()

    def write(self, line: str) -> None:
        if self._handle is None or self.lines % self.lines_per_shard == 0:
            self._next_shard()
        assert self._handle is not None
        self._handle.write(line)
        self.lines += 1

    def _next_shard(self) -> None:
        self.close()
        name = f"part-{len(self.files):05d}.jsonl" + (".gz" if self.compress else "")
        self.files.append(name)
        if self.compress:  # mtime=0: the same lines give the same bytes
            raw = gzip.GzipFile(self.directory / name, "wb", compresslevel=6, mtime=0)
            self._handle = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
        else:
            self._handle = open(self.directory / name, "w", encoding="utf-8", newline="\n")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
