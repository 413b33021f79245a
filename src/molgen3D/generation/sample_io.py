"""Files around sampling: input SMILES lists, sample files (SDF or JSONL) and their summary sidecar.

- Inputs: `.smi`/`.txt` (`SMILES [name]` per line), `.csv`/`.tsv` with a header (a `smiles`
  column, optional `name`/`id` column; the GEOM test-set CSV `smiles,n_conformers,corrected_smiles`
  samples `corrected_smiles`, names molecules by `smiles` and keeps L = `n_conformers`), or a 3D
  SDF (one molecule per distinct graph, L = its records). SMILES are canonicalised (heavy atoms, isomeric).
- SDF output: one record per valid sample (title = molecule name; props `smiles`,
  `molecule_index`, `sample_index`). With `failures=True` (what `evaluate` writes) a failed
  sample is a record with no atoms and a `failure` prop, so the file holds every sample in
  order; otherwise failures live in the sidecar `<stem>.summary.json` (counts by reason, first
  examples, per-molecule requested/valid).
- JSONL output: one line per requested sample, failures included (`embedded_smiles` null).

Reading samples back never trusts the file: every conformer passes `checks.sample_failure`
(finite, in-range coordinates, the molecule's graph) and a bad field is a failure reason.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rdkit import Chem
from rdkit.rdBase import BlockLogs

from molgen3D.chem.enriched_smiles import EnrichedSmilesError, decode, strip_coordinates
from molgen3D.datasets.inputs import read_sdf
from molgen3D.datasets.skips import SkipLog
from molgen3D.files import atomic_output
from molgen3D.scoring.checks import sample_failure
from molgen3D.scoring.references import canonicalize, iter_sdf_conformers, is_sdf
from molgen3D.generation.sampling import PARSE_ERROR
from molgen3D.scoring.outcome import SampleOutcome

SMILES_COLUMNS = ("corrected_smiles", "smiles", "canonical_smiles", "smi")
"""Looked up in this order: the GEOM test CSV's `corrected_smiles` is the graph its conformers have."""
COUNT_COLUMNS = ("n_conformers", "num_conformers")
NAME_COLUMNS = ("name", "id", "title", "mol_id")
SAMPLE_SUFFIXES = (".sdf", ".jsonl")
MISSING = "missing"
"""A JSONL sample line with neither a conformer nor a failure reason."""
BAD_FIELD = "bad_field"
"""A sample line whose `embedded_smiles`, `failure` or `num_tokens` has the wrong type."""


class SamplesMismatchError(ValueError):
    """The samples file and the references are about different molecules; the message names them."""


@dataclass(frozen=True)
class MoleculeInput:
    """A molecule to sample: display name, canonical SMILES (the prompt) and where it was read."""

    name: str
    smiles: str
    where: str
    n_conformers: int | None = None
    """L when the input says it (GEOM CSV `n_conformers`, records of an SDF), else None."""


def read_smiles_inputs(path: Path, skips: SkipLog) -> list[MoleculeInput]:
    """Molecules of a SMILES file or a 3D SDF; unusable lines/records go to `skips` with their file:line."""
    return list(iter_smiles_inputs(path, skips))


