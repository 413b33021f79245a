"""GEOM as its users have it: an `rdkit_folder` of per-molecule pickles, split files, test sets.

`rdkit_folder/summary_drugs.json` maps SMILES to `{"pickle_path": "drugs/<name>.pickle", ...}`;
each pickle is a dict with `smiles` and `conformers`, a list of dicts holding `rd_mol` (an RDKit
molecule with hydrogens and one conformer), `boltzmannweight`, `totalenergy`, ... A split file
(`split0.npy`) holds three index arrays (train, valid, test) into the sorted list of the pickle
files of one folder. Torsional Diffusion's test set is `test_smiles.csv`
(`smiles,n_conformers,corrected_smiles`) with reference conformers in `test_mols.pkl`, a dict
from the first column's SMILES to a list of RDKit molecules.
"""

from __future__ import annotations

import csv
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rdkit import Chem
from rdkit.rdBase import BlockLogs

from molgen3D.chem.graph_key import stereo_free_key
from molgen3D.datasets.inputs import InputError
from molgen3D.datasets.splits import SPLITS

PICKLE_GLOB = "*.pickle"


@dataclass(frozen=True)
class GeomFolder:
    """The pickle folder of one GEOM set, its pickles (sorted by name), its summary (None without one),
    and the summary SMILES whose pickle is not in the folder (a partial download).

    Listed and parsed once by `find_geom`: a GEOM folder holds ~300k pickles and its summary is
    hundreds of MB, so a run passes this value down instead of asking again.
    """

    folder: Path
    pickles: tuple[Path, ...]
    summary: Path | None
    missing: tuple[str, ...] = ()

    def missing_from_summary(self) -> list[str]:
        """Summary SMILES whose pickle is not in the folder."""
        return list(self.missing)


