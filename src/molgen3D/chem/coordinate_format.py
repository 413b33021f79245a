"""How coordinates are written in conformer text: decimals, frame, and what a position is relative to.

Data preparation writes every conformer as stored, absolute, with 4 decimals. A `CoordinateFormat`
rewrites that text for training (`apply_format`) and turns a model's text back into absolute
coordinates (`to_absolute_text`) before it is decoded and scored. Only the numbers change: the
atoms, bonds, ring closures and the `<x,y,z>` grammar stay the same, so constrained decoding and
`enriched_smiles.decode` work on every format.

- `decimals`: truncation toward zero to d decimals moves each coordinate by < 10^-d A, an atom
  by < sqrt(3) * 10^-d A (0.017 A at d = 2, far below the 0.75 A coverage threshold).
- `frame = "canonical"`: centroid at the origin, axes along the principal axes of the heavy atoms
  (largest spread first), each axis pointed so the atoms' third moment along it is positive, and
  the third axis chosen so the rotation is proper: mirror images stay mirror images. A rigid
  motion, so aligned RMSD to the stored conformer is unchanged; only which numbers the model must
  write changes (the frame is a function of the molecule's shape, not of how it was stored).
- `positions = "relative"`: each atom is written as its offset from its parent in the SMILES tree
  (the atom it is bonded to on the left; the previous atom after a `.`; the first atom absolute).
  Offsets are taken from the parent's *written* position, so truncation errors never add up.
- `positions = "local"`: the same offset, but in a frame that follows the chain (`local_axes`):
  axis 1 along the bond from the grandparent to the parent, axis 2 in the plane of that bond and
  the bond before it (toward the atom before the grandparent; for a second branch at the same
  atom, toward the first branch instead), axis 3 their cross product. A bond length and angle
  then fix the first number and the radius of the other two; a torsion only turns them. So the
  numbers of a carbonyl or an aromatic ring are nearly the same in every molecule, which is what a
  small model can learn; in absolute or relative form they depend on where the chain is heading.
  Frames are built from *written* positions too, so truncation errors stay per atom; a wrong
  number from a model turns the rest of its branch (the drift `benchmarks/format_drift.py` measures).

Model folders, tokenizers and data sets record a format by its settings only, so the rules behind a
setting never change once released: a different frame rule is a new `positions` value.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from decimal import Decimal
from pathlib import Path
from typing import Literal

import numpy as np

from molgen3D.chem.dataset_manifest import find_manifest
from molgen3D.chem.enriched_smiles import (
    format_coordinate,
    strip_coordinates,
    tokenize_smiles,
)

__all__ = [
    "COORDINATE_BLOCK",
    "FORMAT_FILE",
    "ORIGINAL",
    "POSITIONS",
    "CoordinateFormat",
    "FormatMismatchError",
    "MAX_ABS_COORDINATE",
    "apply_format",
    "canonical_frame",
    "check_data_format",
    "check_same_format",
    "dataset_format",
    "from_local",
    "format_json",
    "from_relative",
    "local_axes",
    "read_format",
    "sampling_format",
    "smiles_parents",
    "to_absolute_text",
    "to_local",
    "to_relative",
    "write_format",
]

FORMAT_FILE = "coordinate_format.json"
"""Written next to a tokenizer, into an exported model folder and into a data set's manifest."""

POSITIONS = ("absolute", "relative", "local")
"""What a written position is measured from (see the module docstring)."""

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
COORDINATE_BLOCK = re.compile(rf"<({_NUMBER}),({_NUMBER}),({_NUMBER})>")

MAX_ABS_COORDINATE = 1000.0
"""A; the largest |x|, |y| or |z| conformer text may hold: sampling counts a sample beyond it as a failure
and the training loader skips a line beyond it. Drug-like molecules span tens of A, so no real conformer
comes near it; it is also the largest value the constrained grammar (3 integer digits) can write, so
constrained samples are never rejected by it, while 1e308-style text can no longer poison means."""
"""One well-formed `<x,y,z>` block (the loader counts them against the atoms)."""


