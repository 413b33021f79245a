"""Chemistry of every input: fragments, stereo from 3D, names, duplicates, broken geometry, exact splits, gzip."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import rdDistGeom
from rdkit.Geometry import Point3D

from molgen3D.chem.enriched_smiles import decode
from molgen3D.datasets.chemistry import choose_fragments, geometry_problem, straight_angle
from molgen3D.datasets.conformers import Settings, from_smiles
from molgen3D.datasets.inputs import InputError, Record
from molgen3D.datasets.prepare import PrepareConfig, prepare
from molgen3D.datasets.splits import SPLITS


def embedded(smiles: str, n: int, seed: int = 7) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = rdDistGeom.ETKDGv3()
    params.randomSeed = seed
    assert len(rdDistGeom.EmbedMultipleConfs(mol, n, params)) == n
    return mol


def write_sdf(path: Path, entries: list[tuple[Chem.Mol, int, str]]) -> Path:
    with Chem.SDWriter(str(path)) as writer:
        for mol, conf_id, name in entries:
            mol.SetProp("_Name", name)
            writer.write(mol, confId=conf_id)
    return path


def all_rows(out: Path) -> dict[str, list[dict]]:
    found = {}
    for name in SPLITS:
        found[name] = []
        for shard in sorted((out / name).glob("part-*.jsonl*")):
            opener = gzip.open if shard.suffix == ".gz" else open
            with opener(shard, "rt", encoding="utf-8") as f:
                found[name] += [json.loads(line) for line in f]
    return found


def flat(out: Path) -> list[dict]:
    return [r for rows in all_rows(out).values() for r in rows]


def salt_with_sodium_at_the_origin() -> Chem.Mol:
    """Acetate + Na+ as a careless converter writes it: the ion at (0,0,0), 0.64 A from a carbon."""
    mol = embedded("CC(=O)[O-].[Na+]", 1)
    conf = mol.GetConformer()
    carbon = np.array(conf.GetAtomPosition(0))
    for i in range(mol.GetNumAtoms()):
        conf.SetAtomPosition(i, Point3D(*(np.array(conf.GetAtomPosition(i)) - carbon + [0.64, 0, 0])))
    sodium = next(a.GetIdx() for a in mol.GetAtoms() if a.GetSymbol() == "Na")
    conf.SetAtomPosition(sodium, Point3D(0, 0, 0))
    return mol


@pytest.mark.parametrize(
    ("policy", "written", "reason"),
    [
        ("largest", {"CC(=O)[O-]"}, "fragments_removed"),
        ("drop", set(), "multiple_fragments"),
        ("keep", set(), "atoms_too_close"),
    ],
)
def test_salt_fragments_policy(tmp_path, policy, written, reason):
    sdf = write_sdf(
        tmp_path / "salt.sdf",
        [(salt_with_sodium_at_the_origin(), 0, "salt")]
        + [(embedded(s, 1, seed=i + 1), 0, s) for i, s in enumerate(["CCO", "CCCN", "CCCCO"])],
    )
    manifest = prepare(PrepareConfig(output=str(tmp_path / "out"), input=sdf, fragments=policy)).manifest
    rows = flat(tmp_path / "out")
    assert {r["canonical_smiles"] for r in rows if r["name"] == "salt"} == written
    assert manifest["skipped"][reason]["count"] == 1 and "salt.sdf:1" in manifest["skipped"][reason]["examples"][0]


def test_default_fragment_policy_is_largest_for_sdf_and_smiles(tmp_path):
    sdf = write_sdf(tmp_path / "salt.sdf", [(salt_with_sodium_at_the_origin(), 0, "salt")])
    prepare(PrepareConfig(output=str(tmp_path / "out"), input=sdf, split_fractions=(1.0, 0.0, 0.0)))
    assert [r["canonical_smiles"] for r in flat(tmp_path / "out")] == ["CC(=O)[O-]"]
    largest, removed = choose_fragments(Chem.MolFromSmiles("[Na+].[Na+].O=C([O-])CC(=O)[O-]"), "largest")
    assert Chem.MolToSmiles(largest) == "O=C([O-])CC(=O)[O-]" and removed == 2


def mirrored(mol: Chem.Mol, conf_id: int) -> Chem.Mol:
    """The same conformer reflected through a plane: the other enantiomer, the same distances."""
    copy = Chem.Mol(mol, False, conf_id)
    conf = copy.GetConformer(conf_id)
    for i in range(copy.GetNumAtoms()):
        p = conf.GetAtomPosition(i)
        conf.SetAtomPosition(i, Point3D(-p.x, p.y, p.z))
    return copy


def test_stereo_comes_from_each_conformer_and_stereoisomers_share_a_split(tmp_path):
    chiral = embedded("CC(N)C(=O)O", 3)  # no stereo in the input, as many SDF writers leave it
    entries = [(chiral, 0, "ala-1"), (mirrored(chiral, 0), 0, "ala-2"), (chiral, 2, "ala-3")]
    entries += [(embedded(s, 1, seed=i + 1), 0, s) for i, s in enumerate(["CCO", "CCCN", "CCCCO", "OCCO"])]
    sdf = write_sdf(tmp_path / "mixed.sdf", entries)
    manifest = prepare(PrepareConfig(output=str(tmp_path / "out"), input=sdf, split_fractions=(0.6, 0.2, 0.2))).manifest
    assert manifest["counts"]["total"]["molecules"] == 5  # 5 molecules, not 6
    ala = {n: rows for n, rows in all_rows(tmp_path / "out").items() if any(r["name"].startswith("ala") for r in rows)}
    assert len(ala) == 1  # every alanine conformer in one split
    rows = [r for r in next(iter(ala.values())) if r["name"].startswith("ala")]
    assert {r["canonical_smiles"] for r in rows} == {"C[C@H](N)C(=O)O", "C[C@@H](N)C(=O)O"}
    for row in rows:  # each line's SMILES is the stereo of its own coordinates
        mol = decode(row["embedded_smiles"])
        Chem.AssignStereochemistryFrom3D(mol)
        assert Chem.MolToSmiles(mol) == row["canonical_smiles"]


def test_names_duplicates_and_degenerate_conformers(tmp_path):
    good = embedded("CCCCCO", 2)
    flat_zero = Chem.Mol(good, False, 0)
    for i in range(flat_zero.GetNumAtoms()):
        flat_zero.GetConformer(0).SetAtomPosition(i, Point3D(0, 0, 0))
    entries = [(good, 0, "pentanol"), (good, 1, "pentanol-b"), (good, 0, "pentanol-again"), (flat_zero, 0, "zeros")]
    entries += [(embedded(s, 1, seed=i + 1), 0, s) for i, s in enumerate(["CCO", "CCCN"])]
    sdf = write_sdf(tmp_path / "d.sdf", entries)
    manifest = prepare(PrepareConfig(output=str(tmp_path / "out"), input=sdf)).manifest
    rows = flat(tmp_path / "out")
    assert sorted(r["name"] for r in rows) == sorted(["pentanol", "pentanol-b", "CCO", "CCCN"])
    assert manifest["skipped"]["duplicate_conformer"]["count"] == 1
    assert manifest["skipped"]["duplicate_conformer"]["examples"][0].startswith("d.sdf:")
    assert manifest["skipped"]["coincident_atoms"]["count"] == 1
    assert geometry_problem(np.array([[0, 0, 0], [0.3, 0, 0], [3, 0, 0]], dtype=float)) == "atoms_too_close"
    assert geometry_problem(np.array([[0, 0, 0], [1.0, 0, 0], [3, 0, 0]], dtype=float)) == ""


def test_smi_second_column_is_the_name(tmp_path):
    smi = tmp_path / "named.smi"
    smi.write_text("CCO ethanol\nCCCN propylamine\nCCCCO butanol\n", encoding="utf-8")
    prepare(PrepareConfig(output=str(tmp_path / "out"), input=smi, conformers_per_molecule=1))
    assert {(r["canonical_smiles"], r["name"]) for r in flat(tmp_path / "out")} == {
        ("CCO", "ethanol"),
        ("CCCN", "propylamine"),
        ("CCCCO", "butanol"),
    }


@pytest.mark.parametrize("seed", [1, 42])
def test_ten_molecules_split_8_1_1_end_to_end(tmp_path, seed):
    smi = tmp_path / "ten.smi"
    smi.write_text("".join(f"{'C' * (i + 1)}O\n" for i in range(10)), encoding="utf-8")
    manifest = prepare(
        PrepareConfig(output=str(tmp_path / "out"), input=smi, conformers_per_molecule=1, seed=seed)
    ).manifest
    assert [manifest["counts"][n]["molecules"] for n in SPLITS] == [8, 1, 1]


def test_too_few_molecules_for_the_splits_is_an_error(tmp_path):
    smi = tmp_path / "two.smi"
    smi.write_text("CCO\nCCCO\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"2 molecule\(s\) cannot fill the 3 non-empty splits.*0\.8, 0\.1, 0\.1"):
        prepare(PrepareConfig(output=str(tmp_path / "out"), input=smi, conformers_per_molecule=1))


def test_truncated_sdf_gz_names_the_file_and_the_record(tmp_path):
    sdf = write_sdf(
        tmp_path / "m.sdf",
        [
            (embedded(s, 1, seed=i + 1), 0, s)
            for i, s in enumerate(["CCO"] * 1 + ["CCCCCCCCCCCCCCCCO", "CCCCCCCCCCCCCCCCN", "CCCCCCCCCCCCCCCCS"])
        ],
    )
    data = gzip.compress(sdf.read_bytes())
    cut = tmp_path / "cut.sdf.gz"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InputError, match=r"cut\.sdf\.gz: truncated or corrupt in the record starting at line \d+"):
        prepare(PrepareConfig(output=str(tmp_path / "out"), input=cut))


def test_gzip_output_holds_the_same_lines(tmp_path):
    smi = tmp_path / "five.smi"
    smi.write_text("CCO\nCCCN\nCCCCO\nOCCO\nCCOC\n", encoding="utf-8")
    prepare(PrepareConfig(output=str(tmp_path / "plain"), input=smi, conformers_per_molecule=1))
    manifest = prepare(
        PrepareConfig(output=str(tmp_path / "gz"), input=smi, conformers_per_molecule=1, compress=True)
    ).manifest
    assert all(f.endswith(".jsonl.gz") for n in SPLITS for f in manifest["counts"][n]["files"])
    assert all_rows(tmp_path / "gz") == all_rows(tmp_path / "plain")
    assert Counter(len(v) for v in all_rows(tmp_path / "gz").values()) == Counter([3, 1, 1])


def test_written_smiles_is_the_text_without_coordinates():
    from rdkit.Chem import rdDepictor

    from molgen3D.chem.enriched_smiles import EnrichedSmilesError, strip_coordinates
    from molgen3D.datasets.chemistry import conformer_text
    from molgen3D.datasets.inputs import bundled_smiles_file, read_smiles

    checked = 0
    for record in list(read_smiles(bundled_smiles_file()))[:400]:
        mol = Chem.MolFromSmiles(record.text)
        if mol is None:
            continue
        rdDepictor.Compute2DCoords(mol)
        try:
            canonical, text = conformer_text(mol, 0, 4)
        except (EnrichedSmilesError, ValueError):
            continue
        assert canonical == strip_coordinates(text) == Chem.MolToSmiles(Chem.MolFromSmiles(canonical))
        checked += 1
    assert checked > 350


def test_truncated_smi_gz_names_the_file_and_line(tmp_path):
    data = gzip.compress("".join(f"{'C' * (i % 30 + 1)}O name{i}\n" for i in range(5000)).encode())
    cut = tmp_path / "cut.smi.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.smi\.gz: truncated or corrupt at line \d+"):
        prepare(PrepareConfig(output=str(tmp_path / "out"), input=cut))


def test_sdf_and_smiles_shares_equal_a_single_run(tmp_path):
    mol = embedded("CCCCCO", 2)
    entries = [(mol, 0, "a"), (embedded("CCN", 1), 0, "b"), (mol, 0, "a-again"), (mol, 1, "a2")]
    entries += [(embedded(s, 1, seed=i + 1), 0, s) for i, s in enumerate(["CCCO", "OCCO", "CCOC"])]
    sdf = write_sdf(tmp_path / "s.sdf", entries)
    smi = tmp_path / "s.smi"
    smi.write_text("CCO one\nCCCN two\nOCC dup\nCCCCO three\nOCCO four\n", encoding="utf-8")
    for source in (sdf, smi):
        tag = source.suffix[1:]
        single = prepare(PrepareConfig(output=str(tmp_path / f"{tag}-1"), input=source, conformers_per_molecule=1))
        for index in range(3):
            prepare(
                PrepareConfig(
                    output=str(tmp_path / f"{tag}-3"),
                    input=source,
                    conformers_per_molecule=1,
                    shard_index=index,
                    num_shards=3,
                )
            )
        merged = prepare(
            PrepareConfig(
                output=str(tmp_path / f"{tag}-3"), input=source, conformers_per_molecule=1, finalize=True, num_shards=3
            )
        )
        assert merged.manifest == single.manifest
        assert all_rows(tmp_path / f"{tag}-3") == all_rows(tmp_path / f"{tag}-1")
    assert single.manifest["skipped"]["duplicate"]["count"] == 1  # OCC is CCO: across shares 0 and 1


def test_gzip_split_is_an_evaluate_reference(tmp_path):
    from molgen3D.scoring.references import read_references

    smi = tmp_path / "five.smi"
    smi.write_text("CCO\nCCCN\nCCCCO\nOCCO\nCCOC\n", encoding="utf-8")
    prepare(
        PrepareConfig(
            output=str(tmp_path / "gz"),
            input=smi,
            conformers_per_molecule=2,
            compress=True,
            split_fractions=(1.0, 0.0, 0.0),
        )
    )
    refs, precision = read_references(str(tmp_path / "gz" / "train"))
    assert sorted(len(r.conformers) for r in refs) == [2] * 5 and precision == 4


def test_straight_angle_flags_a_bent_atom_pulled_straight_but_not_an_alkyne():
    propane = embedded("CCC", 1)
    assert straight_angle(propane) == ""
    conf = propane.GetConformer()
    a, b = np.array(conf.GetAtomPosition(0)), np.array(conf.GetAtomPosition(1))
    conf.SetAtomPosition(2, Point3D(*(b + (b - a))))  # C-C-C at 180 degrees
    assert "atom 1 (C, SP3) at 180.0 degrees" in straight_angle(propane)
    assert straight_angle(embedded("CC#CC", 1)) == ""  # sp carbons are straight by nature


def test_etkdg_conformers_with_a_straightened_atom_are_skipped_and_counted():
    """ETKDGv3 (seed 42) writes this molecule's third conformer with an sp2 carbon at 180 degrees."""
    settings = Settings(
        conformers=4,
        seed=42,
        mmff=False,
        mmff_max_iters=200,
        precision=4,
        fragments="largest",
        max_atom_degree=None,
        max_conformers=None,
        min_distance=0.7,
    )
    unit = from_smiles(Record("CCCC[C@H](CC)COCCCNC(=O)c1cscc1OC", "mols.smi:3"), settings)
    assert len(unit.lines) == 3
    assert [(reason, kind, count) for reason, _, kind, count in unit.skips] == [
        ("embed_straight_angle", "conformer", 1)
    ]
    assert "mols.smi:3" in unit.skips[0][1] and "SP2) at 180.0 degrees" in unit.skips[0][1]
    for line in unit.lines:
        mol = decode(json.loads(line)["embedded_smiles"])
        assert straight_angle(Chem.AddHs(mol, addCoords=True)) == ""
