"""One JSONL line -> the training unit's text, or the reason it is skipped. Cheap on purpose.

Every line the packed dataset reads passes through `parse_line`; its checks must cost little
next to tokenizing (`benchmarks/dataloader.py` measures it), so they are text checks plus one
unsanitized RDKit parse, never a full decode.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter

from rdkit import Chem
from rdkit.rdBase import BlockLogs

from molgen3D.chem.coordinate_format import COORDINATE_BLOCK, MAX_ABS_COORDINATE
from molgen3D.chem.enriched_smiles import PLAIN_ATOMS
from molgen3D.chem.tagged_text import EOT, format_unit

FIELDS = ("canonical_smiles", "embedded_smiles")
BOM = b"\xef\xbb\xbf"
SKIP_REASONS = (
    "blank_line",  # empty or whitespace-only line
    "bad_utf8",  # bytes that are not UTF-8
    "bad_json",  # not a JSON object
    "missing_field",  # a field of FIELDS absent or not a string
    "empty_field",  # a field of FIELDS empty or whitespace
    "too_short",  # embedded_smiles shorter than min_emb_len characters
    "contains_eot",  # the text holds <|endoftext|>, which would fake a unit boundary
    "too_long",  # longer than seq_len - 1 tokens with truncate_overflow_units=False
    "bad_smiles",  # canonical_smiles that RDKit cannot parse (even unsanitized)
    "bad_coordinates",  # a malformed <x,y,z> block in embedded_smiles
    "coordinates_mismatch",  # not one <x,y,z> block right after each atom of embedded_smiles
    "smiles_mismatch",  # embedded_smiles without its blocks is not canonical_smiles (another molecule's conformer)
    "coordinate_out_of_range",  # a coordinate with |x| > MAX_ABS_COORDINATE, which sampling rejects
    "line_too_long",  # a line over max_line_bytes, skipped before it is read
)
_STRAY_BRACKET = re.compile(r"<(?!-)|(?<!-)>|,")  # what remains of a broken block; `<-`/`->` are dative bonds
_BRACKETED_PLAIN = tuple((f"[{a}]", a) for a in sorted(PLAIN_ATOMS))  # atoms SMILES writes without brackets
_BELOW_1000 = r"-?\d{1,3}(?:\.\d+)?"
_BOUNDED_BLOCK = re.compile(rf"<{_BELOW_1000},{_BELOW_1000},{_BELOW_1000}>")
"""The blocks data preparation writes, integer parts of at most 3 digits: one fast pass removes the blocks of a
normal unit; anything it leaves (a coordinate of 1000 or more, `+1`, `.5`, a broken block) gets `COORDINATE_BLOCK`
and an exact look."""
_SMILES_SYNTAX = re.compile(r"(?:\[[^\[\]<>]+\]|Cl|Br|[BCNOPSFI]|[bcnops]|\*|%\(\d+\)|%\d\d|\d|->|<-|[-=#$:/\\.~()])+")
_BRACKET_ATOM = re.compile(r"\[[^\[\]]*\]")
_RING_LABEL = re.compile(r"%\(\d+\)|%\d\d|\d")
_SMILES_PARAMS = Chem.SmilesParserParams()
_SMILES_PARAMS.sanitize = False
_SMILES_PARAMS.removeHs = False


def parse_line(raw: bytes, min_emb_len: int) -> tuple[str | None, str | None, str]:
    """One JSONL line -> `(unit_text, None, "")`, or `(None, reason, detail)` when it is skipped.

    A UTF-8 byte order mark (which editors put before a file's first line) is not part of the line.
    """
    if raw.startswith(BOM):
        raw = raw[len(BOM) :]
    if not raw.strip():
        return None, "blank_line", "blank line"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return None, "bad_utf8", f"byte {err.start} is not UTF-8"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        return None, "bad_json", f"malformed JSON ({err.msg} at column {err.colno})"
    if not isinstance(record, dict):
        return None, "bad_json", f"expected a JSON object, got {type(record).__name__}"
    values = []
    for name in FIELDS:
        value = record.get(name)
        if not isinstance(value, str):
            return None, "missing_field", f"field {name!r} is missing or not a string"
        if not value.strip():
            return None, "empty_field", f"field {name!r} is empty"
        values.append(value)
    canonical, embedded = values
    if len(embedded) < min_emb_len:
        return None, "too_short", f"embedded_smiles has {len(embedded)} characters < min_emb_len={min_emb_len}"
    if EOT in canonical or EOT in embedded:
        return None, "contains_eot", f"text contains {EOT}"
    reason, detail = check_unit(canonical, embedded)
    if reason:
        return None, reason, detail
    return format_unit(canonical, embedded), None, ""


def check_unit(canonical: str, embedded: str) -> tuple[str, str]:
    """("", "") for a unit the model should see, else (reason, detail). Cheap on purpose: text checks, no decode.

    - every `<x,y,z>` block well formed and right after its atom, one per atom (each atom of the text
      is bracketed, so `[` counts atoms);
    - no coordinate beyond `MAX_ABS_COORDINATE`, the bound sampling uses (`COORDINATE_BLOCK` takes
      any run of digits);
    - the text is the conformer of `canonical`: its blocks deleted and plain atoms un-bracketed give
      `canonical` back (the rule the text is written by; every coordinate format changes only the
      numbers), so graph and elements agree without parsing either;
    - `canonical` is SMILES: known tokens, balanced branches, paired ring labels, bracket atoms RDKit reads.

    The common case is a few regex passes; RDKit parses a unit only when one of them fails, to say why.
    """
    rest, blocks = _BOUNDED_BLOCK.subn("", embedded)
    if _STRAY_BRACKET.search(rest):
        rest, blocks = COORDINATE_BLOCK.subn("", embedded)
        stray = _STRAY_BRACKET.search(rest)
        if stray:
            at = stray.start()
            return "bad_coordinates", f"malformed coordinate block near {rest[max(0, at - 10) : at + 20]!r}"
        for block in COORDINATE_BLOCK.finditer(embedded):
            if max(abs(float(v)) for v in block.groups()) > MAX_ABS_COORDINATE:
                shown = block.group(0) if len(block.group(0)) < 60 else block.group(0)[:57] + "..."
                return "coordinate_out_of_range", f"{shown} has a coordinate beyond +-{MAX_ABS_COORDINATE:g} A"
    atoms = rest.count("[")
    if atoms != blocks or embedded.count("]<") != blocks:
        return "coordinates_mismatch", f"{blocks} coordinate blocks for {atoms} atoms, not one right after each"
    graph = _unbracket(rest)
    same = graph == canonical or graph == _unbracket(canonical)
    if same and _looks_like_smiles(canonical):
        return "", ""
    with BlockLogs():
        mol = Chem.MolFromSmiles(canonical, _SMILES_PARAMS)
    if mol is None:
        return "bad_smiles", f"RDKit cannot parse canonical_smiles {canonical[:80]!r}"
    if not same:
        if mol.GetNumAtoms() != blocks:
            return "coordinates_mismatch", f"{blocks} coordinate blocks for {mol.GetNumAtoms()} atoms"
        return "smiles_mismatch", f"the coordinates are of {graph[:80]!r}, not of canonical_smiles {canonical[:80]!r}"
    return "", ""  # RDKit reads what the cheap syntax check doubted


def _unbracket(text: str) -> str:
    """`[C]` -> `C` for every plain atom (str.replace: a few times faster than a regex substitution here)."""
    for bracketed, plain in _BRACKETED_PLAIN:
        text = text.replace(bracketed, plain)
    return text


def _looks_like_smiles(smiles: str) -> bool:
    """Known tokens only, as many `(` as `)`, each ring label used an even number of times, readable bracket atoms."""
    if _SMILES_SYNTAX.fullmatch(smiles) is None or smiles.count("(") != smiles.count(")"):
        return False
    bare = smiles
    if "[" in smiles:
        if not all(_bracket_atom_ok(atom) for atom in _BRACKET_ATOM.findall(smiles)):
            return False
        bare = _BRACKET_ATOM.sub("", smiles)
    labels = _RING_LABEL.findall(bare)
    return not labels or all(n % 2 == 0 for n in Counter(labels).values())


@functools.lru_cache(maxsize=4096)
def _bracket_atom_ok(atom: str) -> bool:
    """Whether RDKit reads a bracket atom (`[nH]`, `[C@@H]`, `[NH2+]`); a data set holds few distinct ones."""
    with BlockLogs():
        return Chem.MolFromSmiles(atom, _SMILES_PARAMS) is not None
