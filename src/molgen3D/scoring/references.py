"""Reference conformers to score samples against, grouped by molecule.

Two inputs: an SDF with several conformers per molecule (records of one molecule need not be
adjacent), or a JSONL split of the prepared data (a file, a directory of `*.jsonl`, or a
glob). Molecules are keyed by the heavy-atom canonical isomeric SMILES, exactly the prompt
the model gets. Unusable records are counted by reason with their first examples.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rdkit import Chem
from rdkit.rdBase import BlockLogs

from molgen3D.chem.coordinate_format import ORIGINAL, dataset_format, to_absolute_text
from molgen3D.chem.enriched_smiles import EnrichedSmilesError, decode
from molgen3D.config.paths import resolve_path
from molgen3D.datasets.conformers import from_sdf
from molgen3D.datasets.geom import geom_references, is_geom_reference
from molgen3D.datasets.inputs import SDF_SUFFIXES, inner_suffix, read_sdf
from molgen3D.datasets.jsonl_paths import expand_paths, open_jsonl
from molgen3D.datasets.skips import SkipLog


@dataclass
class ReferenceMolecule:
    """One molecule: its canonical SMILES (the prompt) and heavy-atom conformers (one per Mol)."""

    smiles: str
    conformers: list[Chem.Mol]
    name: str = ""


def canonical_smiles(mol: Chem.Mol) -> str:
    """The heavy-atom canonical isomeric SMILES the data and the prompts use."""
    with BlockLogs():
        return Chem.MolToSmiles(Chem.RemoveHs(mol), isomericSmiles=True, canonical=True)


def canonicalize(smiles: str) -> str | None:
    """Canonical heavy-atom SMILES of a SMILES string, or None if RDKit cannot parse it."""
    with BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
    return None if mol is None else canonical_smiles(mol)


def iter_jsonl(path: str | Path, skips: SkipLog) -> Iterator[tuple[str, str, str]]:
    """(where, canonical_smiles, embedded_smiles) per usable line; bad lines go to `skips`."""
    for file in expand_paths(path):
        with open_jsonl(file, "rt") as f:
            for lineno, line in enumerate(f, 1):
                where = f"{file}:{lineno}"
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    skips.add("bad_json", f"{where}: {exc.msg}", unit="line")
                    continue
                if not isinstance(record, dict) or not all(
                    isinstance(record.get(k), str) for k in ("canonical_smiles", "embedded_smiles")
                ):
                    skips.add(
                        "missing_key", f"{where}: needs string keys canonical_smiles and embedded_smiles", unit="line"
                    )
                    continue
                yield where, record["canonical_smiles"], record["embedded_smiles"]


_DECIMALS = re.compile(r"<-?\d+(?:\.(\d*))?,")


def coordinate_precision(embedded_smiles: str) -> int | None:
    """Decimals of the first coordinate of an enriched SMILES (the data's fixed precision), None if none found."""
    match = _DECIMALS.search(embedded_smiles)
    return None if match is None else len(match.group(1) or "")


def load_jsonl_references(
    path: str | Path,
    *,
    select: Callable[[list[str]], list[str]] | None = None,
    max_conformers: int | None = None,
    skips: SkipLog | None = None,
) -> tuple[list[ReferenceMolecule], int | None]:
    """Molecules of a JSONL split (first-appearance order) and the coordinate precision of its text.

    `select(all_smiles) -> chosen` picks molecules before any conformer is decoded (the split is
    read twice, so a large split is never held in memory).
    """
    skips = skips if skips is not None else SkipLog()
    order: dict[str, None] = {}
    for _, smiles, _ in iter_jsonl(path, SkipLog()):
        order.setdefault(smiles)
    chosen = list(order) if select is None else select(list(order))
    wanted = set(chosen)
    conformers: dict[str, list[Chem.Mol]] = {s: [] for s in chosen}
    precision = None
    fmt = dataset_format(resolve_path(str(path))) or ORIGINAL  # offsets are placed before decoding
    for where, smiles, embedded in iter_jsonl(path, skips):
        if smiles not in wanted or (max_conformers is not None and len(conformers[smiles]) >= max_conformers):
            continue
        try:
            mol = decode(to_absolute_text(embedded, fmt))
        except (EnrichedSmilesError, ValueError) as exc:
            skips.add("decode_error", f"{where}: {exc}", unit="line")
            continue
        if precision is None:
            precision = coordinate_precision(embedded)
        conformers[smiles].append(mol)
    molecules = [ReferenceMolecule(s, conformers[s], name=s) for s in chosen if conformers[s]]
    return molecules, precision


def iter_sdf_conformers(path: str | Path, skips: SkipLog) -> Iterator[tuple[str, str, Chem.Mol, str]]:
    """(where, canonical SMILES, heavy-atom conformer, title) per conformer `prepare-data` would keep from an SDF.

    Records go through exactly what `prepare-data` does with an SDF at its defaults
    (`inputs.read_sdf` splits on `$$$$`, so a valid record after an unreadable one is kept;
    `conformers.from_sdf` applies the fragment policy and the geometry checks and writes the
    text), so the molecules, their canonical SMILES and the skip reasons are the same; each
    conformer is decoded from that text, in the atom order the prompts use.
    """
    from molgen3D.datasets.prepare import PrepareConfig

    settings = PrepareConfig(output="").unit_settings("sdf")
    for record in read_sdf(resolve_path(str(path))):
        unit = from_sdf(record, settings)
        for reason, example, unit_name, count in unit.skips:
            skips.add(reason, example, unit=unit_name, count=count)
        for line in unit.lines:
            fields = json.loads(line)
            yield record.where, fields["canonical_smiles"], decode(fields["embedded_smiles"]), record.name


def load_sdf_references(
    path: str | Path,
    *,
    max_molecules: int | None = None,
    max_conformers: int | None = None,
    skips: SkipLog | None = None,
) -> list[ReferenceMolecule]:
    """Molecules of a 3D SDF grouped by canonical heavy-atom SMILES (first-appearance order).

    Records of molecules beyond the first `max_molecules` are counted as `prepare-data` counts them.
    """
    skips = skips if skips is not None else SkipLog()
    groups: dict[str, ReferenceMolecule] = {}
    for where, smiles, heavy, title in iter_sdf_conformers(path, skips):
        if smiles not in groups and max_molecules is not None and len(groups) >= max_molecules:
            skips.add("beyond_max_molecules", f"{where}: {smiles}", unit="conformer")
            continue
        group = groups.setdefault(smiles, ReferenceMolecule(smiles, [], name=title or smiles))
        if max_conformers is None or len(group.conformers) < max_conformers:
            group.conformers.append(heavy)
    return list(groups.values())


def is_sdf(path: Path) -> bool:
    """`.sdf`, `.sd` or `.mol`, optionally gzipped (what `prepare-data` reads as SDF)."""
    return inner_suffix(Path(path)) in SDF_SUFFIXES


def read_references(
    path: str | Path,
    *,
    max_molecules: int | None = None,
    max_conformers: int | None = None,
    skips: SkipLog | None = None,
) -> tuple[list[ReferenceMolecule], int | None]:
    """References from an SDF (`.sdf`/`.sd`) or a JSONL split; the first `max_molecules` molecules.

    Returns the molecules and the JSONL coordinate precision (None for an SDF).
    """
    if is_geom_reference(str(path)):
        found = geom_references(
            str(path),
            max_molecules=max_molecules,
            max_conformers=max_conformers,
            skips=skips if skips is not None else SkipLog(),
        )
        return [ReferenceMolecule(smiles, conformers, name=name) for smiles, name, conformers in found], None
    resolved = resolve_path(str(path))
    if is_sdf(resolved):
        if not resolved.is_file():
            raise FileNotFoundError(f"reference SDF {path!r} (resolved to {resolved}) does not exist")
        molecules = load_sdf_references(
            resolved, max_molecules=max_molecules, max_conformers=max_conformers, skips=skips
        )
        return molecules, None
    select = None if max_molecules is None else (lambda all_smiles: all_smiles[:max_molecules])
    return load_jsonl_references(resolved, select=select, max_conformers=max_conformers, skips=skips)


def seeded_choice(num_molecules: int, seed: int) -> Callable[[list[str]], list[str]]:
    """A `select` that draws `num_molecules` molecules reproducibly (sorted first, so file order does not matter)."""

    def select(all_smiles: list[str]) -> list[str]:
        pool = sorted(all_smiles)
        return random.Random(seed).sample(pool, min(num_molecules, len(pool)))

    return select