class FormatMismatchError(ValueError):
    """A model, data set or option disagree on the coordinate format."""


@dataclass(frozen=True)
class CoordinateFormat:
    """A named, recorded way of writing coordinates (see the module docstring)."""

    decimals: int = 4
    """Digits after the decimal point, truncated toward zero."""
    frame: Literal["stored", "canonical"] = "stored"
    """`stored`: as the data holds them; `canonical`: centroid and principal axes, proper rotation."""
    positions: Literal["absolute", "relative", "local"] = "absolute"
    """`relative`: each atom as its offset from its SMILES-tree parent's written position;
    `local`: that offset in the frame of the bonds leading to the parent (`local_axes`)."""

    def __post_init__(self):
        if not 0 <= self.decimals <= 6:
            raise ValueError(f"CoordinateFormat.decimals must be in 0..6, got {self.decimals}")
        if self.frame not in ("stored", "canonical"):
            raise ValueError(f"CoordinateFormat.frame must be 'stored' or 'canonical', got {self.frame!r}")
        if self.positions not in POSITIONS:
            raise ValueError(f"CoordinateFormat.positions must be one of {POSITIONS}, got {self.positions!r}")

    @property
    def name(self) -> str:
        return f"d{self.decimals}-{self.frame}-{self.positions}"

    @property
    def max_atom_error(self) -> float:
        """Largest distance (A) truncation can move one atom: sqrt(3) * 10^-decimals."""
        return math.sqrt(3) * 10.0**-self.decimals

    def to_dict(self) -> dict:
        return {"name": self.name, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict, where: str = "coordinate format") -> CoordinateFormat:
        """Inverse of `to_dict`; unknown keys are an error naming `where`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"name"})
        if unknown:
            raise ValueError(f"{where}: unknown coordinate format keys {unknown}; known: {sorted(known)}")
        fmt = cls(**{k: v for k, v in data.items() if k in known})
        if "name" in data and data["name"] != fmt.name:
            raise ValueError(f"{where}: name {data['name']!r} does not match its settings ({fmt.name})")
        return fmt


ORIGINAL = CoordinateFormat()
"""What data preparation writes and what Qwen3-BPE runs train on: 4 decimals, as stored, absolute."""


def format_json(fmt: CoordinateFormat) -> str:
    """The text of a `coordinate_format.json` recording `fmt`."""
    return json.dumps(fmt.to_dict(), indent=2) + "\n"


def write_format(directory: str | Path, fmt: CoordinateFormat) -> Path:
    """Record `fmt` as `<directory>/coordinate_format.json`."""
    path = Path(directory) / FORMAT_FILE
    path.write_text(format_json(fmt), encoding="utf-8")
    return path


def read_format(directory: str | Path) -> CoordinateFormat | None:
    """The format recorded in `directory`, or None when it records none (older folders: the original)."""
    path = Path(directory) / FORMAT_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(
            f"{path}: not valid JSON ({exc}); rewrite it or delete it to mean the original format"
        ) from None
    return CoordinateFormat.from_dict(data, str(path))


def smiles_parents(smiles: str) -> list[int]:
    """For each atom in writing order, the index of the atom it hangs from in the SMILES tree (-1: none).

    The parent is the previous atom on the same branch: `(` remembers the branch point and `)`
    returns to it; ring closures do not change it; after `.` the previous atom is used, so a
    salt's second fragment is still written near the first.
    """
    parents: list[int] = []
    stack: list[int] = []
    previous = -1
    for token in tokenize_smiles(smiles):
        if token.is_atom:
            parents.append(previous)
            previous = len(parents) - 1
        elif token.text == "(":
            stack.append(previous)
        elif token.text == ")":
            if not stack:
                raise ValueError(f"')' at position {token.start} of {smiles!r} closes no branch")
            previous = stack.pop()
    return parents


def canonical_frame(coords: np.ndarray) -> np.ndarray:
    """`coords` (N, 3) moved to the canonical frame: centroid 0, principal axes, proper rotation.

    Axis signs: each of the first two axes points where the cube of the atoms' projections sums
    positive (ties broken by the first atom with a clear projection); the third is their cross
    product, so the map is a rotation (det +1) and chirality is kept.
    """
    xyz = np.asarray(coords, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"coordinates must be (N, 3), got {xyz.shape}")
    centred = xyz - xyz.mean(axis=0)
    if len(xyz) < 2:
        return centred
    _, vectors = np.linalg.eigh(centred.T @ centred)
    axes = vectors[:, ::-1].T.copy()  # rows: largest spread first
    for k in range(2):
        proj = centred @ axes[k]
        skew = float(np.sum(proj**3))
        scale = float(np.sum(np.abs(proj) ** 3))
        if abs(skew) <= 1e-9 * max(scale, 1e-300):
            clear = proj[np.abs(proj) > 1e-6]
            skew = float(clear[0]) if clear.size else 1.0
        if skew < 0:
            axes[k] = -axes[k]
    axes[2] = np.cross(axes[0], axes[1])
    return centred @ axes.T


def _fmt(value: Decimal | float, decimals: int) -> str:
    return format_coordinate(float(value), decimals)


def to_relative(coords: np.ndarray, parents: Sequence[int], decimals: int) -> list[tuple[str, str, str]]:
    """Per atom, its written offset from its parent's written position (the first atom: absolute)."""
    written: list[tuple[Decimal, Decimal, Decimal]] = []
    out: list[tuple[str, str, str]] = []
    for i, parent in enumerate(parents):
        base = written[parent] if parent >= 0 else (Decimal(0), Decimal(0), Decimal(0))
        texts = tuple(_fmt(float(coords[i][k]) - float(base[k]), decimals) for k in range(3))
        out.append(texts)  # type: ignore[arg-type]
        written.append(tuple(b + Decimal(t) for b, t in zip(base, texts)))  # type: ignore[arg-type]
    return out


