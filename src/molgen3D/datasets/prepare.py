"""`molgen3d prepare-data`: molecules (SMILES, 3D SDF or GEOM) -> train/valid/test JSONL shards + manifest.json.

Two steps, so one machine and a Slurm array give the same bytes. Step 1 turns a contiguous share
of the input molecules into lines (a worker pool, streamed molecule by molecule) and spools them
under `_shards/` with their split keys and skips. Step 2 (finalize) reads every share in input
order, drops duplicates, assigns splits (a split file, or exact counts over a seeded order of
stereo-free keys), writes the shards and one manifest. A plain run does share 0 of 1 and then
finalizes; `--shard-index I --num-shards N` does one share and `--finalize` the rest. The
manifest holds no times or paths, so the same input and settings give byte-identical output
whatever the worker or share count; a manifest with the same settings and input fingerprint
means the data set is up to date and nothing is rebuilt.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rdkit
import tyro
from tqdm import tqdm

import molgen3D
from molgen3D.chem.dataset_manifest import MANIFEST
from molgen3D.config.paths import resolve_path
from molgen3D.datasets.chemistry import MIN_ATOM_DISTANCE
from molgen3D.datasets.conformers import Settings, Unit, from_geom, from_sdf, from_smiles
from molgen3D.datasets.geom import GeomFolder, GeomSelection, find_geom, select_pickles
from molgen3D.datasets.inputs import bundled_smiles_file, input_kind, read_sdf, read_smiles
from molgen3D.datasets.shards import ShardWriter
from molgen3D.datasets.skips import SkipLog
from molgen3D.datasets.splits import SPLITS, assign_splits, validate_fractions
from molgen3D.files import sha256_file

FORMAT = "molgen3d-conformers-jsonl/2"
RULES = 2
"""Bumped when a rule changes what is written for the same input (2: ETKDG conformers with a
straightened atom are dropped); a data set built under other rules is rebuilt, not reused."""
WORK_DIR = "_shards"
_PER_RUN = ("output", "input", "workers", "force", "shard_index", "num_shards", "finalize", "split_file")


class PrepareError(ValueError):
    """Nothing usable came out of the input; the message names the input file and why."""


@dataclass
class PrepareConfig:
    """Build a conformer data set from SMILES, 3D SDF or GEOM."""

    output: str
    """Output directory (or a paths.yaml alias such as data:embedded_root); gets train/ valid/ test/, manifest.json."""
    input: Path | None = None
    """.smi/.csv/.tsv of SMILES or .sdf of 3D conformers (optionally .gz), or a GEOM rdkit_folder, its
    summary_*.json or a folder of its pickles; default: wehi_mols.csv bundled with rdkit."""
    smiles_column: str | None = None
    """SMILES column of a CSV/TSV with a header; default: a column named smiles, else the first column."""
    conformers_per_molecule: int = 4
    """ETKDGv3 conformers embedded per SMILES (SDF and GEOM keep the conformers they have)."""
    max_conformers_per_molecule: int | None = 30
    """GEOM: keep at most this many conformers per molecule, highest Boltzmann weight first (none: all)."""
    max_molecules: int | None = None
    """Use only the first N input records (SDF: the first N distinct molecules; GEOM: the first N pickles)."""
    fragments: Literal["largest", "keep", "drop"] | None = None
    """Molecules of several fragments (salts): keep the largest, keep all, or drop the molecule. Default:
    drop for GEOM (as Torsional Diffusion, so results compare), largest for SMILES/SDF (a counter-ion has
    no meaningful place relative to the parent, and the parent is the molecule users mean)."""
    max_atom_degree: int | None = None
    """Drop conformers with an atom of more neighbours than this; default 4 for GEOM (Torsional Diffusion), off else."""
    min_atom_distance: float = MIN_ATOM_DISTANCE
    """Reject conformers with two atoms closer than this (Angstrom) or all atoms at one point."""
    split_file: Path | None = None
    """GEOM: a split file (split0.npy: train, valid, test index arrays into the sorted pickle list);
    default: the seeded split with exact counts."""
    seed: int = 42
    """Random seed of the embedding and of the split assignment."""
    mmff: bool = False
    """Optimise embedded conformers with MMFF94 (molecules MMFF cannot type are skipped)."""
    mmff_max_iters: int = 200
    """Maximum MMFF iterations per conformer."""
    precision: int = 4
    """Decimals of the coordinates (truncated toward zero)."""
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Share of molecules in train, valid, test (exact counts by largest remainder)."""
    lines_per_shard: int = 50_000
    """Conformer lines per part-NNNNN.jsonl file."""
    compress: bool = False
    """Write part-NNNNN.jsonl.gz instead of plain JSONL (the loader reads both)."""
    workers: int = 1
    """Worker processes (0 = one per CPU); does not change the output."""
    shard_index: int | None = None
    """Process only share I of --num-shards (e.g. $SLURM_ARRAY_TASK_ID); then run once with --finalize."""
    num_shards: int = 1
    """Number of shares the input is cut into for --shard-index / --finalize."""
    finalize: bool = False
    """Merge the shares written by --shard-index runs into the data set and its manifest."""
    force: bool = False
    """Rebuild even if the manifest says the output is up to date."""

    def validate(self) -> None:
        """Raise ValueError naming the option and the fix."""
        if self.conformers_per_molecule < 1:
            raise ValueError(f"--conformers-per-molecule must be >= 1, got {self.conformers_per_molecule}")
        if self.max_conformers_per_molecule is not None and self.max_conformers_per_molecule < 1:
            raise ValueError(f"--max-conformers-per-molecule must be >= 1, got {self.max_conformers_per_molecule}")
        if self.max_molecules is not None and self.max_molecules < 1:
            raise ValueError(f"--max-molecules must be >= 1 (or omitted for all), got {self.max_molecules}")
        if self.precision < 0:
            raise ValueError(f"--precision must be >= 0, got {self.precision}")
        if self.lines_per_shard < 1:
            raise ValueError(f"--lines-per-shard must be >= 1, got {self.lines_per_shard}")
        if self.workers < 0:
            raise ValueError(f"--workers must be >= 0 (0 = one per CPU), got {self.workers}")
        if self.mmff_max_iters < 1:
            raise ValueError(f"--mmff-max-iters must be >= 1, got {self.mmff_max_iters}")
        if self.min_atom_distance < 0:
            raise ValueError(f"--min-atom-distance must be >= 0, got {self.min_atom_distance}")
        if self.num_shards < 1:
            raise ValueError(f"--num-shards must be >= 1, got {self.num_shards}")
        if self.shard_index is not None and not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"--shard-index must be in 0..{self.num_shards - 1}, got {self.shard_index}")
        if self.shard_index is not None and self.finalize:
            raise ValueError("--finalize merges all shares; run it without --shard-index")
        validate_fractions(self.split_fractions)

    def input_path(self) -> Path:
        return Path(self.input) if self.input is not None else bundled_smiles_file()

    def output_path(self) -> Path:
        return resolve_path(self.output)

    def settings(self) -> dict[str, Any]:
        """What determines the output (not workers, shares, force or where it goes): recorded in the manifest."""
        data = asdict(self)
        for key in _PER_RUN:
            data.pop(key)
        data["split_fractions"] = list(self.split_fractions)
        return data

    def unit_settings(self, kind: str) -> Settings:
        """Per-molecule settings with the defaults of this input kind filled in."""
        geom = kind == "geom"
        return Settings(
            conformers=self.conformers_per_molecule,
            seed=self.seed,
            mmff=self.mmff,
            mmff_max_iters=self.mmff_max_iters,
            precision=self.precision,
            fragments=self.fragments or ("drop" if geom else "largest"),
            max_atom_degree=self.max_atom_degree if self.max_atom_degree is not None else (4 if geom else None),
            max_conformers=self.max_conformers_per_molecule if geom else None,
            min_distance=self.min_atom_distance,
        )


