"""Files around sampling: input SMILES lists, sample files (SDF or JSONL) and their summary sidecar.

- Inputs: `.smi`/`.txt` (`SMILES [name]` per line) or `.csv`/`.tsv` with a header (a `smiles`
  column, optional `name`/`id` column). SMILES are canonicalised (heavy atoms, isomeric).
- SDF output: one record per valid sample (title = molecule name; props `smiles`,
  `molecule_index`, `sample_index`). Failed samples have no coordinates, so they live in the
  sidecar `<stem>.summary.json` (counts by reason, first examples, per-molecule requested/valid).
- JSONL output: one line per requested sample, failures included (`embedded_smiles` null).
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rdkit import Chem
from rdkit.rdBase import BlockLogs

from molgen3D.chem.enriched_smiles import EnrichedSmilesError, decode
from molgen3D.datasets.skips import SkipLog
from molgen3D.evaluation.references import canonicalize
from molgen3D.evaluation.sampling import PARSE_ERROR, SampleOutcome

SMILES_COLUMNS = ("smiles", "canonical_smiles", "smi")
NAME_COLUMNS = ("name", "id", "title", "mol_id")
SAMPLE_SUFFIXES = (".sdf", ".jsonl")
MISSING = "missing"
"""A JSONL sample line with neither a conformer nor a failure reason."""


@dataclass(frozen=True)
class MoleculeInput:
    """A molecule to sample: display name, canonical SMILES (the prompt) and where it was read."""

    name: str
    smiles: str
    where: str


def read_smiles_inputs(path: Path, skips: SkipLog) -> list[MoleculeInput]:
    """Molecules of a SMILES file; unparsable lines go to `skips` with their file:line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SMILES file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        rows = _csv_rows(path, "," if suffix == ".csv" else "\t")
    elif suffix in (".smi", ".txt", ".smiles"):
        rows = _smi_rows(path)
    else:
        raise ValueError(f"{path}: unknown SMILES file type {suffix!r}; use .smi, .txt, .csv or .tsv")
    molecules = []
    for where, smiles, name in rows:
        canonical = canonicalize(smiles)
        if canonical is None:
            skips.add("invalid_smiles", f"{where}: {smiles!r}", unit="line")
            continue
        molecules.append(MoleculeInput(name or canonical, canonical, where))
    return molecules


def _smi_rows(path: Path):
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            cells = line.split(maxsplit=1)
            if not cells or cells[0].startswith("#"):
                continue
            if lineno == 1 and cells[0].lower() in SMILES_COLUMNS:
                continue
            yield f"{path}:{lineno}", cells[0], cells[1].strip() if len(cells) > 1 else ""


def _csv_rows(path: Path, delimiter: str):
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = [h.strip().lower() for h in next(reader, [])]
        smiles_col = next((header.index(c) for c in SMILES_COLUMNS if c in header), None)
        if smiles_col is None:
            raise ValueError(f"{path}:1: no SMILES column in header {header}; name one of {', '.join(SMILES_COLUMNS)}")
        name_col = next((header.index(c) for c in NAME_COLUMNS if c in header), None)
        for lineno, row in enumerate(reader, 2):
            if not row or smiles_col >= len(row) or not row[smiles_col].strip():
                continue
            name = row[name_col].strip() if name_col is not None and name_col < len(row) else ""
            yield f"{path}:{lineno}", row[smiles_col].strip(), name


def summary_path(samples_path: Path) -> Path:
    """`samples.sdf` -> `samples.summary.json`."""
    return samples_path.with_name(f"{samples_path.stem}.summary.json")


def failure_report(molecules: Sequence[MoleculeInput], outcomes: Sequence[Sequence[SampleOutcome]],
                   max_examples: int = 3) -> dict:
    """Failures by reason: count and the first examples (molecule, sample index, start of the text)."""
    log = SkipLog(max_examples=max_examples)
    for mol, samples in zip(molecules, outcomes):
        for o in samples:
            if o.failure is not None:
                log.add(o.failure, f"{mol.name} #{o.sample_index}: {o.text[:120]}", unit="sample")
    return log.as_dict()


