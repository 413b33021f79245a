"""Read molecule inputs: SMILES lists (.smi, .csv, .tsv) and 3D SDF files, plain or gzipped.

Every record carries its `file:line`, so a skipped molecule can be reported where it came from.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rdkit import RDConfig

SMILES_SUFFIXES = {".smi": None, ".smiles": None, ".txt": None, ".csv": ",", ".tsv": "\t"}
SDF_SUFFIXES = {".sdf", ".sd", ".mol"}
HEADER_NAMES = ("smiles", "canonical_smiles", "smi")


class InputError(ValueError):
    """The input file cannot be read as molecules; the message names the file and the fix."""


@dataclass(frozen=True)
class Record:
    """One molecule as read: its text (SMILES or a mol block) and where it came from."""

    text: str
    where: str


def bundled_smiles_file() -> Path:
    """The 10,000 drug-like SMILES shipped inside the rdkit wheel (the embedded default data set)."""
    return Path(RDConfig.RDDataDir) / "Pains" / "test_data" / "wehi_mols.csv"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_kind(path: Path) -> str:
    """`smiles` or `sdf`, from the suffix (a trailing `.gz` is ignored)."""
    suffix = _inner_suffix(path)
    if suffix in SDF_SUFFIXES:
        return "sdf"
    if suffix in SMILES_SUFFIXES:
        return "smiles"
    known = ", ".join(sorted(set(SMILES_SUFFIXES) | SDF_SUFFIXES))
    raise InputError(f"{path}: unknown input type {suffix!r}; use one of {known} (optionally .gz)")


def _inner_suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return os.path.splitext(name)[1]


def _open_text(path: Path) -> io.TextIOBase:
    if not path.is_file():
        raise InputError(f"{path}: input file not found")
    raw = gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")


def read_smiles(path: Path, column: str | None = None) -> Iterator[Record]:
    """SMILES records of a .smi/.csv/.tsv file; blank lines yield an empty record (counted by the caller).

    `column` names the SMILES column of a file with a header. Without it, a header cell named
    `smiles` (or `canonical_smiles`, `smi`; any case) is used when present, else the first column
    of a header-less file.
    """
    delimiter = SMILES_SUFFIXES[_inner_suffix(path)]
    name = path.name
    with _open_text(path) as f:
        lines = enumerate(f, start=1)
        first = next(lines, None)
        if first is None:
            return
        header = _split(first[1], delimiter)
        lowered = [cell.strip().lower() for cell in header]
        if column is not None:
            if column.lower() not in lowered:
                raise InputError(
                    f"{path}:1: no column {column!r} in the header {header}; pass --smiles-column with one of them"
                )
            index = lowered.index(column.lower())
            rest = lines
        else:
            found = [i for i, cell in enumerate(lowered) if cell in HEADER_NAMES]
            index = found[0] if found else 0
            rest = lines if found else itertools.chain([first], lines)
        for number, line in rest:
            cells = _split(line, delimiter)
            text = cells[index].strip() if index < len(cells) else ""
            yield Record(text, f"{name}:{number}")


def _split(line: str, delimiter: str | None) -> list[str]:
    line = line.rstrip("\r\n")
    if delimiter is None:
        return line.split()
    return next(csv.reader([line], delimiter=delimiter), [])


def read_sdf(path: Path) -> Iterator[Record]:
    """Mol blocks of an SDF file, each with the line its record starts on."""
    name = path.name
    with _open_text(path) as f:
        block: list[str] = []
        start = 1
        for number, line in enumerate(f, start=1):
            if line.startswith("$$$$"):
                yield Record("".join(block), f"{name}:{start}")
                block, start = [], number + 1
            else:
                block.append(line)
        if any(line.strip() for line in block):
            yield Record("".join(block), f"{name}:{start}")