def from_relative(offsets: Sequence[Sequence[str]], parents: Sequence[int]) -> list[tuple[Decimal, Decimal, Decimal]]:
    """Absolute positions from written offsets, exactly (decimal arithmetic, no float drift)."""
    if len(offsets) != len(parents):
        raise ValueError(f"{len(offsets)} coordinate blocks for {len(parents)} atoms")
    positions: list[tuple[Decimal, Decimal, Decimal]] = []
    for texts, parent in zip(offsets, parents):
        base = positions[parent] if parent >= 0 else (Decimal(0), Decimal(0), Decimal(0))
        positions.append(tuple(b + Decimal(t) for b, t in zip(base, texts)))  # type: ignore[arg-type]
    return positions


def local_axes(written: Sequence[np.ndarray], parents: Sequence[int], i: int) -> np.ndarray | None:
    """Rows: the unit axes atom `i`'s offset is written in; None means the global axes.

    Axis 1 runs from the grandparent g to the parent p; axis 3 is normal to the plane of the
    bond before (g's parent h to g) and g -> p; axis 2 = axis 3 x axis 1, which points to h's side
    (a cis torsion writes a positive second number, trans a negative one). A second or later
    child of p takes p's first child s in place of h (the plane of s, p and g): its numbers then
    say only on which side of s it sits (the hybridisation and the chirality), not the torsion
    again, which the first child already wrote. A reference within ~11.5 degrees of the g -> p
    line (a triple bond, a broken input) would make the frame turn with noise, so the bond before
    that one is tried next, up the chain; the global axis most perpendicular to g -> p is the
    last resort, and without a grandparent (the first two atoms of a chain) the global axes are
    used. Only positions already written are read, so decoding rebuilds every frame exactly as
    encoding saw it.
    """
    p = parents[i]
    g = parents[p] if p >= 0 else -1
    if g < 0:
        return None
    e1 = written[p] - written[g]
    length = float(np.linalg.norm(e1))
    if length < 1e-6:
        return None
    e1 = e1 / length
    sibling = next((j for j in range(p + 1, i) if parents[j] == p), None)
    candidates = [written[p] - written[sibling]] if sibling is not None else []
    a, b = g, parents[g]
    while b >= 0 and len(candidates) < 4:
        candidates.append(written[a] - written[b])
        a, b = b, parents[b]
    before = next((c for c in candidates if _sine(c, e1) >= _MIN_SINE), np.eye(3)[int(np.argmin(np.abs(e1)))])
    e3 = np.cross(before, e1)
    e3 = e3 / np.linalg.norm(e3)
    return np.stack([e1, np.cross(e3, e1), e3])