def write_samples(path: Path, molecules: Sequence[MoleculeInput], outcomes: Sequence[Sequence[SampleOutcome]]) -> None:
    """Write samples as SDF (valid ones) or JSONL (all), by the suffix of `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".sdf":
        writer = Chem.SDWriter(str(path))
        for index, (mol_in, samples) in enumerate(zip(molecules, outcomes)):
            for o in samples:
                if o.mol is None:
                    continue
                record = Chem.Mol(o.mol)
                record.SetProp("_Name", mol_in.name)
                record.SetProp("smiles", mol_in.smiles)
                record.SetIntProp("molecule_index", index)
                record.SetIntProp("sample_index", o.sample_index)
                writer.write(record)
        writer.close()
    elif suffix == ".jsonl":
        with open(path, "w", encoding="utf-8") as f:
            for mol_in, samples in zip(molecules, outcomes):
                for o in samples:
                    f.write(json.dumps({
                        "name": mol_in.name, "canonical_smiles": mol_in.smiles, "sample_index": o.sample_index,
                        "embedded_smiles": o.text if o.mol is not None else None,
                        "failure": o.failure, "num_tokens": o.num_tokens,
                    }) + "\n")
    else:
        raise ValueError(f"{path}: unknown sample file type {suffix!r}; use one of {', '.join(SAMPLE_SUFFIXES)}")


def read_samples(path: Path) -> dict[str, list[SampleOutcome]]:
    """Samples written by `molgen3d generate`, by canonical SMILES, failures included.

    For an SDF, the failures come from the sidecar summary's per-molecule counts by reason and
    take the sample indices the SDF lacks (which failure had which index is not recorded);
    without a sidecar, only the SDF's records (the valid samples) are known.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"samples file {path} does not exist")
    by_smiles: dict[str, list[SampleOutcome]] = {}
    if path.suffix.lower() == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    outcome, smiles = _jsonl_sample(line, f"{path}:{lineno}")
                    by_smiles.setdefault(smiles, []).append(outcome)
        return by_smiles
    if path.suffix.lower() != ".sdf":
        raise ValueError(f"{path}: unknown sample file type; use one of {', '.join(SAMPLE_SUFFIXES)}")
    with BlockLogs():
        for index, mol in enumerate(Chem.SDMolSupplier(str(path), removeHs=False)):
            if mol is None or not mol.HasProp("smiles"):
                raise ValueError(f"{path}: record {index + 1} is unreadable or has no 'smiles' property; "
                                 "score SDFs written by `molgen3d generate`")
            sample_index = mol.GetIntProp("sample_index") if mol.HasProp("sample_index") else index
            by_smiles.setdefault(mol.GetProp("smiles"), []).append(SampleOutcome(sample_index, mol, None, "", 0))
    sidecar = summary_path(path)
    if sidecar.is_file():
        summary = json.loads(sidecar.read_text(encoding="utf-8"))
        for entry in summary.get("molecules", []):
            samples = by_smiles.setdefault(entry["smiles"], [])
            taken = {o.sample_index for o in samples}
            free = (i for i in itertools.count() if i not in taken)
            for reason, count in entry.get("failures", {}).items():
                samples += [SampleOutcome(next(free), None, reason, "", 0) for _ in range(int(count))]
    return by_smiles


def _jsonl_sample(line: str, where: str) -> tuple[SampleOutcome, str]:
    """One line of a JSONL sample file -> (outcome, canonical SMILES); a bad line raises naming `where`."""
    try:
        rec = json.loads(line)
        smiles, sample_index = rec["canonical_smiles"], int(rec["sample_index"])
        text, failure, num_tokens = rec.get("embedded_smiles"), rec.get("failure"), int(rec.get("num_tokens", 0))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{where}: not a sample line of `molgen3d generate` ({type(exc).__name__}: {exc}); "
                         "each line needs canonical_smiles, sample_index, embedded_smiles and failure") from exc
    mol = None
    if text is not None and failure is None:
        try:
            mol = decode(text)
        except (EnrichedSmilesError, ValueError):
            failure = PARSE_ERROR
    if mol is None and failure is None:
        failure = MISSING
    return SampleOutcome(sample_index, mol, failure, text or "", num_tokens), smiles
