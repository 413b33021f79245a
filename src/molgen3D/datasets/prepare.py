"""`molgen3d prepare-data`: molecules (SMILES or 3D SDF) -> train/valid/test JSONL shards + manifest.json.

SMILES are embedded with ETKDGv3 (fixed seed) in a worker pool; SDF conformers are grouped by
canonical SMILES. Molecules go to a split by a seeded hash, lines are written in input order,
and the manifest holds no times or paths, so the same input and settings give byte-identical
output whatever the worker count. A manifest with the same settings and input checksum means
the data set is up to date and nothing is rebuilt.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import rdkit
import tyro
from tqdm import tqdm

import molgen3D
from molgen3D.chem.enriched_smiles import strip_coordinates
from molgen3D.config.paths import resolve_path
from molgen3D.datasets.conformers import EmbedSettings, Outcome, canonicalize, embed_smiles, sdf_conformer
from molgen3D.datasets.inputs import Record, bundled_smiles_file, input_kind, read_sdf, read_smiles, sha256_file
from molgen3D.datasets.shards import ShardWriter, conformer_line
from molgen3D.datasets.skips import SkipLog
from molgen3D.datasets.splits import SPLITS, assign_split, validate_fractions

MANIFEST = "manifest.json"
FORMAT = "molgen3d-conformers-jsonl/1"


class PrepareError(ValueError):
    """Nothing usable came out of the input; the message names the input file and why."""


@dataclass
class PrepareConfig:
    """Build a conformer data set from SMILES or 3D SDF."""

    output: str
    """Output directory (or a paths.yaml alias such as data:embedded_root); gets train/ valid/ test/ and
    manifest.json."""
    input: Path | None = None
    """.smi/.csv/.tsv of SMILES or .sdf of 3D conformers, optionally .gz; default: wehi_mols.csv bundled with rdkit."""
    smiles_column: str | None = None
    """SMILES column of a CSV/TSV with a header; default: a column named smiles, else the first column."""
    conformers_per_molecule: int = 4
    """ETKDGv3 conformers embedded per SMILES (SDF input keeps every conformer it has)."""
    max_molecules: int | None = None
    """Use only the first N input records (SDF: the first N distinct molecules); default: all."""
    seed: int = 42
    """Random seed of the embedding and of the split assignment."""
    mmff: bool = False
    """Optimise embedded conformers with MMFF94 (molecules MMFF cannot type are skipped)."""
    mmff_max_iters: int = 200
    """Maximum MMFF iterations per conformer."""
    precision: int = 4
    """Decimals of the coordinates (truncated toward zero)."""
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Share of molecules in train, valid, test."""
    lines_per_shard: int = 50_000
    """Conformer lines per part-NNNNN.jsonl file."""
    workers: int = 1
    """Worker processes for embedding (0 = one per CPU); does not change the output."""
    force: bool = False
    """Rebuild even if the manifest says the output is up to date."""

    def validate(self) -> None:
        """Raise ValueError naming the option and the fix."""
        if self.conformers_per_molecule < 1:
            raise ValueError(f"--conformers-per-molecule must be >= 1, got {self.conformers_per_molecule}")
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
        validate_fractions(self.split_fractions)

    def input_path(self) -> Path:
        return Path(self.input) if self.input is not None else bundled_smiles_file()

    def output_path(self) -> Path:
        return resolve_path(self.output)

    def settings(self) -> dict[str, Any]:
        """What determines the output (not workers, force or where it goes): recorded in the manifest."""
        data = asdict(self)
        for key in ("output", "input", "workers", "force"):
            data.pop(key)
        data["split_fractions"] = list(self.split_fractions)
        return data


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
    if not source.is_file():
        raise PrepareError(f"{source}: input file not found")
    checksum = sha256_file(source)
    if not config.force:
        existing = load_manifest_if_current(out, config, checksum)
        if existing is not None:
            print(f"[prepare-data] {out} is up to date ({_totals(existing)}); --force rebuilds it", file=sys.stderr)
            return PrepareResult(out, existing, rebuilt=False)
    (out / MANIFEST).unlink(missing_ok=True)
    skips = SkipLog()
    workers = (config.workers or os.cpu_count() or 1) if kind == "smiles" else 1
    with _Mapper(workers) as mapper:
        if kind == "smiles":
            molecules, records_read = _from_smiles(source, config, skips, mapper)
        else:
            molecules, records_read = _from_sdf(source, config, skips)
        if records_read == 0:
            raise PrepareError(
                f"{source}: the input holds no molecules; give a file with at least one SMILES or SDF record"
            )
        counts = _write_splits(out, molecules, config)
    total = counts["total"]["molecules"]
    if total == 0:
        raise PrepareError(
            f"{source}: none of the {records_read} input records gave a conformer, so nothing was written\n"
            f"{skips.summary()}"
        )
    manifest = {
        "format": FORMAT,
        "input": {"file": source.name, "kind": kind, "sha256": checksum, "records_read": records_read},
        "settings": config.settings(),
        "versions": _versions(),
        "counts": counts,
        "skipped": skips.as_dict(),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    print(f"[prepare-data] wrote {out}: {_totals(manifest)}\n{skips.summary()}", file=sys.stderr)
    for name in SPLITS:
        if counts[name]["molecules"] == 0 and config.split_fractions[SPLITS.index(name)] > 0:
            print(f"[prepare-data] warning: split {name!r} is empty; use more molecules", file=sys.stderr)
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


# A molecule ready to write: canonical SMILES, conformer texts.
Molecule = tuple[str, list[str]]


def _from_smiles(
    source: Path, config: PrepareConfig, skips: SkipLog, mapper: _Mapper
) -> tuple[Iterator[Molecule], int]:
    records = list(islice(read_smiles(source, config.smiles_column), config.max_molecules))
    candidates: list[Record] = []
    for record in records:
        if record.text:
            candidates.append(record)
        else:
            skips.add("blank_line", record.where, unit="line")
    settings = EmbedSettings(
        config.conformers_per_molecule, config.seed, config.mmff, config.mmff_max_iters, config.precision
    )
    canonicals = list(mapper.map(canonicalize, [r.text for r in candidates], "canonicalize", chunksize=64))
    first_seen: dict[str, str] = {}
    unique: list[tuple[str, Record]] = []
    for record, canonical in zip(candidates, canonicals):
        if canonical is None:
            skips.add("invalid_smiles", f"{record.where}: {record.text}")
        elif canonical in first_seen:
            skips.add("duplicate", f"{record.where}: {record.text} (same molecule as {first_seen[canonical]})")
        else:
            first_seen[canonical] = record.where
            unique.append((canonical, record))
    outcomes = mapper.map(partial(embed_smiles, settings=settings), [c for c, _ in unique], "embed", chunksize=2)

    def molecules() -> Iterator[Molecule]:
        for (canonical, record), outcome in zip(unique, outcomes):
            if _skipped(outcome, record, skips):
                continue
            missing = config.conformers_per_molecule - len(outcome.texts)
            if missing:
                example = f"{record.where}: {canonical} ({missing} missing)"
                skips.add("conformer_embed_failed", example, unit="conformer", count=missing)
            yield strip_coordinates(outcome.texts[0]), outcome.texts

    return molecules(), len(records)


def _from_sdf(source: Path, config: PrepareConfig, skips: SkipLog) -> tuple[Iterator[Molecule], int]:
    groups: dict[str, list[str]] = {}
    records_read = 0
    for record in tqdm(read_sdf(source), desc="read sdf", unit="rec", file=sys.stderr, mininterval=1.0):
        records_read += 1
        canonical, outcome = sdf_conformer(record.text, config.precision)
        if _skipped(outcome, record, skips):
            continue
        if canonical not in groups and config.max_molecules is not None and len(groups) >= config.max_molecules:
            skips.add("beyond_max_molecules", f"{record.where}: {canonical}", unit="conformer")
            continue
        groups.setdefault(canonical, []).extend(outcome.texts)
    return iter(groups.items()), records_read


def _skipped(outcome: Outcome, record: Record, skips: SkipLog) -> bool:
    if outcome.reason:
        skips.add(outcome.reason, f"{record.where}: {outcome.detail}")
    return bool(outcome.reason)


class _Mapper:
    """Ordered, streamed `fn(x) for x in items` with a progress bar; one spawned pool shared by all passes."""

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

    def map(self, fn: Callable, items: list, desc: str, chunksize: int) -> Iterator:
        bar = dict(total=len(items), desc=desc, unit="mol", file=sys.stderr, mininterval=1.0)
        if self._pool is None or len(items) <= 1:
            return (fn(x) for x in tqdm(items, **bar))
        return iter(tqdm(self._pool.imap(fn, items, chunksize=chunksize), **bar))


def _write_splits(out: Path, molecules: Iterable[Molecule], config: PrepareConfig) -> dict[str, dict]:
    writers = {name: ShardWriter(out / name, config.lines_per_shard) for name in SPLITS}
    counts = {name: {"molecules": 0, "conformers": 0} for name in (*SPLITS, "total")}
    try:
        for canonical, texts in molecules:
            name = assign_split(canonical, config.seed, config.split_fractions)
            for text in texts:
                writers[name].write(conformer_line(canonical, text))
            for key in (name, "total"):
                counts[key]["molecules"] += 1
                counts[key]["conformers"] += len(texts)
    finally:
        for writer in writers.values():
            writer.close()
    for name in SPLITS:
        counts[name]["files"] = writers[name].files
    return counts


def _versions() -> dict[str, str]:
    return {"molgen3d": molgen3D.__version__, "rdkit": rdkit.__version__}


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