def _load_summary(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable GEOM summary JSON ({err})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a GEOM summary maps SMILES to entries; got {type(data).__name__}")
    return data


def _list_pickles(folder: Path) -> tuple[Path, ...]:
    """The pickles of `folder`, sorted by name: the order split files index into."""
    return tuple(sorted(folder.glob(PICKLE_GLOB)))


def _with_summary(folder: Path, pickles: tuple[Path, ...], summary: Path | None, entries: dict | None) -> GeomFolder:
    if summary is None:
        return GeomFolder(folder, pickles, None)
    entries = _load_summary(summary) if entries is None else entries
    present = {p.name for p in pickles}
    missing = [s for s, e in entries.items() if Path(str(e.get("pickle_path", ""))).name not in present]
    return GeomFolder(folder, pickles, summary, tuple(missing))


def find_geom(path: Path) -> GeomFolder:
    """The pickle folder behind an rdkit_folder, a summary_*.json, or a folder of pickles.

    Lists the pickle folder once and parses the summary once.
    """
    if path.is_file():
        entries = _load_summary(path)
        first = next((e for e in entries.values() if isinstance(e, dict) and "pickle_path" in e), None)
        if first is None:
            raise InputError(f"{path}: no entry with a pickle_path; is this a GEOM summary_*.json?")
        folder = path.parent / Path(first["pickle_path"]).parent
        return _with_summary(folder, _list_pickles(folder), path, entries)
    if not path.is_dir():
        raise InputError(f"{path}: GEOM input not found")
    pickles = _list_pickles(path)
    if pickles:
        summaries = sorted(path.parent.glob(f"summary_{path.name}.json"))
        return _with_summary(path, pickles, summaries[0] if summaries else None, None)
    sets = [(d, found) for d in sorted(path.iterdir()) if d.is_dir() and (found := _list_pickles(d))]
    if len(sets) != 1:
        names = ", ".join(d.name for d, _ in sets) or "none"
        raise InputError(
            f"{path}: expected one folder of GEOM *.pickle files (e.g. drugs/), found {names}; "
            f"pass that folder or its summary_*.json"
        )
    folder, pickles = sets[0]
    summaries = sorted(path.glob(f"summary_{folder.name}.json"))
    return _with_summary(folder, pickles, summaries[0] if summaries else None, None)


@dataclass(frozen=True)
class GeomSelection:
    """The pickles one run reads (path, split-file split or None), in pickle order, and what it left out."""

    chosen: tuple[tuple[str, str | None], ...]
    left_out: tuple[tuple[str, str], ...]
    """(skip reason, example) per pickle or summary entry left out."""


def select_pickles(geom: GeomFolder, split_file: Path | None, max_molecules: int | None) -> GeomSelection:
    """The first `max_molecules` pickles (of the split file's, when given) and the ones left out."""
    left_out = [("missing_pickle", f"{geom.summary.name}: {smiles}") for smiles in geom.missing]
    if split_file is None:
        chosen = [(str(p), None) for p in geom.pickles]
    else:
        splits = load_split_file(Path(split_file), len(geom.pickles))
        chosen = []
        for i, path in enumerate(geom.pickles):
            if i in splits:
                chosen.append((str(path), splits[i]))
            else:
                left_out.append(("not_in_split_file", f"{path.name} (index {i})"))
    return GeomSelection(tuple(chosen[:max_molecules]), tuple(left_out))


def read_pickle(path: Path) -> dict[str, Any]:
    """One GEOM molecule dict; an unreadable or foreign pickle is an InputError naming the file."""
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except Exception as err:  # unpickling raises anything: EOFError, UnpicklingError, ImportError, ...
        raise InputError(f"{path}: cannot read this GEOM pickle ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("conformers"), list):
        raise InputError(f"{path}: not a GEOM molecule pickle (expected a dict with a 'conformers' list)")
    return data


def load_split_file(path: Path, n_pickles: int) -> dict[int, str]:
    """Pickle index -> split name from a split file of three index arrays (train, valid, test)."""
    try:
        arrays = np.load(path, allow_pickle=True)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable split file ({err})") from None
    if len(arrays) != len(SPLITS):
        raise InputError(
            f"{path}: a split file holds {len(SPLITS)} index arrays (train, valid, test), got {len(arrays)}"
        )
    assignment: dict[int, str] = {}
    for name, indices in zip(SPLITS, arrays):
        for index in np.asarray(indices, dtype=np.int64).tolist():
            if not 0 <= index < n_pickles:
                raise InputError(
                    f"{path}: {name} index {index} is outside the {n_pickles} pickle files; "
                    f"the split file belongs to another folder (or a fuller download)"
                )
            if assignment.setdefault(index, name) != name:
                raise InputError(f"{path}: pickle index {index} is in both {assignment[index]} and {name}")
    return assignment


@dataclass
class GeomTestMolecule:
    """One test molecule: its SMILES as the test set names it, the SMILES to prompt with, references."""

    smiles: str
    corrected_smiles: str
    n_conformers: int
    conformers: list[Chem.Mol]


def read_test_set(csv_path: Path, mols_path: Path) -> list[GeomTestMolecule]:
    """Torsional Diffusion's test molecules in CSV order with their reference conformers.

    The conformers are kept as stored (with hydrogens); the caller drops those whose graph
    differs from the corrected SMILES, as the published evaluation does.
    """
    try:
        with open(mols_path, "rb") as f:
            by_smiles = pickle.load(f)
    except Exception as err:  # any unpickling failure
        raise InputError(f"{mols_path}: cannot read the reference conformers ({type(err).__name__}: {err})") from None
    if not isinstance(by_smiles, dict):
        raise InputError(f"{mols_path}: expected a dict SMILES -> list of RDKit molecules")
    molecules = []
    with open(csv_path, encoding="utf-8", newline="") as f:
        rows = csv.reader(f)
        header = [c.strip() for c in next(rows, [])]
        if header[:1] != ["smiles"] or "corrected_smiles" not in header:
            raise InputError(f"{csv_path}:1: expected the header smiles,n_conformers,corrected_smiles, got {header}")
        n_col, c_col = header.index("n_conformers"), header.index("corrected_smiles")
        for number, row in enumerate(rows, start=2):
            if not row:
                continue
            smiles = row[0].strip()
            try:
                n_conformers = int(row[n_col])
            except (IndexError, ValueError):
                raise InputError(f"{csv_path}:{number}: n_conformers is not an integer: {row}") from None
            conformers = by_smiles.get(smiles)
            if conformers is None:
                raise InputError(f"{csv_path}:{number}: {smiles!r} has no entry in {mols_path}")
            molecules.append(GeomTestMolecule(smiles, row[c_col].strip(), n_conformers, list(conformers)))
    return molecules


SPLIT_SEPARATOR = "::"


def is_geom_reference(spec: str) -> bool:
    """Whether an evaluate --references value names a GEOM test set rather than an SDF or JSONL split.

    `.../test_smiles.csv` (its `test_mols.pkl` beside it), a folder holding both, or
    `GEOM_PATH::SPLIT_FILE[::train|valid|test]` (an rdkit_folder, summary or pickle folder, and a
    split file; the test split by default).
    """
    if SPLIT_SEPARATOR in spec:
        return True
    path = Path(spec)
    return path.name.endswith(".csv") or (path.is_dir() and (path / "test_smiles.csv").is_file())


def geom_references(
    spec: str, *, max_molecules: int | None, max_conformers: int | None, skips: Any
) -> list[tuple[str, str, list[Chem.Mol]]]:
    """(prompt SMILES, name, heavy-atom reference conformers) per molecule of a GEOM test set.

    Conformers whose graph differs from the molecule's SMILES are dropped (counted), as the
    published evaluation does; the prompt is the canonical SMILES of the corrected SMILES (test
    set) or of the pickle's SMILES (split file).
    """
    if SPLIT_SEPARATOR in spec:
        geom_path, split_file, *rest = spec.split(SPLIT_SEPARATOR)
        which = rest[0] if rest else "test"
        if which not in SPLITS:
            raise InputError(f"{spec}: the split after the split file must be one of {SPLITS}, got {which!r}")
        geom = find_geom(Path(geom_path))
        chosen = sorted(i for i, name in load_split_file(Path(split_file), len(geom.pickles)).items() if name == which)
        entries = []
        for i in chosen[:max_molecules]:
            data = read_pickle(geom.pickles[i])
            ranked = sorted(data["conformers"], key=lambda c: -float(c.get("boltzmannweight", 0.0) or 0.0))
            entries.append((str(data.get("smiles", "")), geom.pickles[i].stem, [c.get("rd_mol") for c in ranked]))
    else:
        path = Path(spec)
        csv_path = path / "test_smiles.csv" if path.is_dir() else path
        entries = [
            (m.corrected_smiles, m.smiles, m.conformers)
            for m in read_test_set(csv_path, csv_path.with_name("test_mols.pkl"))[:max_molecules]
        ]
    molecules = []
    for smiles, name, conformers in entries:
        key = stereo_free_key(smiles)
        with BlockLogs():
            mol = Chem.MolFromSmiles(smiles)
        if key is None or mol is None:
            skips.add("invalid_smiles", f"{name}: {smiles}")
            continue
        kept = []
        for conformer in conformers:
            if not isinstance(conformer, Chem.Mol) or conformer.GetNumConformers() == 0:
                skips.add("invalid_conformer", f"{name}: not an RDKit molecule with coordinates", unit="conformer")
            elif (graph := stereo_free_key(conformer)) != key:
                skips.add("reference_graph_differs", f"{name}: {graph} vs {key}", unit="conformer")
            elif max_conformers is None or len(kept) < max_conformers:
                with BlockLogs():
                    kept.append(Chem.RemoveHs(conformer))
        if kept:
            molecules.append((Chem.MolToSmiles(mol), name, kept))
        else:
            skips.add("no_reference_conformers", f"{name}: {smiles}")
    return molecules
