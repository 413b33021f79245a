"""Step 1 of `prepare-data`: one contiguous share of the input molecules -> spooled units and lines.

A worker pool turns molecules into lines, streamed in input order; each share's spool (under
`<output>/_shards/`) holds one header per input record (split key, dedup key, skips, line
digests) and its lines, then `done.json` with the settings and input it was built from.
"""

from __future__ import annotations

import gzip
import io
import json
import multiprocessing
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

from tqdm import tqdm

from molgen3D.datasets.conformers import Settings, Unit, from_geom, from_sdf, from_smiles
from molgen3D.datasets.geom import GeomSelection
from molgen3D.datasets.inputs import read_sdf, read_smiles
from molgen3D.datasets.prepare_config import PrepareConfig

WORK_DIR = "_shards"


def _share(n: int, index: int, count: int) -> slice:
    """The contiguous records of share `index` of `count`: input order is kept across shares."""
    return slice(n * index // count, n * (index + 1) // count)


def _work(
    config: PrepareConfig, source: Path, kind: str, index: int, count: int, selection: GeomSelection | None
) -> tuple[Iterator, int | None]:
    """The work items of share `index` of `count` (records, or GEOM pickles) and their number if known."""
    if kind == "smiles":
        records = list(islice(read_smiles(source, config.smiles_column), config.max_molecules))
        mine = records[_share(len(records), index, count)]
        return iter(mine), len(mine)
    if kind == "sdf":
        if count == 1:
            return read_sdf(source), None
        share = _share(sum(1 for _ in read_sdf(source)), index, count)
        return islice(read_sdf(source), share.start, share.stop), share.stop - share.start
    chosen = selection.chosen
    items = chosen[_share(len(chosen), index, count)]
    return iter(items), len(items)


def _process(item: Any, kind: str, settings: Settings) -> tuple[Unit, str | None]:
    if kind == "smiles":
        return from_smiles(item, settings), None
    if kind == "sdf":
        return from_sdf(item, settings), None
    path, split = item
    return from_geom(path, settings), split


def share_dir(out: Path, index: int, count: int) -> Path:
    return out / WORK_DIR / f"{index:05d}-of-{count:05d}"


def run_share(
    config: PrepareConfig,
    source: Path,
    kind: str,
    identity: dict,
    out: Path,
    index: int,
    count: int,
    selection: GeomSelection | None,
) -> None:
    """Turn share `index` of `count` into spooled units and lines, then mark it done."""
    where = share_dir(out, index, count)
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    items, total = _work(config, source, kind, index, count, selection)
    fn = partial(_process, kind=kind, settings=config.unit_settings(kind))
    workers = config.workers or os.cpu_count() or 1
    units = lines = 0
    with _spool(where / "units.jsonl.gz") as unit_file, _spool(where / "lines.jsonl.gz") as line_file:
        with _Mapper(workers) as mapper:
            for unit, split in mapper.map(fn, items, total, f"{kind} share {index + 1}/{count}"):
                header = {
                    "where": unit.where,
                    "key": unit.key,
                    "dedup": unit.dedup,
                    "text": unit.text,
                    "split": split,
                    "n": len(unit.lines),
                    "digests": unit.digests,
                    "skips": unit.skips,
                }
                unit_file.write(json.dumps(header) + "\n")
                line_file.writelines(unit.lines)
                units += 1
                lines += len(unit.lines)
    done = {"settings": config.settings(), "input": identity, "units": units, "lines": lines}
    (where / "done.json").write_text(json.dumps(done, indent=2) + "\n", encoding="utf-8")
    if count > 1:
        print(f"[prepare-data] share {index}/{count}: {units} records, {lines} lines in {where}", file=sys.stderr)


def _spool(path: Path) -> io.TextIOWrapper:
    return io.TextIOWrapper(gzip.GzipFile(path, "wb", compresslevel=1, mtime=0), encoding="utf-8", newline="\n")


class _Mapper:
    """Ordered, streamed `fn(x) for x in items` with a progress bar; at most a few batches in flight."""

    def __init__(self, workers: int):
        self.workers = workers
        self._pool = None

    def __enter__(self) -> _Mapper:
        if self.workers > 1:
            self._pool = multiprocessing.get_context("spawn").Pool(self.workers)
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            if exc[0] is None:
                self._pool.close()
            else:
                self._pool.terminate()
            self._pool.join()

    def map(self, fn: Callable, items: Iterable, total: int | None, desc: str) -> Iterator:
        with tqdm(total=total, desc=desc, unit="mol", file=sys.stderr, mininterval=1.0) as bar:
            if self._pool is None:
                for item in items:
                    yield fn(item)
                    bar.update()
                return
            items = iter(items)
            while batch := list(islice(items, self.workers * 64)):
                for result in self._pool.imap(fn, batch, chunksize=4):
                    yield result
                    bar.update()