def iter_smiles_inputs(path: Path, skips: SkipLog) -> Iterator[MoleculeInput]:
    """`read_smiles_inputs` one molecule at a time (an SDF is read whole: L counts its records per molecule)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"molecule file {path} does not exist")
    if is_sdf(path):
        yield from _sdf_inputs(path, skips)
        return
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        rows = _csv_rows(path, "," if suffix == ".csv" else "\t", skips)
    elif suffix in (".smi", ".txt", ".smiles"):
        rows = ((where, smiles, name, None) for where, smiles, name in _smi_rows(path))
    else:
        raise ValueError(f"{path}: unknown molecule file type {suffix!r}; use .smi, .txt, .csv, .tsv or .sdf")
    for where, smiles, name, count in rows:
        canonical = canonicalize(smiles)
        if canonical is None:
            skips.add("invalid_smiles", f"{where}: {smiles!r}", unit="line")
            continue
        yield MoleculeInput(name or canonical, canonical, where, count)


def _sdf_inputs(path: Path, skips: SkipLog) -> list[MoleculeInput]:
    """One input per distinct molecule of an SDF (read as `prepare-data` reads it), L = its usable records."""
    found: dict[str, MoleculeInput] = {}
    counts: dict[str, int] = {}
    for where, smiles, _, title in iter_sdf_conformers(path, skips):
        found.setdefault(smiles, MoleculeInput(title or smiles, smiles, where))
        counts[smiles] = counts.get(smiles, 0) + 1
    return [MoleculeInput(m.name, m.smiles, m.where, counts[s]) for s, m in found.items()]


def _smi_rows(path: Path):
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            cells = line.split(maxsplit=1)
            if not cells or cells[0].startswith("#"):
                continue
            if lineno == 1 and cells[0].lower() in SMILES_COLUMNS:
                continue
            yield f"{path}:{lineno}", cells[0], cells[1].strip() if len(cells) > 1 else ""


def _column(header: list[str], names: tuple[str, ...]) -> int | None:
    return next((header.index(c) for c in names if c in header), None)


def _csv_rows(path: Path, delimiter: str, skips: SkipLog):
    """(where, smiles, name, n_conformers or None) per data row; a GEOM CSV is named by its raw `smiles`."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = [h.strip().lower() for h in next(reader, [])]
        smiles_col = _column(header, SMILES_COLUMNS)
        if smiles_col is None:
            raise ValueError(f"{path}:1: no SMILES column in header {header}; name one of {', '.join(SMILES_COLUMNS)}")
        name_col = _column(header, NAME_COLUMNS)
        if name_col is None and header[smiles_col] == "corrected_smiles":
            name_col = _column(header, ("smiles",))
        count_col = _column(header, COUNT_COLUMNS)
        for lineno, row in enumerate(reader, 2):
            if not row or smiles_col >= len(row) or not row[smiles_col].strip():
                continue
            where = f"{path}:{lineno}"
            name = row[name_col].strip() if name_col is not None and name_col < len(row) else ""
            count = None
            if count_col is not None:
                cell = row[count_col].strip() if count_col < len(row) else ""
                if not cell.isdigit() or int(cell) < 1:
                    skips.add("bad_n_conformers", f"{where}: {header[count_col]} = {cell!r}", unit="line")
                    continue
                count = int(cell)
            yield where, row[smiles_col].strip(), name, count


def summary_path(samples_path: Path) -> Path:
    """`samples.sdf` -> `samples.summary.json`."""
    return samples_path.with_name(f"{samples_path.stem}.summary.json")


def write_samples(
    path: Path,
    molecules: Sequence[MoleculeInput],
    outcomes: Sequence[Sequence[SampleOutcome]],
    *,
    failures: bool = False,
    mode: str = "w",
    first_index: int = 0,
) -> None:
    """Write samples as SDF or JSONL (every sample), by the suffix of `path`.

    SDF keeps only valid samples unless `failures` (then a failure is an atom-less record with
    its reason). `mode="a"` appends (evaluation writes molecule by molecule); `first_index` is
    the `molecule_index` of `molecules[0]`. `mode="w"` writes the file whole (temporary file, then rename).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".sdf":
        with _output(path, mode) as f:
            writer = Chem.SDWriter(f)
            for index, (mol_in, samples) in enumerate(zip(molecules, outcomes), first_index):
                for o in samples:
                    if o.mol is None and not failures:
                        continue
                    writer.write(_sdf_record(mol_in, index, o))
            writer.close()
    elif suffix == ".jsonl":
        with _output(path, mode) as f:
            for mol_in, samples in zip(molecules, outcomes):
                for o in samples:
                    f.write(
                        json.dumps(
                            {
                                "name": mol_in.name,
                                "canonical_smiles": mol_in.smiles,
                                "sample_index": o.sample_index,
                                "embedded_smiles": o.text if o.mol is not None else None,
                                "failure": o.failure,
                                "num_tokens": o.num_tokens,
                                "stereo_ok": (o.extra or {}).get("stereo_ok"),
                            }
                        )
                        + "\n"
                    )
    else:
        raise ValueError(f"{path}: unknown sample file type {suffix!r}; use one of {', '.join(SAMPLE_SUFFIXES)}")


def _output(path: Path, mode: str):
    return atomic_output(path, "w", encoding="utf-8") if mode == "w" else open(path, mode, encoding="utf-8")


def _sdf_record(mol_in: MoleculeInput, index: int, o: SampleOutcome) -> Chem.Mol:
    record = Chem.Mol(o.mol) if o.mol is not None else Chem.Mol()
    record.SetProp("_Name", mol_in.name)
    record.SetProp("smiles", mol_in.smiles)
    record.SetIntProp("molecule_index", index)
    record.SetIntProp("sample_index", o.sample_index)
    if o.failure is not None:
        record.SetProp("failure", o.failure)
        record.SetProp("text", o.text[:200].replace("\n", " "))
    for key, value in (o.extra or {}).items():
        record.SetProp(key, str(value))
    return record


def read_samples(path: Path) -> dict[str, list[SampleOutcome]]:
    """Samples written by `molgen3d generate` or `evaluate`, by canonical SMILES, failures included.

    SDF records with a `failure` prop are failures at their sample index. For an SDF of valid
    samples only, the failures come from the sidecar summary's per-molecule counts by reason
    and take the sample indices the SDF lacks (which failure had which index is not recorded).
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
    for outcome, smiles, _ in iter_sdf_samples(path):
        by_smiles.setdefault(smiles, []).append(outcome)
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