@dataclass(frozen=True)
class PrepareResult:
    output: Path
    manifest: dict[str, Any]
    rebuilt: bool


def prepare(config: PrepareConfig) -> PrepareResult:
    """Build (or find up to date) the data set described by `config`; prints a summary to stderr."""
    config.validate()
    source, out = config.input_path(), config.output_path()
    kind = input_kind(source)
    if not source.exists():
        raise PrepareError(f"{source}: input file not found")
    if config.split_file is not None and kind != "geom":
        raise ValueError("--split-file indexes GEOM pickles; for SMILES/SDF input use --split-fractions")
    geom = find_geom(source) if kind == "geom" else None  # listed and parsed once per run, passed down
    selection = select_pickles(geom, config.split_file, config.max_molecules) if geom is not None else None
    identity = _input_identity(source, kind, config, geom)
    if config.shard_index is not None:
        _run_share(config, source, kind, identity, out, config.shard_index, config.num_shards, selection)
        return PrepareResult(out, {}, rebuilt=True)
    if not config.force and not config.finalize:
        existing = load_manifest_if_current(out, config, identity["sha256"])
        if existing is not None:
            print(f"[prepare-data] {out} is up to date ({_totals(existing)}); --force rebuilds it", file=sys.stderr)
            return PrepareResult(out, existing, rebuilt=False)
    num_shards = config.num_shards if config.finalize else 1
    if not config.finalize:
        (out / MANIFEST).unlink(missing_ok=True)
        _run_share(config, source, kind, identity, out, 0, 1, selection)
    manifest = _finalize(config, source, kind, identity, out, num_shards, selection)
    return PrepareResult(out, manifest, rebuilt=True)


