"""`molgen3d prepare-data`: molecules (SMILES, 3D SDF or GEOM) -> train/valid/test JSONL shards + manifest.json.

Two steps, so one machine and a Slurm array give the same bytes. Step 1 turns a contiguous share
of the input molecules into lines (a worker pool, streamed molecule by molecule) and spools them
under `_shards/` with their split keys and skips. Step 2 (finalize) reads every share in input
order, drops duplicates, assigns splits (a split file, or exact counts over a seeded order of
stereo-free keys), writes the shards and one manifest. A plain run does share 0 of 1 and then
finalizes; `--shard-index I --num-shards N` does one share and `--finalize` the rest. The
manifest holds no times or paths, so the same input and settings give byte-identical output
whatever the worker or share count; a manifest with the same settings and input fingerprint
means the data set is up to date and nothing is rebuilt. Options: `prepare_config.py`; step 1:
`prepare_share.py`; step 2: `prepare_finalize.py`; this module runs them and writes the manifest.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rdkit
import tyro

import molgen3D
from molgen3D.chem.dataset_manifest import MANIFEST
from molgen3D.datasets.geom import GeomFolder, GeomSelection, find_geom, select_pickles
from molgen3D.datasets.inputs import input_kind
from molgen3D.datasets.prepare_config import PrepareConfig, PrepareError
from molgen3D.datasets.prepare_finalize import check_shares, merge_shares
from molgen3D.datasets.prepare_share import WORK_DIR, run_share
from molgen3D.datasets.splits import SPLITS
from molgen3D.files import sha256_file, write_json_atomic

FORMAT = "molgen3d-conformers-jsonl/2"
RULES = 2
"""Bumped when a rule changes what is written for the same input (2: ETKDG conformers with a
straightened atom are dropped); a data set built under other rules is rebuilt, not reused."""


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
        run_share(config, source, kind, identity, out, config.shard_index, config.num_shards, selection)
        return PrepareResult(out, {}, rebuilt=True)
    if not config.force and not config.finalize:
        existing = load_manifest_if_current(out, config, identity["sha256"])
        if existing is not None:
            print(f"[prepare-data] {out} is up to date ({_totals(existing)}); --force rebuilds it", file=sys.stderr)
            return PrepareResult(out, existing, rebuilt=False)
    num_shards = config.num_shards if config.finalize else 1
    if not config.finalize:
        (out / MANIFEST).unlink(missing_ok=True)
        run_share(config, source, kind, identity, out, 0, 1, selection)
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


def _finalize(
    config: PrepareConfig,
    source: Path,
    kind: str,
    identity: dict,
    out: Path,
    count: int,
    selection: GeomSelection | None,
) -> dict:
    """Merge the shares into the data set and write its manifest last (until then the folder reads as unfinished)."""
    check_shares(out, count, config, identity)
    (out / MANIFEST).unlink(missing_ok=True)
    counts, skips, records_read = merge_shares(config, source, kind, out, count, selection)
    manifest = {
        "format": FORMAT,
        "input": {**identity, "records_read": records_read},
        "settings": config.settings(),
        "versions": _versions(),
        "counts": counts,
        "skipped": skips.as_dict(),
    }
    write_json_atomic(out / MANIFEST, manifest)
    shutil.rmtree(out / WORK_DIR, ignore_errors=True)
    print(f"[prepare-data] wrote {out}: {_totals(manifest)}\n{skips.summary()}", file=sys.stderr)
    return manifest


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
