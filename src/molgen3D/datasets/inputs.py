"""Read molecule inputs: SMILES lists (.smi, .csv, .tsv) and 3D SDF files, plain or gzipped; GEOM is geom.py.

Every record carries its `file:line` and the name the file gives it (an SDF title, the second
column of a .smi, a `name`/`id`/`title` column), so a skipped molecule can be reported where it
came from and a written one keeps its name. A truncated or corrupt file is an InputError naming
the file and the record, never a bare EOFError from the decompressor.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rdkit import RDConfig

SMILES_SUFFIXES = {".smi": None, ".smiles": None, ".txt": None, ".csv": ",", ".tsv": "\t"}
SDF_SUFFIXES = {".sdf", ".sd", ".mol"}
HEADER_NAMES = ("smiles", "canonical_smiles", "smi")
NAME_HEADERS = ("name", "id", "title", "mol_name")
_CORRUPT = (EOFError, zlib.error, gzip.BadGzipFile, OSError)


class InputError(ValueError):
    """The input file cannot be read as molecules; the message names the file and the fix."""


@dataclass(frozen=True)
class Record:
    """One molecule as read: its text (SMILES or a mol block) and where it came from."""

    text: str
    where: str
    name: str = ""


def bundled_smiles_file() -> Path:
    """The 10,000 drug-like SMILES shipped inside the rdkit wheel (the embedded default data set)."""
    return Path(RDConfig.RDDataDir) / "Pains" / "test_data" / "wehi_mols.csv"


def input_kind(path: Path) -> str:
    """`smiles`, `sdf` or `geom` (a directory or a GEOM summary_*.json), from the suffix (`.gz` is ignored)."""
    if path.is_dir() or (path.name.startswith("summary") and path.suffix == ".json"):
        return "geom"
    suffix = inner_suffix(path)
    if suffix in SDF_SUFFIXES:
        return "sdf"
    if suffix in SMILES_SUFFIXES:
        return "smiles"
    known = ", ".join(sorted(set(SMILES_SUFFIXES) | SDF_SUFFIXES))
    raise InputError(
        f"{path}: unknown input type {suffix!r}; use one of {known} (optionally .gz), or a GEOM rdkit_folder, "
        f"its summary_*.json or a folder of its pickles"
    )


def inner_suffix(path: Path) -> str:
    """The file's type suffix, lower case, under a `.gz` (`mols.SDF.gz` -> `.sdf`)."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return os.path.splitext(name)[1]


def _open_text(path: Path) -> io.TextIOBase:
    if not path.is_file():
        raise InputError(f"{path}: input file not found")
    raw = gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")  # a BOM is not text


class _Truncated(InputError):
    """Reading stopped at a damaged byte; `line` is the first line that could not be read."""

    def __init__(self, path: Path, line: int, err: Exception):
        self.line = line
        self.path = path
        self.cause = f"{type(err).__name__}: {err}"
        super().__init__(f"{path}: truncated or corrupt at line {line} ({self.cause}); re-create or re-download it")


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a text file; a damaged or cut-off (gzip) file raises _Truncated."""
    number = 0
    with _open_text(path) as f:
        try:
            for number, line in enumerate(f, start=1):
                yield number, line
        except _CORRUPT as err:
            raise _Truncated(path, number + 1, err) from None


def read_smiles(path: Path, column: str | None = None) -> Iterator[Record]:
    """SMILES records of a .smi/.csv/.tsv file; blank lines yield an empty record (counted by the caller).

    `column` names the SMILES column of a file with a header. Without it, a header cell named
    `smiles` (or `canonical_smiles`, `smi`; any case) is used when present, else the first column
    of a header-less file.
    """
    delimiter = SMILES_SUFFIXES[inner_suffix(path)]
    name = path.name
    lines = _numbered_lines(path)
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
        has_header = True
    else:
        found = [i for i, cell in enumerate(lowered) if cell in HEADER_NAMES]
        index = found[0] if found else 0
        has_header = bool(found)
    names = [i for i, cell in enumerate(lowered) if cell in NAME_HEADERS and i != index] if has_header else []
    name_index = names[0] if names else (None if has_header or delimiter is not None else 1)
    rest = lines if has_header else itertools.chain([first], lines)
    for number, line in rest:
        cells = _split(line, delimiter)
        text = cells[index].strip() if index < len(cells) else ""
        title = cells[name_index].strip() if name_index is not None and name_index < len(cells) else ""
        yield Record(text, f"{name}:{number}", title)


def _split(line: str, delimiter: str | None) -> list[str]:
    line = line.rstrip("\r\n")
    if delimiter is None:
        return line.split()
    return next(csv.reader([line], delimiter=delimiter), [])


def read_sdf(path: Path) -> Iterator[Record]:
    """Mol blocks of an SDF file, each with the line its record starts on."""
    name = path.name
    block: list[str] = []
    start = 1
    try:
        for number, line in _numbered_lines(path):
            if line.startswith("$$$$"):
                yield Record("".join(block), f"{name}:{start}", block[0].strip() if block else "")
                block, start = [], number + 1
            else:
                block.append(line)
    except _Truncated as err:
        raise InputError(
            f"{path}: truncated or corrupt in the record starting at line {start} (line {err.line}: {err.cause}); "
            f"records before it are intact; re-create or re-download the file"
        ) from None
    if any(line.strip() for line in block):
        yield Record("".join(block), f"{name}:{start}", block[0].strip())