def load_manifest_if_current(out: Path, config: PrepareConfig, checksum: str) -> dict[str, Any] | None:
    """The manifest of `out` if it was built from this input with these settings and its files exist."""
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        manifest.get("format") != FORMAT
        or manifest.get("settings") != config.settings()
        or manifest.get("input", {}).get("sha256") != checksum
        or manifest.get("versions") != _versions()
    ):
        return None
    for name in SPLITS:
        files = manifest.get("counts", {}).get(name, {}).get("files", [])
        if not all((out / name / f).is_file() for f in files):
            return None
    return manifest


def prepare_embedded_default(
    out_dir: str | Path,
    max_molecules: int | None = 1000,
    conformers_per_molecule: int = 4,
    workers: int = 1,
    seed: int = 42,
) -> Path:
    """The embedded default data set from rdkit's bundled drug-like SMILES; cached in `out_dir`."""
    config = PrepareConfig(
        output=str(out_dir),
        max_molecules=max_molecules,
        conformers_per_molecule=conformers_per_molecule,
        workers=workers,
        seed=seed,
    )
    return prepare(config).output


# --- the input: identity and work items ------------------------------------------------------


def _input_identity(source: Path, kind: str, config: PrepareConfig, geom: GeomFolder | None) -> dict[str, Any]:
    """What the manifest records about the input: a file's sha256, or a GEOM listing's (names and sizes)."""
    identity: dict[str, Any] = {"file": source.name, "kind": kind}
    if geom is None:
        identity["sha256"] = sha256_file(source)
        return identity
    listing = hashlib.sha256()
    for path in geom.pickles:
        listing.update(f"{path.name}\t{path.stat().st_size}\n".encode())
    if config.split_file is not None:
        identity["split_file"] = {"file": Path(config.split_file).name, "sha256": sha256_file(Path(config.split_file))}
        listing.update(identity["split_file"]["sha256"].encode())
    identity["sha256"] = listing.hexdigest()
    identity["pickles"] = len(geom.pickles)
    return identity


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


# --- step 1: one share -> spool --------------------------------------------------------------


def _share_dir(out: Path, index: int, count: int) -> Path:
    return out / WORK_DIR / f"{index:05d}-of-{count:05d}"


def _run_share(
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
    where = _share_dir(out, index, count)
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


# --- step 2: all shares -> data set ----------------------------------------------------------


def _iter_units(out: Path, count: int) -> Iterator[tuple[int, dict]]:
    for index in range(count):
        with gzip.open(_share_dir(out, index, count) / "units.jsonl.gz", "rt", encoding="utf-8") as f:
            for line in f:
                yield index, json.loads(line)


def _check_shares(out: Path, count: int, config: PrepareConfig, identity: dict) -> None:
    missing, stale = [], []
    for index in range(count):
        try:
            done = json.loads((_share_dir(out, index, count) / "done.json").read_text(encoding="utf-8"))
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


def _finalize(
    config: PrepareConfig,
    source: Path,
    kind: str,
    identity: dict,
    out: Path,
    count: int,
    selection: GeomSelection | None,
) -> dict:
    _check_shares(out, count, config, identity)
    (out / MANIFEST).unlink(missing_ok=True)  # until the new one is written, the folder reads as unfinished
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
    manifest = {
        "format": FORMAT,
        "input": {**identity, "records_read": records_read},
        "settings": config.settings(),
        "versions": _versions(),
        "counts": counts,
        "skipped": skips.as_dict(),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(out / WORK_DIR, ignore_errors=True)
    print(f"[prepare-data] wrote {out}: {_totals(manifest)}\n{skips.summary()}", file=sys.stderr)
    return manifest


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
                lines = _read_lines(_share_dir(out, index, count) / "lines.jsonl.gz")
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


def _versions() -> dict[str, str]:
    return {"molgen3d": molgen3D.__version__, "rules": str(RULES), "rdkit": rdkit.__version__}


def _totals(manifest: dict[str, Any]) -> str:
    counts = manifest["counts"]
    per_split = ", ".join(f"{n} {counts[n]['molecules']}/{counts[n]['conformers']}" for n in SPLITS)
    return f"{counts['total']['molecules']} molecules, {counts['total']['conformers']} conformers ({per_split})"


def cli(argv: list[str]) -> int:
    config = tyro.cli(PrepareConfig, args=argv, prog="molgen3d prepare-data")
    try:
        prepare(config)
    except ValueError as err:
        print(f"molgen3d prepare-data: error: {err}", file=sys.stderr)
        return 1
    return 0
