"""Coordinate formats: decimals, canonical frame, relative and local positions; each a recorded, reversible setting."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import rdDistGeom, rdMolAlign

from molgen3D.chem.coordinate_format import (
    ORIGINAL,
    CoordinateFormat,
    FormatMismatchError,
    apply_format,
    canonical_frame,
    check_data_format,
    from_local,
    from_relative,
    read_format,
    smiles_parents,
    to_absolute_text,
    to_local,
    to_relative,
    write_format,
)
from molgen3D.chem.enriched_smiles import decode, encode, strip_coordinates

CHIRAL = "C[C@H](N)C(=O)N[C@@H](Cc1ccccc1)C(=O)O"


def embedded(smiles: str, seed: int = 7) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = rdDistGeom.ETKDGv3()
    params.randomSeed = seed
    assert rdDistGeom.EmbedMolecule(mol, params) == 0
    return Chem.RemoveHs(mol)


def cip_labels(mol: Chem.Mol) -> list[str]:
    """CIP labels assigned from the 3D coordinates (not from the SMILES tags)."""
    mol = Chem.Mol(mol)
    Chem.AssignStereochemistryFrom3D(mol, replaceExistingTags=True)
    return [a.GetProp("_CIPCode") if a.HasProp("_CIPCode") else "" for a in mol.GetAtoms()]


@pytest.mark.parametrize("decimals", [2, 3, 4])
def test_truncation_error_is_below_the_stated_bound(decimals):
    text = encode(embedded(CHIRAL), precision=4)
    fmt = CoordinateFormat(decimals=decimals)
    out = apply_format(text, fmt)
    a, b = decode(text), decode(out)
    diff = np.abs(a.GetConformer().GetPositions() - b.GetConformer().GetPositions())
    assert diff.max() < 10.0**-decimals
    assert np.linalg.norm(diff, axis=1).max() <= fmt.max_atom_error
    assert all(len(v.split(".")[1]) == decimals for v in out.split("<")[1].split(">")[0].split(","))
    assert fmt.max_atom_error < 0.75 / 10  # truncation never decides coverage at 0.75 A


def test_canonical_frame_round_trip_keeps_graph_chirality_and_geometry():
    mol = embedded(CHIRAL)
    text = encode(mol, precision=4)
    out = apply_format(text, CoordinateFormat(frame="canonical"))
    back = decode(out)
    assert strip_coordinates(out) == strip_coordinates(text)
    assert Chem.MolToSmiles(back) == Chem.MolToSmiles(decode(text))
    assert cip_labels(back) == cip_labels(decode(text))
    assert {"R", "S"} & set(cip_labels(back))
    # Same shape: aligned RMSD without symmetry search is truncation-sized.
    rms = rdMolAlign.AlignMol(Chem.Mol(back), decode(text), atomMap=[(i, i) for i in range(mol.GetNumAtoms())])
    assert rms < CoordinateFormat(frame="canonical").max_atom_error
    xyz = back.GetConformer().GetPositions()
    assert np.allclose(xyz.mean(axis=0), 0, atol=1e-3)
    spread = np.var(xyz, axis=0)
    assert spread[0] >= spread[1] >= spread[2]


def test_canonical_frame_is_a_proper_rotation_and_ignores_how_the_input_was_placed():
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(12, 3)) * [3.0, 1.5, 0.7]
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    moved = xyz @ q.T + [5.0, -2.0, 9.0]
    a, b = canonical_frame(xyz), canonical_frame(moved)
    assert np.allclose(a, b, atol=1e-8)
    # A rotation: the map from centred input to output has det +1 (mirror images are not merged).
    centred = xyz - xyz.mean(axis=0)
    rot, *_ = np.linalg.lstsq(centred, a, rcond=None)
    assert np.linalg.det(rot) == pytest.approx(1.0, abs=1e-6)
    mirrored = canonical_frame(xyz * [1, 1, -1])
    assert not np.allclose(mirrored, a, atol=1e-3)


def test_smiles_parents_follow_branches_and_fragments():
    # C0 C1 ( C2 ) ( C3 ) c4 1 c5 ... ; after '.', the previous atom
    assert smiles_parents("CC(C)(O)N") == [-1, 0, 1, 1, 1]
    assert smiles_parents("C1CC1") == [-1, 0, 1]
    assert smiles_parents("[Na+].[Cl-]") == [-1, 0]
    assert smiles_parents("CC(=O)C(C)C") == [-1, 0, 1, 1, 3, 3]


def test_relative_offsets_are_exact_and_never_drift():
    rng = np.random.default_rng(1)
    parents = [-1] + [i for i in range(59)]  # a chain: 60 atoms, the worst case for drift
    coords = np.cumsum(rng.normal(size=(60, 3)), axis=0)
    for decimals in (2, 3, 4):
        offsets = to_relative(coords, parents, decimals)
        back = np.array([[float(v) for v in p] for p in from_relative(offsets, parents)])
        err = np.linalg.norm(back - coords, axis=1)
        assert err.max() <= np.sqrt(3) * 10.0**-decimals  # the per-atom bound, even at the chain's end
    assert from_relative([("0.5", "0", "0"), ("0.25", "0", "0")], [-1, 0])[1][0] == Decimal("0.75")


def test_relative_text_round_trip_to_absolute():
    mol = embedded(CHIRAL)
    text = encode(mol, precision=4)
    fmt = CoordinateFormat(decimals=3, positions="relative", frame="canonical")
    out = apply_format(text, fmt)
    assert out != text and strip_coordinates(out) == strip_coordinates(text)
    absolute = decode(to_absolute_text(out, fmt))
    ref = decode(text)
    rms = rdMolAlign.AlignMol(Chem.Mol(absolute), ref, atomMap=[(i, i) for i in range(mol.GetNumAtoms())])
    assert rms < fmt.max_atom_error
    assert cip_labels(absolute) == cip_labels(ref)
    # Offsets from bonded parents are bond-sized: every offset is under 2 A.
    rel = decode(out).GetConformer().GetPositions()[1:]
    assert np.linalg.norm(rel, axis=1).max() < 2.0


def test_absolute_formats_are_left_alone_by_to_absolute_text():
    text = encode(embedded("CCO"), precision=4)
    assert to_absolute_text(text, ORIGINAL) == text
    assert apply_format(text, ORIGINAL) == text


def test_format_is_recorded_and_read_back(tmp_path):
    fmt = CoordinateFormat(decimals=2, frame="canonical", positions="relative")
    write_format(tmp_path, fmt)
    assert json.loads((tmp_path / "coordinate_format.json").read_text())["name"] == "d2-canonical-relative"
    assert read_format(tmp_path) == fmt
    assert read_format(tmp_path / "nothing") is None
    (tmp_path / "coordinate_format.json").write_text(json.dumps({"decimals": 2, "axes": "x"}))
    with pytest.raises(ValueError, match="unknown coordinate format keys \\['axes'\\]"):
        read_format(tmp_path)
    with pytest.raises(ValueError, match="frame must be"):
        CoordinateFormat(frame="inertial")


def test_local_offsets_never_drift_even_on_a_long_chain():
    rng = np.random.default_rng(2)
    parents = [-1] + list(range(59))
    steps = rng.normal(size=(60, 3))
    coords = np.cumsum(1.5 * steps / np.linalg.norm(steps, axis=1, keepdims=True), axis=0)
    for decimals in (2, 3, 4):
        back = np.array(from_local(to_local(coords, parents, decimals), parents))
        err = np.linalg.norm(back - coords, axis=1)
        assert err.max() <= np.sqrt(3) * 10.0**-decimals  # per atom, the chain's end included


def test_local_text_round_trip_keeps_graph_chirality_and_geometry():
    mol = embedded(CHIRAL)
    text = encode(mol, precision=4)
    fmt = CoordinateFormat(decimals=2, frame="canonical", positions="local")
    out = apply_format(text, fmt)
    assert strip_coordinates(out) == strip_coordinates(text)
    absolute = decode(to_absolute_text(out, fmt))
    ref = decode(text)
    rms = rdMolAlign.AlignMol(Chem.Mol(absolute), ref, atomMap=[(i, i) for i in range(mol.GetNumAtoms())])
    assert rms < fmt.max_atom_error
    assert cip_labels(absolute) == cip_labels(ref) and {"R", "S"} & set(cip_labels(ref))


def test_local_numbers_depend_on_the_shape_not_on_how_it_was_placed():
    """From the fourth atom of a chain on, the written numbers are the same for any rigid motion."""
    mol = embedded("CCCc1ccc(O)cc1")
    moved = Chem.Mol(mol)
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    conf = moved.GetConformer()
    for i, xyz in enumerate(conf.GetPositions() @ q.T + [4.0, -7.0, 1.0]):
        conf.SetAtomPosition(i, xyz.tolist())
    fmt = CoordinateFormat(decimals=2, positions="local")
    a = _numbers(apply_format(encode(mol, precision=4), fmt))
    b = _numbers(apply_format(encode(moved, precision=4), fmt))
    assert a[:3] != b[:3]  # the first atoms are written in the global axes
    assert np.abs(np.array(a[3:]) - np.array(b[3:])).max() <= 0.011  # one last digit of truncation
    # Aromatic atoms whose three atoms before are in the ring: in the ring's plane (3rd number ~0).
    assert all(abs(row[2]) < 0.1 for row in a[6:9])


def test_local_frames_survive_degenerate_geometry():
    """A straight chain (alkyne) and atoms written on top of each other still place every atom."""
    coords = np.array([[0, 0, 0], [1.2, 0, 0], [2.4, 0, 0], [3.6, 0, 0], [3.6, 1.0, 0.5], [3.6, 1.0, 0.5]])
    parents = [-1, 0, 1, 2, 3, 4]
    back = np.array(from_local(to_local(coords, parents, 3), parents))
    assert np.isfinite(back).all()
    assert np.linalg.norm(back - coords, axis=1).max() <= np.sqrt(3) * 1e-3
    # A sample that stacks atoms (zero-length bond) decodes to finite positions instead of NaN.
    assert np.isfinite(np.array(from_local([("0", "0", "0")] * 4, [-1, 0, 1, 2]))).all()


def test_local_format_needs_a_recorded_tokenizer_format(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text(
        json.dumps({"coordinate_format": CoordinateFormat(2, "canonical", "local").to_dict()})
    )
    with pytest.raises(FormatMismatchError, match="local positions"):
        check_data_format(data, tmp_path)


def _numbers(text: str) -> list[list[float]]:
    return [[float(v) for v in block.split(",")] for block in re.findall(r"<([^>]*)>", text)]


def test_a_second_branch_is_written_against_the_first_not_the_torsion():
    """Turning both children of p about the g -> p bond changes the first child's numbers only."""
    tetra = np.array([[0.5, 1.41, 0.0], [0.5, -0.71, 1.22]])  # two substituents of p, 109.5 deg apart
    for turn in (0.0, 0.9, 2.0):
        c, s = np.cos(turn), np.sin(turn)
        kids = tetra @ np.array([[1, 0, 0], [0, c, s], [0, -s, c]]) + [1.5, 0, 0]
        coords = np.vstack([[[-0.5, 1.4, 0.0], [0.0, 0.0, 0.0], [1.5, 0.0, 0.0]], kids])
        written = to_local(coords, [-1, 0, 1, 2, 2], 2)
        if turn == 0.0:
            first, second = written[3], written[4]
        else:
            assert written[3] != first  # the torsion is in the first child's numbers
            # The second child only says where it sits next to the first (up to a last digit).
            assert np.abs(np.array(written[4], float) - np.array(second, float)).max() <= 0.011
        back = np.array(from_local(written, [-1, 0, 1, 2, 2]))
        assert np.linalg.norm(back - coords, axis=1).max() <= np.sqrt(3) * 1e-2


def test_a_nearly_straight_reference_does_not_make_the_frame_turn_with_noise():
    """N#C-c: the bond before the ring (N -> C) is almost in line with C -> c, so it is not used."""
    base = np.array([[-1.15, 0.0, 0.0], [0.0, 0.0, 0.0], [1.44, 0.0, 0.0], [2.14, 1.21, 0.0]])
    parents = [-1, 0, 1, 2]
    seen = []
    for wobble in (0.02, -0.02):  # N bent ~1 degree either way out of the plane
        coords = base.copy()
        coords[0, 2] = wobble
        seen.append(np.array(to_local(coords, parents, 2)[3], float))
    assert np.abs(seen[0] - seen[1]).max() <= 0.011
