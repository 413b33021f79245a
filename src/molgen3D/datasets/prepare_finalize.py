"""Step 2 of `prepare-data`: every share's spool, in input order -> deduplicated, split JSONL shards.

Duplicates (the same molecule, the same conformer line) are dropped in input order, splits are
assigned (a GEOM split file, or exact counts over a seeded order of stereo-free keys), and the
lines are written to `train/ valid/ test/`; `prepare.py` then writes the manifest.
"""

from __future__ import annotations

import gzip
import json
import sys
from array import array
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from molgen3D.datasets.geom import GeomSelection
from molgen3D.datasets.prepare_config import PrepareConfig, PrepareError
from molgen3D.datasets.prepare_share import share_dir
from molgen3D.datasets.shards import ShardWriter
from molgen3D.datasets.skips import SkipLog
from molgen3D.datasets.splits import SPLITS, assign_splits


def _iter_units(out: Path, count: int) -> Iterator[tuple[int, dict]]:
    for index in range(count):
        with gzip.open(share_dir(out, index, count) / "units.jsonl.gz", "rt", encoding="utf-8") as f:
            for line in f:
                yield index, json.loads(line)


def check_shares(out: Path, count: int, config: PrepareConfig, identity: dict) -> None:
    missing, stale = [], []
    for index in range(count):
        try:
            done = json.loads((share_dir(out, index, count) / "done.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            missing.append(index)
            continue
        if done.get("settings") != config.settings() or done.get("input") != identity:
            stale.append(index)
    if missing or stale:
        raise PrepareError(
            f"{out}: cannot finalize {count} shares: missing or unfinished {missing}, built from other input or "
            f"settings {stale}; run `molgen3d prepare-data ... --shard-index I --num-shards {count}` for each, "
            f"with the same options as this --finalize"
        )


def merge_shares(
    config: PrepareConfig, source: Path, kind: str, out: Path, count: int, selection: GeomSelection | None
) -> tuple[dict[str, dict], SkipLog, int]:
    """Write the splits from `count` finished shares: (counts per split, skips, input records read)."""
    skips = SkipLog()
    for reason, example in selection.left_out if selection is not None else ():
        skips.add(reason, example)
    first_seen: dict[str, str] = {}
    keys_seen: dict[str, None] = {}
    keep_unit = bytearray()
    sizes = array("Q")
    digests = array("Q")
    records_read = 0
    for _, unit in tqdm(_iter_units(out, count), desc="finalize: read", unit="mol", file=sys.stderr, mininterval=1.0):
        records_read += 1
        keep = True
        if unit["dedup"] and unit["dedup"] in first_seen:
            seen = first_seen[unit["dedup"]]
            skips.add("duplicate", f"{unit['where']}: {unit['text']} (same molecule as {seen})")
            keep = False
        else:
            if unit["dedup"]:
                first_seen[unit["dedup"]] = unit["where"]
            for reason, example, what, n in unit["skips"]:
                skips.add(reason, example, unit=what, count=n)
        if keep and unit["n"] and kind == "sdf" and config.max_molecules is not None and unit["key"] not in keys_seen:
            if len(keys_seen) >= config.max_molecules:
                skips.add("beyond_max_molecules", f"{unit['where']}: {unit['key']}", unit="conformer", count=unit["n"])
                keep = False
        if keep and unit["n"]:
            keys_seen.setdefault(unit["key"])
        keep_unit.append(keep)
        sizes.append(unit["n"])
        digests.extend(unit["digests"] if keep else [0] * unit["n"])
    if records_read == 0:
        raise PrepareError(
            f"{source}: the input holds no molecules; give a file with at least one SMILES or SDF record"
        )
    keep_line = _first_occurrences(np.frombuffer(digests, dtype=np.uint64), keep_unit, sizes)
    if not keys_seen:
        raise PrepareError(
            f"{source}: none of the {records_read} input records gave a conformer, so nothing was written\n"
            f"{skips.summary()}"
        )
    by_key = None if config.split_file is not None else assign_splits(keys_seen, config.seed, config.split_fractions)
    del first_seen, digests
    counts = _write_splits(out, count, config, keep_unit, keep_line, by_key, skips)
    return counts, skips, records_read


def _first_occurrences(digests: np.ndarray, keep_unit: bytearray, sizes: array) -> np.ndarray:
    """Per line: kept (its unit is kept and no earlier kept line has the same digest)."""
    kept_units = np.frombuffer(bytes(keep_unit), dtype=np.uint8).astype(bool)
    unit_of_line = np.repeat(kept_units, np.frombuffer(sizes, dtype=np.uint64).astype(np.int64))
    keep = np.zeros(len(digests), dtype=bool)
    candidates = np.flatnonzero(unit_of_line)
    _, first = np.unique(digests[candidates], return_index=True)
    keep[candidates[first]] = True
    return keep


def _write_splits(
    out: Path,
    count: int,
    config: PrepareConfig,
    keep_unit: bytearray,
    keep_line: np.ndarray,
    by_key: dict[str, str] | None,
    skips: SkipLog,
) -> dict[str, dict]:
    writers = {name: ShardWriter(out / name, config.lines_per_shard, config.compress) for name in SPLITS}
    molecules: dict[str, set[str]] = {name: set() for name in SPLITS}
    conformers = dict.fromkeys(SPLITS, 0)
    line_no = 0
    try:
        units = tqdm(_iter_units(out, count), desc="finalize: write", unit="mol", file=sys.stderr, mininterval=1.0)
        current = -1
        lines: Iterator[str] = iter(())
        for u, (index, unit) in enumerate(units):
            if index != current:
                current = index
                lines = _read_lines(share_dir(out, index, count) / "lines.jsonl.gz")
            block = list(islice(lines, unit["n"]))
            if not keep_unit[u] or not block:
                line_no += len(block)
                continue
            name = unit["split"] if by_key is None else by_key[unit["key"]]
            for line in block:
                if keep_line[line_no]:
                    writers[name].write(line)
                    conformers[name] += 1
                    molecules[name].add(unit["key"])
                else:
                    skips.add("duplicate_conformer", f"{unit['where']}: same as an earlier line", unit="conformer")
                line_no += 1
    finally:
        for writer in writers.values():
            writer.close()
    counts: dict[str, dict] = {}
    for name in SPLITS:
        counts[name] = {"molecules": len(molecules[name]), "conformers": conformers[name], "files": writers[name].files}
    counts["total"] = {"molecules": sum(len(m) for m in molecules.values()), "conformers": sum(conformers.values())}
    return counts


def _read_lines(path: Path) -> Iterator[str]:
    with gzip.open(path, "rt", encoding="utf-8", newline="\n") as f:
        yield from f