_MIN_SINE = 0.2
"""A frame's reference bond must make at least asin(0.2) ~ 11.5 degrees with the bond it turns about."""


def _sine(v: np.ndarray, unit: np.ndarray) -> float:
    """Sine of the angle between `v` and the unit vector `unit` (0 for a zero-length `v`)."""
    n = float(np.linalg.norm(v))
    return float(np.linalg.norm(np.cross(v, unit))) / n if n > 1e-9 else 0.0


def _place(base: np.ndarray, axes: np.ndarray | None, texts: Sequence[str]) -> np.ndarray:
    """A position from its written offset: one rule for encoding and decoding, so both see the same floats."""
    offset = np.array([float(t) for t in texts], dtype=np.float64)
    return base + (offset if axes is None else axes.T @ offset)


def to_local(coords: np.ndarray, parents: Sequence[int], decimals: int) -> list[tuple[str, str, str]]:
    """Per atom, its written offset from its parent in its local frame (the first atom: absolute)."""
    written: list[np.ndarray] = []
    out: list[tuple[str, str, str]] = []
    for i, p in enumerate(parents):
        base = written[p] if p >= 0 else np.zeros(3)
        axes = local_axes(written, parents, i)
        delta = np.asarray(coords[i], dtype=np.float64) - base
        local = delta if axes is None else axes @ delta
        texts = (_fmt(local[0], decimals), _fmt(local[1], decimals), _fmt(local[2], decimals))
        out.append(texts)
        written.append(_place(base, axes, texts))
    return out


def from_local(offsets: Sequence[Sequence[str]], parents: Sequence[int]) -> list[np.ndarray]:
    """Absolute positions from written local offsets, rebuilding each frame from earlier atoms."""
    if len(offsets) != len(parents):
        raise ValueError(f"{len(offsets)} coordinate blocks for {len(parents)} atoms")
    written: list[np.ndarray] = []
    for i, (texts, p) in enumerate(zip(offsets, parents)):
        written.append(_place(written[p] if p >= 0 else np.zeros(3), local_axes(written, parents, i), texts))
    return written


def _blocks(text: str) -> list[tuple[str, str, str]]:
    return [m.groups() for m in COORDINATE_BLOCK.finditer(text)]  # type: ignore[misc]


def _replace_blocks(text: str, values: Sequence[Sequence[str]]) -> str:
    it = iter(values)
    return COORDINATE_BLOCK.sub(lambda _m: "<{},{},{}>".format(*next(it)), text)


def apply_format(text: str, fmt: CoordinateFormat) -> str:
    """Conformer text (absolute, as stored) rewritten in `fmt`; the original format returns it unchanged."""
    blocks = _blocks(text)
    if not blocks:
        raise ValueError(f"no <x,y,z> coordinate blocks in {text[:80]!r}")
    if fmt == ORIGINAL and all(len(v.partition(".")[2]) == fmt.decimals for v in blocks[0]):
        return text
    coords = np.array([[float(v) for v in b] for b in blocks], dtype=np.float64)
    if fmt.frame == "canonical":
        coords = canonical_frame(coords)
    if fmt.positions == "absolute":
        values = [tuple(_fmt(v, fmt.decimals) for v in row) for row in coords]
    else:
        offsets = to_relative if fmt.positions == "relative" else to_local
        values = offsets(coords, smiles_parents(strip_coordinates(text)), fmt.decimals)
    return _replace_blocks(text, values)