def iter_sdf_samples(path: Path, *, complete_only: bool = False):
    """(outcome, canonical SMILES, molecule_index or None) per record of a sample SDF, in file order, each checked.

    A record that RDKit cannot read, or that lacks the `smiles` prop, raises naming its line;
    with `complete_only`, a torn last record (a crash while writing) ends the file instead.
    """
    records = list(read_sdf(Path(path)))
    for n, record in enumerate(records):
        with BlockLogs():
            mol = Chem.MolFromMolBlock(record.text, removeHs=False, sanitize=True)
            props = _sdf_props(record.text)
        if mol is None or "smiles" not in props:
            if complete_only and n == len(records) - 1:
                return
            raise ValueError(
                f"{record.where}: unreadable sample record or no 'smiles' property; "
                "score SDFs written by `molgen3d generate` or `molgen3d evaluate`"
            )
        smiles = props["smiles"]
        try:
            sample_index = int(props.get("sample_index", n))
        except ValueError:
            raise ValueError(f"{record.where}: sample_index {props['sample_index']!r} is not an integer") from None
        failure = props.get("failure") or None
        if failure is None:
            failure = sample_failure(mol, smiles)
        extra = {k: v for k, v in props.items() if k in STORED_CHECKS}
        outcome = SampleOutcome(sample_index, None if failure else mol, failure, props.get("text", ""), 0, extra)
        index = props.get("molecule_index")
        yield outcome, smiles, int(index) if index is not None and index.lstrip("-").isdigit() else None


STORED_CHECKS = ("stereo_ok", "mmff")
"""Per-sample SDF props written next to the coordinates and read back as they are."""


def _sdf_props(block: str) -> dict[str, str]:
    """The `> <name>` data items of one SDF record (read from the text, so an atom-less record keeps them)."""
    props, lines = {}, block.splitlines()
    for k, line in enumerate(lines):
        if line.startswith(">") and "<" in line and k + 1 < len(lines):
            name = line[line.index("<") + 1 : line.rindex(">")] if line.rindex(">") > line.index("<") else ""
            props[name] = lines[k + 1]
    return props


def _jsonl_sample(line: str, where: str) -> tuple[SampleOutcome, str]:
    """One line of a JSONL sample file -> (outcome, canonical SMILES).

    The molecule and sample index identify a sample, so when they are missing or of the wrong
    type the line is an error naming `where`; anything wrong in the rest of the line is a failure.
    """
    try:
        rec = json.loads(line)
        smiles, sample_index = rec["canonical_smiles"], rec["sample_index"]
        if not isinstance(smiles, str) or isinstance(sample_index, bool) or not isinstance(sample_index, int):
            raise TypeError("canonical_smiles must be a string and sample_index an integer")
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{where}: not a sample line of `molgen3d generate` ({type(exc).__name__}: {exc}); "
            "each line needs canonical_smiles, sample_index, embedded_smiles and failure"
        ) from exc
    text, failure, num_tokens = rec.get("embedded_smiles"), rec.get("failure"), rec.get("num_tokens", 0)
    if not isinstance(num_tokens, int) or isinstance(num_tokens, bool):
        num_tokens, failure = 0, failure or BAD_FIELD
    if failure is not None and not isinstance(failure, str):
        failure = BAD_FIELD
    if text is not None and not isinstance(text, str):
        return SampleOutcome(sample_index, None, BAD_FIELD, repr(text)[:120], num_tokens), smiles
    mol = None
    if text is not None and failure is None:
        try:
            mol = decode(text)
        except (EnrichedSmilesError, ValueError, OverflowError):
            failure = PARSE_ERROR
        else:
            failure = sample_failure(mol, smiles, graph_text=strip_coordinates(text))
            if failure is not None:
                mol = None
    if mol is None and failure is None:
        failure = MISSING
    return SampleOutcome(sample_index, mol, failure, text or "", num_tokens), smiles
