"""The conformer text ("enriched SMILES"): canonical SMILES with coordinates after every atom.

`C[NH2+]C` with a conformer becomes `[C]<x,y,z>[NH2+]<x,y,z>[C]<x,y,z>`:
every atom token is bracketed and followed at once by its coordinates, truncated toward zero
to a fixed number of decimals; everything else in the SMILES is copied unchanged. Deleting the
`<...>` blocks and un-bracketing plain atoms gives back the canonical SMILES, so the model's
prompt (the SMILES) and its answer (the conformer) share one atom order.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import ROUND_DOWN, Context, Decimal

from rdkit import Chem
from rdkit.rdBase import BlockLogs
from rdkit.Geometry import Point3D

__all__ = [
    "EnrichedSmilesError",
    "PLAIN_ATOMS",
    "SmilesToken",
    "coordinate_template",
    "decode",
    "encode",
    "encode_conformers",
    "format_coordinate",
    "strip_coordinates",
    "tokenize_smiles",
]

# Atoms SMILES writes without brackets (the organic subset, aromatic forms, the wildcard).
PLAIN_ATOMS = frozenset({"B", "C", "N", "O", "P", "S", "F", "Cl", "Br", "I", "b", "c", "n", "o", "p", "s", "*"})

# One SMILES token per match. Bracket atoms first; `Cl`/`Br` before `C`/`B`; `->`/`<-` are
# dative bonds; `%nn` and `%(n...)` are two-or-more-digit ring closures.
_SMILES_TOKEN = re.compile(
    r"(?P<bracket>\[[^\[\]<>]*\])"
    r"|(?P<plain>Cl|Br|[BCNOPSFI]|[bcnops]|\*)"
    r"|(?P<ring>%\(\d+\)|%\d\d|\d)"
    r"|(?P<other>->|<-|[-=#$:/\\.~()])"
)

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_COORDS = re.compile(rf"<({_NUMBER}),({_NUMBER}),({_NUMBER})>")

# A bracket atom: isotope, element symbol, chirality, H count, charge, atom map.
_BRACKET_ATOM = re.compile(
    r"\[(?P<isotope>\d+)?(?P<symbol>[A-Z][a-z]?|[a-z][a-z]?|\*)"
    r"(?P<chiral>@(?:@|TH[12]|AL[12]|SP[123]|TB\d{1,2}|OH\d{1,2})?)?"
    r"(?P<hcount>H\d*)?(?P<charge>[-+]+\d*)?(?::\d+)?\]"
)
_WIDE = Context(prec=400)  # enough digits to quantize any finite float
_AROMATIC_SYMBOLS = frozenset({"b", "c", "n", "o", "p", "s", "se", "te", "as", "si"})


class EnrichedSmilesError(ValueError):
    """Malformed or unrepresentable conformer text; `.position` is the character offset of the problem."""

    def __init__(self, message: str, position: int, text: str = ""):
        self.position = position
        self.text = text
        context = f" near {text[max(0, position - 15) : position + 15]!r}" if text else ""
        super().__init__(f"at position {position}: {message}{context}")


@dataclass(frozen=True)
class SmilesToken:
    """One SMILES token: an atom (`C`, `Cl`, `[nH]`) or anything else (bond, ring closure, branch, `.`)."""

    text: str
    start: int
    is_atom: bool


def tokenize_smiles(smiles: str) -> list[SmilesToken]:
    """Split a SMILES into atom and non-atom tokens; raises EnrichedSmilesError at the first bad character."""
    tokens: list[SmilesToken] = []
    pos = 0
    while pos < len(smiles):
        match = _SMILES_TOKEN.match(smiles, pos)
        if match is None:
            raise EnrichedSmilesError(f"unexpected character {smiles[pos]!r} in SMILES", pos, smiles)
        kind = match.lastgroup
        tokens.append(SmilesToken(match.group(), pos, kind in ("bracket", "plain")))
        pos = match.end()
    return tokens


def format_coordinate(value: float, precision: int = 4) -> str:
    """`value` truncated toward zero to `precision` decimals, always that many digits, never `-0`.

    Truncation starts from the shortest decimal repr of the float, so 1.23 (stored as
    1.22999...) gives 1.2300, not 1.2299.
    """
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"coordinate {value!r} is not finite")
    truncated = Decimal(repr(value)).quantize(Decimal(1).scaleb(-precision), rounding=ROUND_DOWN, context=_WIDE)
    if truncated.is_zero():
        truncated = truncated.copy_abs()
    return f"{truncated:f}"


def _atom_order(mol: Chem.Mol) -> list[int]:
    return [int(i) for i in re.findall(r"\d+", mol.GetProp("_smilesAtomOutputOrder"))]


def _segments(smiles: str) -> list[str]:
    """Literal text between coordinate blocks: the SMILES with every atom bracketed, cut after each atom."""
    segments = [""]
    for token in tokenize_smiles(smiles):
        if not token.is_atom:
            segments[-1] += token.text
            continue
        if token.text.startswith("["):
            if token.text[1:-1] in PLAIN_ATOMS:
                raise EnrichedSmilesError(
                    f"RDKit wrote the bracket atom {token.text} (e.g. a radical), which the format cannot tell "
                    f"apart from plain {token.text[1:-1]}; this molecule has no enriched SMILES",
                    token.start,
                    smiles,
                )
            segments[-1] += token.text
        else:
            segments[-1] += f"[{token.text}]"
        segments.append("")
    return segments


def encode(mol: Chem.Mol, conf_id: int = -1, precision: int = 4) -> str:
    """The enriched SMILES of one conformer of `mol` (ordinary hydrogens are removed first)."""
    if mol.GetNumConformers() == 0:
        raise ValueError("molecule has no conformer; embed it first (e.g. rdDistGeom.EmbedMolecule)")
    return encode_conformers(mol, [mol.GetConformer(conf_id).GetId()], precision)[0]


def encode_conformers(mol: Chem.Mol, conf_ids: list[int] | None = None, precision: int = 4) -> list[str]:
    """`encode` for several conformers (all by default), canonicalising the molecule once."""
    if precision < 0:
        raise ValueError(f"precision must be >= 0, got {precision}")
    if mol.GetNumConformers() == 0:
        raise ValueError("molecule has no conformer; embed it first (e.g. rdDistGeom.EmbedMolecule)")
    heavy = Chem.RemoveHs(mol)
    smiles = Chem.MolToSmiles(heavy, isomericSmiles=True, canonical=True)
    order = _atom_order(heavy)
    segments = _segments(smiles)
    if len(segments) - 1 != len(order):
        raise ValueError(f"SMILES {smiles!r} has {len(segments) - 1} atom tokens but {len(order)} atoms were written")
    ids = [conf.GetId() for conf in heavy.GetConformers()] if conf_ids is None else conf_ids
    texts = []
    for conf_id in ids:
        conf = heavy.GetConformer(conf_id)
        parts = [segments[0]]
        for atom_idx, segment in zip(order, segments[1:]):
            p = conf.GetAtomPosition(atom_idx)
            parts.append(
                f"<{format_coordinate(p.x, precision)},{format_coordinate(p.y, precision)},"
                f"{format_coordinate(p.z, precision)}>{segment}"
            )
        texts.append("".join(parts))
    return texts


def coordinate_template(smiles: str) -> list[str]:
    """The literal segments around the coordinate blocks of any conformer of `smiles`.

    `text == seg[0] + "<x,y,z>" + seg[1] + ... + "<x,y,z>" + seg[n]` with n heavy atoms, for
    `text = encode(conformer)`. `smiles` is canonicalised first, so any spelling of a molecule
    gives its template; a canonical SMILES (a data line's `canonical_smiles`, the prompt) is its
    own canonical form.
    """
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise EnrichedSmilesError(f"RDKit cannot parse SMILES {smiles!r}", 0, smiles)
    return _segments(Chem.MolToSmiles(mol))


@dataclass(frozen=True)
class _Parsed:
    smiles: str
    atom_starts: list[int]  # text offset of each atom's bracket token
    coords: list[tuple[float, float, float]]


def _parse(text: str) -> _Parsed:
    smiles_parts: list[str] = []
    atom_starts: list[int] = []
    coords: list[tuple[float, float, float]] = []
    depth: list[int] = []
    open_rings: dict[str, int] = {}
    pos = 0
    if not text:
        raise EnrichedSmilesError("empty conformer text", 0, text)
    while pos < len(text):
        match = _SMILES_TOKEN.match(text, pos)
        if match is None or match.lastgroup == "plain":
            what = "an unbracketed atom" if match else "an unexpected character"
            raise EnrichedSmilesError(f"{what} {text[pos]!r}; every atom must be written [X]<x,y,z>", pos, text)
        token, kind = match.group(), match.lastgroup
        written = token
        if kind == "bracket":
            atom = _BRACKET_ATOM.fullmatch(token)
            if atom is None:
                raise EnrichedSmilesError(f"malformed atom {token}", pos, text)
            _check_element(atom.group("symbol"), token, pos, text)
            if token[1:-1] in PLAIN_ATOMS:
                written = token[1:-1]
            block = _COORDS.match(text, match.end())
            if block is None:
                where = match.end()
                raise EnrichedSmilesError(f"atom {token} must be followed by <x,y,z> coordinates", where, text)
            xyz = tuple(float(v) for v in block.groups())
            if not all(math.isfinite(v) for v in xyz):
                raise EnrichedSmilesError(f"coordinates of atom {token} are not finite", match.end(), text)
            atom_starts.append(pos)
            coords.append(xyz)  # type: ignore[arg-type]
            end = block.end()
        else:
            end = match.end()
            if token == "(":
                depth.append(pos)
            elif token == ")":
                if not depth:
                    raise EnrichedSmilesError("')' closes no branch", pos, text)
                depth.pop()
            elif kind == "ring":
                if not atom_starts:
                    raise EnrichedSmilesError(f"ring closure {token} before any atom", pos, text)
                if token in open_rings:
                    del open_rings[token]
                else:
                    open_rings[token] = pos
        smiles_parts.append(written)
        pos = end
    if depth:
        raise EnrichedSmilesError("'(' opens a branch that is never closed", depth[-1], text)
    if open_rings:
        label, where = min(open_rings.items(), key=lambda kv: kv[1])
        raise EnrichedSmilesError(f"ring closure {label} is opened but never closed", where, text)
    if not atom_starts:
        raise EnrichedSmilesError("no atoms", 0, text)
    return _Parsed("".join(smiles_parts), atom_starts, coords)


_ELEMENTS = frozenset(Chem.GetPeriodicTable().GetElementSymbol(z) for z in range(1, 119))


def _check_element(symbol: str, token: str, pos: int, text: str) -> None:
    if symbol == "*":
        return
    if symbol[0].islower():
        if symbol not in _AROMATIC_SYMBOLS:
            raise EnrichedSmilesError(f"unknown aromatic atom {token}", pos, text)
    elif symbol not in _ELEMENTS:
        raise EnrichedSmilesError(f"unknown element {symbol!r} in atom {token}", pos, text)


def strip_coordinates(text: str) -> str:
    """The canonical SMILES the text came from: `<...>` blocks deleted, plain atoms un-bracketed."""
    return _parse(text).smiles


def _mol_from_smiles(parsed: _Parsed, text: str) -> Chem.Mol:
    """Parse with explicit H atoms kept (they carry coordinates); chemistry errors point at their atom.

    `DetectChemistryProblems` misses some failures of the sanitizing parse (a `$` bond in an
    aromatic ring), so a failed parse is re-run as `SanitizeMol` to learn what and where.
    """
    params = Chem.SmilesParserParams()
    params.removeHs = False
    params.sanitize = False
    with BlockLogs():
        raw = Chem.MolFromSmiles(parsed.smiles, params)
        if raw is None:
            raise EnrichedSmilesError(f"RDKit cannot parse the SMILES {parsed.smiles!r}", 0, text)
        problems = Chem.DetectChemistryProblems(raw)
        if problems:
            raise _chemistry_error(problems[0], parsed, text)
        params.sanitize = True
        mol = Chem.MolFromSmiles(parsed.smiles, params)
        if mol is None:
            try:
                Chem.SanitizeMol(raw)
            except Chem.MolSanitizeException as err:
                raise _chemistry_error(err.cause, parsed, text) from None
            raise EnrichedSmilesError(f"RDKit cannot sanitize the SMILES {parsed.smiles!r}", 0, text)
    return mol


def _chemistry_error(problem, parsed: _Parsed, text: str) -> EnrichedSmilesError:
    """The error for an RDKit sanitization problem, at the text offset of its (first) atom."""
    if hasattr(problem, "GetAtomIndices"):  # kekulization: the atoms of the ring system
        indices = list(problem.GetAtomIndices())
    elif hasattr(problem, "GetAtomIdx"):
        indices = [problem.GetAtomIdx()]
    else:
        indices = []
    where = parsed.atom_starts[indices[0]] if indices and indices[0] < len(parsed.atom_starts) else 0
    return EnrichedSmilesError(f"invalid chemistry: {problem.Message()}", where, text)


def decode(text: str) -> Chem.Mol:
    """The heavy-atom molecule with one 3D conformer; raises EnrichedSmilesError naming the position."""
    parsed = _parse(text)
    mol = _mol_from_smiles(parsed, text)
    if mol.GetNumAtoms() != len(parsed.coords):
        raise EnrichedSmilesError(
            f"{len(parsed.coords)} coordinate blocks but RDKit built {mol.GetNumAtoms()} atoms", 0, text
        )
    conf = Chem.Conformer(mol.GetNumAtoms())
    conf.Set3D(True)
    for idx, (x, y, z) in enumerate(parsed.coords):
        conf.SetAtomPosition(idx, Point3D(x, y, z))
    mol.AddConformer(conf, assignId=True)
    return mol