def to_absolute_text(text: str, fmt: CoordinateFormat) -> str:
    """Conformer text in `fmt` with absolute positions (offsets placed); absolute formats unchanged."""
    if fmt.positions == "absolute":
        return text
    parents = smiles_parents(strip_coordinates(text))
    if fmt.positions == "local":
        placed = from_local(_blocks(text), parents)
        return _replace_blocks(text, [tuple(f"{v:.6f}" for v in p) for p in placed])
    positions = from_relative(_blocks(text), parents)
    return _replace_blocks(text, [tuple(f"{v:f}" for v in p) for p in positions])


MANIFEST_KEY = "coordinate_format"


def dataset_format(path: str | Path) -> CoordinateFormat | None:
    """The format of a prepared data set, from its `manifest.json` (`find_manifest`: the folder of `path` or above).

    A manifest without a `coordinate_format` entry holds the original format at its `precision`;
    None when no manifest is found (e.g. a bare JSONL file).
    """
    found = find_manifest(path)
    if found is None:
        return None
    manifest = found[0]
    data = json.loads(manifest.read_text(encoding="utf-8"))
    if MANIFEST_KEY in data:
        return CoordinateFormat.from_dict(data[MANIFEST_KEY], f"{manifest} [{MANIFEST_KEY}]")
    return CoordinateFormat(decimals=int(data.get("settings", {}).get("precision", ORIGINAL.decimals)))


def check_data_format(data_path: str | Path, tokenizer_dir: str | Path) -> None:
    """Training data must be in the format its tokenizer directory records.

    A directory recording none takes absolute data of any decimals or frame (samples of such a
    model decode as written), but not relative or local data: its model folder could not tell
    `generate` to place the offsets.
    """
    trained, data = read_format(tokenizer_dir), dataset_format(data_path)
    if data is None:
        return
    if trained is None:
        if data.positions != "absolute":
            raise FormatMismatchError(
                f"data {data_path} is in format {data.name} ({data.positions} positions) but tokenizer {tokenizer_dir} "
                f"records no coordinate format, so the trained model could not say how to read its samples; "
                f"train with a tokenizer directory that records it (`molgen3d build-tokenizer` writes "
                f"tokenizers:molgen_cpu) or write {FORMAT_FILE} into a copy of the tokenizer directory"
            )
        return
    check_same_format(trained, data, f"tokenizer {tokenizer_dir} ({FORMAT_FILE})", f"data {data_path}")


def check_same_format(trained: CoordinateFormat, given: CoordinateFormat, trained_where: str, given_where: str) -> None:
    """Raise FormatMismatchError naming both sources when two formats differ."""
    if trained != given:
        raise FormatMismatchError(
            f"coordinate format mismatch: {trained_where} is {trained.name} but {given_where} is {given.name}; "
            f"a model reads and writes only the format it was trained on: re-encode the data with "
            f"`molgen3d reformat-data --decimals {trained.decimals} --frame {trained.frame} --positions "
            f"{trained.positions}`, or use a tokenizer/model of format {given.name}"
        )


def sampling_format(
    model_format: CoordinateFormat | None,
    precision: int | None,
    positions: str | None,
    model_where: str,
    default_precision: int = ORIGINAL.decimals,
) -> tuple[int, str]:
    """(decimals, positions) to sample with: the model's recorded format; options only if they agree with it.

    A model folder that records no format (older exports) leaves the options free, as before.
    """
    if model_format is None:
        return (default_precision if precision is None else precision), (positions or "absolute")
    asked = {"--precision": (precision, model_format.decimals), "--positions": (positions, model_format.positions)}
    for option, (value, recorded) in asked.items():
        if value is not None and value != recorded:
            raise FormatMismatchError(
                f"{option} {value} but {model_where} was trained on coordinate format {model_format.name} "
                f"({option} {recorded}); drop {option} (the model's recorded format is used) or pick a model "
                f"trained on the format you want"
            )
    return model_format.decimals, model_format.positions
