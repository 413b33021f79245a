"""One JSONL line -> the training unit's text, or the reason it is skipped. Cheap on purpose.

Every line the packed dataset reads passes through `parse_line`; its checks must cost little
next to tokenizing (`benchmarks/dataloader.py` measures it), so they are text checks plus one
unsanitized RDKit parse, never a full decode.
"""

from __future__ import annotations

import json
import re

from rdkit import Chem
from rdkit.rdBase import BlockLogs

from molgen3D.chem.coordinate_format import COORDINATE_BLOCK
from molgen3D.chem.tagged_text import EOT, format_unit

FIELDS = ("canonical_smiles", "embedded_smiles")
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
    "coordinates_mismatch",  # the number of <x,y,z> blocks differs from the atoms of canonical_smiles
)
_STRAY_BRACKET = re.compile(r"<(?!-)|(?<!-)>|,")  # what remains of a broken block; `<-`/`->` are dative bonds
_SMILES_PARAMS = Chem.SmilesParserParams()
_SMILES_PARAMS.sanitize = False
_SMILES_PARAMS.removeHs = False


def parse_line(raw: bytes, min_emb_len: int) -> tuple[str | None, str | None, str]:
    """One JSONL line -> `(unit_text, None, "")`, or `(None, reason, detail)` when it is skipped."""
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
    """("", "") for a unit the model should see, else (reason, detail). Cheap on purpose.

    An unsanitized RDKit parse of the SMILES (syntax, not chemistry) and a count of well-formed
    coordinate blocks against its atoms; the full decode would cost more than tokenizing.
    """
    rest, blocks = COORDINATE_BLOCK.subn("", embedded)
    stray = _STRAY_BRACKET.search(rest)
    if stray:
        at = stray.start()
        return "bad_coordinates", f"malformed coordinate block near {rest[max(0, at - 10) : at + 20]!r}"
    with BlockLogs():
        mol = Chem.MolFromSmiles(canonical, _SMILES_PARAMS)
    if mol is None:
        return "bad_smiles", f"RDKit cannot parse canonical_smiles {canonical[:80]!r}"
    if mol.GetNumAtoms() != blocks:
        return "coordinates_mismatch", f"{blocks} coordinate blocks for {mol.GetNumAtoms()} atoms"
    return "", ""
