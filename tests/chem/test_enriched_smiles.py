"""The conformer text format : encode, decode, strip_coordinates, coordinate_template."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import rdDistGeom
from rdkit.Geometry import Point3D

from molgen3D.chem.enriched_smiles import (
    EnrichedSmilesError,
    coordinate_template,
    decode,
    encode,
    encode_conformers,
    format_coordinate,
    strip_coordinates,
)
from molgen3D.datasets.inputs import bundled_smiles_file, read_smiles
from molgen3D.datasets.roundtrip_check import FORMAT_FAILURES, check_molecule, coordinates_match

BLOCK = re.compile(r"<([^<>]*)>")
C60 = (
    "c12c3c4c5c1c1c6c7c2c2c8c3c3c9c4c4c%10c5c5c1c1c6c6c%11c7c2c2c7c8c3c3c8c9c4c4c9c%10c5c5c1c1c6c6"
    "c%11c2c2c7c3c3c8c4c4c9c5c5c1c1c6c2c3c4c51"
)
DODECAHEDRANE = "C12C3C4C5C1C6C7C8C2C9C3C%10C4C%11C5C6C%12C7C%13C8C9C%10C%11C%12%13"


def with_coordinates(smiles: str, coords: list[tuple[float, float, float]] | None = None, seed: int = 0) -> Chem.Mol:
    """The heavy-atom molecule of `smiles` with one conformer: given coordinates (atom order) or seeded random ones."""
    mol = Chem.MolFromSmiles(smiles)
    rng = random.Random(seed)
    if coords is None:
        coords = [tuple(rng.uniform(-9, 9) for _ in range(3)) for _ in range(mol.GetNumAtoms())]
    conf = Chem.Conformer(mol.GetNumAtoms())
    conf.Set3D(True)
    for i, xyz in enumerate(coords):
        conf.SetAtomPosition(i, Point3D(*xyz))
    mol.AddConformer(conf, assignId=True)
    return mol


def embedded(smiles: str, seed: int = 7, n: int = 1) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = rdDistGeom.ETKDGv3()
    params.randomSeed = seed
    assert len(rdDistGeom.EmbedMultipleConfs(mol, n, params)) == n, smiles
    return mol


# --- coordinates --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "precision", "expected"),
    [
        (1.23, 4, "1.2300"),  # stored as 1.22999...: must not become 1.2299
        (1.23456, 4, "1.2345"),  # rounding would give 1.2346
        (-1.23456, 4, "-1.2345"),  # toward zero, not floor (-1.2346)
        (0.99999, 4, "0.9999"),
        (-1.99995, 4, "-1.9999"),
        (0.1 + 0.2, 4, "0.3000"),
        (2.0, 4, "2.0000"),
        (123.456789, 3, "123.456"),
        (1.005, 2, "1.00"),
        (4.0182999, 4, "4.0182"),
        (1e-05, 4, "0.0000"),
        (-0.00004, 4, "0.0000"),  # truncates to zero: no minus sign
        (-0.0, 4, "0.0000"),
        (-1e-300, 4, "0.0000"),
        (-7.5, 0, "-7"),
        (12345.6789, 4, "12345.6789"),
    ],
)
def test_format_coordinate_truncates_toward_zero(value, precision, expected):
    assert format_coordinate(value, precision) == expected


def test_format_coordinate_random_values_obey_truncation_bounds():
    rng = random.Random(3)
    for _ in range(2000):
        value = rng.uniform(-50, 50) * rng.choice([1, 1e-3, 1e-5])
        text = format_coordinate(value, 4)
        assert re.fullmatch(r"-?\d+\.\d{4}", text), text
        written = float(text)
        assert abs(written) <= abs(value) + 1e-12
        assert abs(value) - abs(written) < 1e-4
        assert not text.startswith("-0.0000")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_format_coordinate_rejects_non_finite(bad):
    with pytest.raises(ValueError, match="not finite"):
        format_coordinate(bad)


# --- encode -------------------------------------------------------------------------------


def test_encode_writes_descriptors_and_truncated_coordinates_in_smiles_order():
    # Atom order of "OCC" is O, C, C; the canonical SMILES "CCO" writes them in reverse.
    mol = with_coordinates("OCC", [(1.23, -0.00004, 2.5), (-1.99995, 0.99999, 0.0), (3.14159, -2.71828, -0.0)])
    assert encode(mol) == "[C]<3.1415,-2.7182,0.0000>[C]<-1.9999,0.9999,0.0000>[O]<1.2300,0.0000,2.5000>"
    assert encode(mol, precision=2) == "[C]<3.14,-2.71,0.00>[C]<-1.99,0.99,0.00>[O]<1.23,0.00,2.50>"


def test_encode_facts_example_layout():
    mol = embedded("C[NH2+]Cc1sccc1C")
    text = encode(mol)
    skeleton = BLOCK.sub("<>", text)
    assert skeleton == "[C]<>[NH2+]<>[C]<>[c]<>1[s]<>[c]<>[c]<>[c]<>1[C]<>"
    assert all(re.fullmatch(r"-?\d+\.\d{4},-?\d+\.\d{4},-?\d+\.\d{4}", b) for b in BLOCK.findall(text))


def test_encode_same_with_or_without_hydrogens_and_per_conformer():
    mol = embedded("CC(=O)Nc1ccc(O)cc1", n=3)
    heavy = Chem.RemoveHs(mol)
    texts = encode_conformers(mol)
    assert len(texts) == 3 and len(set(texts)) == 3
    for conf in mol.GetConformers():
        assert encode(mol, conf.GetId()) == encode(heavy, conf.GetId()) == texts[conf.GetId()]


@pytest.mark.parametrize(
    ("smiles", "kept_tokens"),
    [
        ("C[NH2+]Cc1sccc1C", ["[NH2+]"]),
        ("CC(=O)[O-].[Na+]", ["[O-]", "[Na+]"]),
        ("[13CH3]C(=O)O", ["[13CH3]"]),
        ("[2H]C([2H])([2H])Cl", ["[2H]"]),
        ("C[C@H](N)C(=O)O", ["[C@H]", "[C@@H]"]),
        ("F/C=C/Cl", []),
        ("C/C=C\\C(=O)O", []),
        ("Cc1ccc2[nH]ccc2c1", ["[nH]"]),
        ("c1ccc2c(c1)[nH]c1ccccc12.Cl", ["[nH]"]),
        ("C[N+](C)(C)CC(=O)[O-]", ["[N+]", "[O-]"]),
        ("BrC1=CC=C(I)C=C1P(=O)(O)O", []),
        ("N#CC[C@@H]1CC[C@H](O)CC1", []),
    ],
)
def test_round_trip_of_embedded_special_cases(smiles, kept_tokens):
    mol = embedded(smiles)
    text = encode(mol)
    canonical = Chem.MolToSmiles(Chem.RemoveHs(mol))
    for token in kept_tokens:
        if token in canonical:
            assert token in text
    assert not re.search(r"\]<[^>]*>[A-Za-z]", text)  # every atom is bracketed
    assert strip_coordinates(text) == canonical
    decoded = decode(text)
    assert Chem.MolToSmiles(decoded) == canonical
    assert coordinates_match(Chem.RemoveHs(mol), decoded, precision=4)


def test_stereo_marks_and_isotopes_survive():
    mol = embedded("[2H]C([2H])([2H])[C@@H](F)/C=C/[13CH3]")
    text = encode(mol)
    assert "/" in text and "@" in text and "[13CH3]" in text and text.count("[2H]") == 3
    assert Chem.MolToSmiles(decode(text)) == Chem.MolToSmiles(Chem.RemoveHs(mol))


@pytest.mark.parametrize("smiles", [DODECAHEDRANE, C60])
def test_ring_closures_above_nine(smiles):
    mol = with_coordinates(smiles, seed=11)
    canonical = Chem.MolToSmiles(mol)
    assert "%10" in canonical
    text = encode(mol)
    assert "%10" in text and strip_coordinates(text) == canonical
    decoded = decode(text)
    assert Chem.MolToSmiles(decoded) == canonical
    assert coordinates_match(mol, decoded, precision=4)
    if smiles == C60:
        assert "%11" in text and "%20" in text


@pytest.mark.parametrize(
    ("smiles", "fragment"),
    [
        ("[NH3]->[Cu]", ">->[Cu]<"),
        ("*C", "[*]<"),
        ("C[CH3:1]", "[CH3:1]<"),
        ("[H][H]", "[H]<"),
        ("[se]1cccc1", "[se]<"),
    ],
)
def test_round_trip_of_unusual_tokens(smiles, fragment):
    mol = with_coordinates(smiles, seed=2)
    canonical = Chem.MolToSmiles(mol)
    text = encode(mol)
    assert fragment in text
    assert strip_coordinates(text) == canonical
    decoded = decode(text)
    assert Chem.MolToSmiles(decoded) == canonical
    assert coordinates_match(mol, decoded, precision=4)


def test_embedded_dodecahedrane_round_trips():
    assert check_molecule(DODECAHEDRANE) == ("ok", "")


def test_encode_refuses_bracket_atoms_that_read_back_as_plain_atoms():
    # A methoxy radical is written C[O]; [O] in the text means a plain O (methanol).
    mol = with_coordinates("C[O]")
    with pytest.raises(EnrichedSmilesError, match=r"\[O\]") as err:
        encode(mol)
    assert err.value.position == 1


def test_encode_needs_a_conformer():
    with pytest.raises(ValueError, match="no conformer"):
        encode(Chem.MolFromSmiles("CCO"))


# --- decode -------------------------------------------------------------------------------


def test_decode_sets_parsed_coordinates_in_atom_order():
    text = "[C]<1.5000,-2.0000,0.2500>[C]<0.0000,0.0000,0.0000>([O-]<3.0000,1.0000,-1.0000>)=[O]<-0.5000,4.0000,9.1234>"
    mol = decode(text)
    assert [a.GetSymbol() for a in mol.GetAtoms()] == ["C", "C", "O", "O"]
    assert mol.GetAtomWithIdx(2).GetFormalCharge() == -1
    assert mol.GetNumConformers() == 1 and mol.GetConformer().Is3D()
    np.testing.assert_array_equal(
        mol.GetConformer().GetPositions(), [[1.5, -2, 0.25], [0, 0, 0], [3, 1, -1], [-0.5, 4, 9.1234]]
    )
    assert strip_coordinates(text) == "CC([O-])=O"


def test_decode_keeps_explicit_hydrogen_atoms():
    text = "[2H]<0.1000,0.2000,0.3000>[C]<1.0000,1.0000,1.0000>"
    mol = decode(text)
    assert mol.GetNumAtoms() == 2 and mol.GetAtomWithIdx(0).GetIsotope() == 2


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("", 0, "empty"),
        ("[C]<1,2,3>C", 10, "unbracketed atom"),
        ("[Xx]<0,0,0>", 0, "unknown element"),
        ("[C]<0,0,0>[q]<0,0,0>", 10, "unknown aromatic"),
        ("[C]<1,2>", 3, "followed by <x,y,z>"),
        ("[C]<0,0,0>[C]", 13, "followed by <x,y,z>"),
        ("[C]<nan,0,0>", 3, "followed by <x,y,z>"),
        ("[C]<0,0,0>[C]<0,0,0>1", 20, "never closed"),
        ("1[C]<0,0,0>", 0, "before any atom"),
        ("[C]<0,0,0>([O]<0,0,0>", 10, "never closed"),
        ("[C]<0,0,0>)[O]<0,0,0>", 10, "closes no branch"),
        ("[C]<0,0,0>?", 10, "unexpected character"),
        ("[C]<0,0,0>[F]<0,0,0>[C]<0,0,0>", 10, "valence"),
        ("[C]<0,0,0>[C@@X]<0,0,0>", 10, "malformed atom"),
        ("[c]<0,0,0>[c]<0,0,0>", 0, "aromatic"),
        # DetectChemistryProblems finds nothing here; only the sanitizing parse fails.
        ("[c]<0,0,0>$1[c]<0,0,0>[c]<0,0,0>[c]<0,0,0>[c]<0,0,0>[C]<0,0,0>[c]<0,0,0>1", 0, "valence"),
        ("[C]<1e999,0,0>", 3, "not finite"),
    ],
)
def test_decode_errors_name_the_position(text, position, message):
    with pytest.raises(EnrichedSmilesError, match=message) as err:
        decode(text)
    assert err.value.position == position
    assert f"position {position}" in str(err.value)
    assert isinstance(err.value, ValueError)


# --- coordinate_template --------------------------------------------------------------------


@pytest.mark.parametrize("smiles", ["C[NH2+]Cc1sccc1C", "CC(=O)[O-].[Na+]", "C[C@H](N)C(=O)O", DODECAHEDRANE])
def test_coordinate_template_agrees_with_encode_for_any_conformer(smiles):
    canonical = Chem.MolToSmiles(Chem.MolFromSmiles(smiles))
    segments = coordinate_template(canonical)
    assert len(segments) == Chem.MolFromSmiles(canonical).GetNumAtoms() + 1
    mol = with_coordinates(canonical, seed=5) if smiles == DODECAHEDRANE else embedded(smiles, n=2)
    for conf in mol.GetConformers():
        text = encode(mol, conf.GetId())
        blocks = [f"<{b}>" for b in BLOCK.findall(text)]
        assert "".join(s + b for s, b in zip(segments, blocks)) + segments[-1] == text


def test_coordinate_template_canonicalises_other_spellings():
    assert coordinate_template("OCC") == coordinate_template("CCO") == ["[C]", "[C]", "[O]", ""]


def test_coordinate_template_rejects_bad_smiles():
    with pytest.raises(EnrichedSmilesError):
        coordinate_template("C1CC(")


# --- the bundled drug-like molecules -------------------------------------------------------


def test_round_trip_on_a_sample_of_the_bundled_drug_like_molecules():
    """300 of the 10,000 (every 33rd); the full set runs with `python -m molgen3D.datasets.roundtrip_check`."""
    smiles = [r.text for r in read_smiles(bundled_smiles_file())][::33][:300]
    assert len(smiles) == 300
    results = [check_molecule(s) for s in smiles]
    failures = [(s, r) for s, r in zip(smiles, results) if r[0] in FORMAT_FAILURES]
    assert failures == []
    assert sum(r[0] == "ok" for r in results) >= 295
