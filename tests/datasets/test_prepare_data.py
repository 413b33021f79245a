"""`molgen3d prepare-data`: SMILES/SDF -> split JSONL shards + manifest; determinism, skips, caching."""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from rdkit import Chem
from rdkit.Chem import rdDistGeom

from molgen3D.chem.enriched_smiles import decode, encode, strip_coordinates
from molgen3D.datasets.inputs import InputError, bundled_smiles_file, read_sdf, read_smiles
from molgen3D.datasets.prepare import PrepareConfig, PrepareError, cli, prepare, prepare_embedded_default
from molgen3D.datasets.splits import SPLITS, assign_splits, split_counts, validate_fractions

SMILES = [
    "CC(=O)Nc1ccc(O)cc1",
    "CC(C)Cc1ccc(C(C)C(=O)O)cc1",
    "C[NH2+]Cc1sccc1C",
    "OC(=O)c1ccccc1O",
    "CN1CCC[C@H]1c1cccnc1",
    "Cc1ccc2[nH]ccc2c1",
    "CC(=O)[O-].[Na+]",
    "F/C=C/c1ccccc1",
    "NC(=O)C1CCCCC1",
    "COc1ccc(CC(N)=O)cc1",
    "O=C1CCCN1",
    "Clc1ccc(Br)cc1",
]


def write_smi(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def read_split(root: Path, name: str) -> list[dict]:
    rows = []
    for shard in sorted((root / name).glob("part-*.jsonl")):
        rows += [json.loads(line) for line in shard.read_text(encoding="utf-8").splitlines()]
    return rows


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def config(tmp_path: Path, source: Path, out: str = "out", **kwargs) -> PrepareConfig:
    kwargs.setdefault("conformers_per_molecule", 2)
    return PrepareConfig(output=str(tmp_path / out), input=source, **kwargs)


@pytest.fixture(scope="module")
def smiles_file(tmp_path_factory) -> Path:
    return write_smi(tmp_path_factory.mktemp("input") / "mols.smi", SMILES)


@pytest.fixture(scope="module")
def built(tmp_path_factory, smiles_file) -> Path:
    root = tmp_path_factory.mktemp("built")
    prepare(PrepareConfig(output=str(root / "out"), input=smiles_file, conformers_per_molecule=3, workers=1))
    return root / "out"


@pytest.mark.slow
def test_output_is_byte_identical_for_one_and_two_workers(tmp_path, smiles_file, built):
    prepare(PrepareConfig(output=str(tmp_path / "two"), input=smiles_file, conformers_per_molecule=3, workers=2))
    one, two = tree_bytes(built), tree_bytes(tmp_path / "two")
    assert set(one) == set(two) and "manifest.json" in one
    assert one == two


def stereo_free(smiles: str) -> str:
    """The split key the data set groups by: largest fragment, no stereo."""
    mol = max(Chem.GetMolFrags(Chem.MolFromSmiles(smiles), asMols=True), key=lambda m: m.GetNumHeavyAtoms())
    Chem.RemoveStereochemistry(mol)
    return Chem.MolToSmiles(mol)


def test_lines_are_valid_conformers_split_by_molecule(built):
    manifest = json.loads((built / "manifest.json").read_text())
    owners: dict[str, set[str]] = defaultdict(set)
    per_molecule: Counter = Counter()
    for name in SPLITS:
        rows = read_split(built, name)
        assert manifest["counts"][name]["conformers"] == len(rows)
        assert manifest["counts"][name]["molecules"] == len({stereo_free(r["canonical_smiles"]) for r in rows})
        for row in rows:
            assert set(row) == {"canonical_smiles", "embedded_smiles"}
            assert strip_coordinates(row["embedded_smiles"]) == row["canonical_smiles"]
            assert Chem.MolToSmiles(decode(row["embedded_smiles"])) == row["canonical_smiles"]
            owners[stereo_free(row["canonical_smiles"])].add(name)
            per_molecule[stereo_free(row["canonical_smiles"])] += 1
    assert all(len(splits) == 1 for splits in owners.values())  # stereoisomers never in two splits
    assert set(owners) == {stereo_free(s) for s in SMILES}
    assert set(per_molecule.values()) == {3}
    assert manifest["counts"]["total"] == {"molecules": len(SMILES), "conformers": 3 * len(SMILES)}
    assert [manifest["counts"][n]["molecules"] for n in SPLITS] == [10, 1, 1]  # exact: 12 at 0.8/0.1/0.1
    assert manifest["input"]["file"] == "mols.smi" and len(manifest["input"]["sha256"]) == 64
    assert manifest["settings"]["conformers_per_molecule"] == 3 and "workers" not in manifest["settings"]
    assert manifest["versions"]["rdkit"] == __import__("rdkit").__version__
    assert manifest["skipped"] == {
        "fragments_removed": {"count": 1, "unit": "fragment", "examples": ["mols.smi:7: CC(=O)[O-].[Na+]"]}
    }


def test_conformers_of_one_molecule_differ_and_follow_the_seed(tmp_path, smiles_file, built):
    rows = read_split(built, "train")
    first = [r["embedded_smiles"] for r in rows if r["canonical_smiles"] == rows[0]["canonical_smiles"]]
    assert len(set(first)) == 3
    prepare(config(tmp_path, smiles_file, conformers_per_molecule=3, seed=7))
    assert tree_bytes(tmp_path / "out") != tree_bytes(built)


def test_bad_lines_are_counted_with_file_and_line(tmp_path):
    source = write_smi(
        tmp_path / "mixed.smi",
        ["CCO ethanol", "not_a_smiles", "", "C1CC", "OCC ethanol-again", "c1ccccc1 benzene", "C[O] radical"],
    )
    manifest = prepare(config(tmp_path, source, conformers_per_molecule=1, split_fractions=(1.0, 0.0, 0.0))).manifest
    skipped = manifest["skipped"]
    assert skipped["invalid_smiles"]["count"] == 2
    assert skipped["invalid_smiles"]["examples"] == ["mixed.smi:2: not_a_smiles", "mixed.smi:4: C1CC"]
    assert skipped["blank_line"] == {"count": 1, "unit": "line", "examples": ["mixed.smi:3"]}
    assert skipped["duplicate"]["count"] == 1
    assert skipped["duplicate"]["examples"][0].startswith("mixed.smi:5: OCC (same molecule as mixed.smi:1)")
    assert skipped["unrepresentable"]["count"] == 1 and "mixed.smi:7" in skipped["unrepresentable"]["examples"][0]
    assert manifest["counts"]["total"]["molecules"] == 2
    assert manifest["input"]["records_read"] == 7


def test_max_molecules_takes_the_first_records(tmp_path, smiles_file):
    manifest = prepare(config(tmp_path, smiles_file, conformers_per_molecule=1, max_molecules=4)).manifest
    written = {r["canonical_smiles"] for name in SPLITS for r in read_split(tmp_path / "out", name)}
    assert {stereo_free(s) for s in written} == {stereo_free(s) for s in SMILES[:4]}
    assert manifest["input"]["records_read"] == 4


def test_gzipped_csv_with_header_gives_the_same_data_as_smi(tmp_path, smiles_file):
    csv_gz = tmp_path / "mols.csv.gz"
    with gzip.open(csv_gz, "wt", encoding="utf-8") as f:
        f.write("id,SMILES\n" + "".join(f"m{i},{s}\n" for i, s in enumerate(SMILES[:5])))
    prepare(config(tmp_path, csv_gz, out="gz"))
    prepare(config(tmp_path, write_smi(tmp_path / "five.smi", SMILES[:5]), out="plain"))
    gz_rows = [r for name in SPLITS for r in read_split(tmp_path / "gz", name)]
    plain_rows = [r for name in SPLITS for r in read_split(tmp_path / "plain", name)]
    assert sorted(r.pop("name") for r in gz_rows) == [f"m{i}" for i in range(5) for _ in range(2)]  # the id column
    assert gz_rows == plain_rows
    assert json.loads(tree_bytes(tmp_path / "gz")["manifest.json"])["input"]["file"] == "mols.csv.gz"


def test_smiles_column_by_name_and_missing_column_error(tmp_path):
    tsv = tmp_path / "mols.tsv"
    tsv.write_text("name\tstructure\na\tCCO\nb\tCCN\n", encoding="utf-8")
    assert [r.text for r in read_smiles(tsv, "structure")] == ["CCO", "CCN"]
    assert [r.where for r in read_smiles(tsv, "structure")] == ["mols.tsv:2", "mols.tsv:3"]
    with pytest.raises(InputError, match=r"mols.tsv:1: no column 'smiles'.*structure"):
        prepare(config(tmp_path, tsv, smiles_column="smiles"))


def test_headerless_csv_uses_the_first_column():
    records = list(read_smiles(bundled_smiles_file()))
    assert len(records) == 10_000
    assert records[0].where == "wehi_mols.csv:1" and Chem.MolFromSmiles(records[0].text) is not None


def _embedded_sdf(path: Path, smiles: list[str], conformers: int) -> list[Chem.Mol]:
    mols = []
    for i, smi in enumerate(smiles):
        mol = Chem.AddHs(Chem.MolFromSmiles(smi))
        params = rdDistGeom.ETKDGv3()
        params.randomSeed = i + 1  # seed 0 can repeat a conformer exactly (then dropped as a duplicate)
        assert len(rdDistGeom.EmbedMultipleConfs(mol, conformers, params)) == conformers
        mols.append(mol)
    with Chem.SDWriter(str(path)) as writer:
        for conf_id in range(conformers):  # interleaved: molecule A, B, A, B, ...
            for mol in mols:
                writer.write(mol, confId=conf_id)
    return mols


def test_sdf_conformers_are_grouped_by_molecule(tmp_path):
    sdf = tmp_path / "confs.sdf"
    mols = _embedded_sdf(sdf, ["CC(=O)Nc1ccc(O)cc1", "C[C@H](N)C(=O)O"], conformers=3)
    flat_block = Chem.MolToMolBlock(Chem.MolFromSmiles("CCCl"))  # 2D: no conformer to learn from
    flat_line = len(sdf.read_text().splitlines()) + 1
    garbage_line = flat_line + len(flat_block.splitlines()) + 1
    with open(sdf, "a", encoding="utf-8") as f:
        f.write(flat_block + "$$$$\n")
        f.write("garbage\n\n\n  1  0  0  0  0  0  0  0  0  0999 V2000\nxx\nM  END\n$$$$\n")
    manifest = prepare(config(tmp_path, sdf, split_fractions=(1.0, 0.0, 0.0))).manifest
    rows = [r for name in SPLITS for r in read_split(tmp_path / "out", name)]
    expected: dict[str, list[str]] = defaultdict(list)
    for mol in list(Chem.SDMolSupplier(str(sdf), removeHs=False))[:6]:  # coordinates as the SDF stores them
        expected[Chem.MolToSmiles(Chem.RemoveHs(mol))].append(encode(mol))
    got: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        got[row["canonical_smiles"]].append(row["embedded_smiles"])
    assert dict(got) == dict(expected)  # every conformer, in file order, under its molecule
    assert set(got) == {Chem.MolToSmiles(Chem.RemoveHs(m)) for m in mols}
    assert manifest["input"]["kind"] == "sdf" and manifest["input"]["records_read"] == 8
    assert manifest["skipped"]["not_3d"]["count"] == 1
    assert manifest["skipped"]["not_3d"]["examples"][0].startswith(f"confs.sdf:{flat_line}:")
    assert manifest["skipped"]["invalid_record"]["examples"][0].startswith(f"confs.sdf:{garbage_line}:")
    assert manifest["skipped"]["invalid_record"]["count"] == 1
    assert manifest["counts"]["total"] == {"molecules": 2, "conformers": 6}


def test_sdf_records_beyond_max_molecules_are_counted(tmp_path):
    sdf = tmp_path / "confs.sdf"
    _embedded_sdf(sdf, ["CCO", "CCN", "CCC"], conformers=2)  # records: CCO CCN CCC CCO CCN CCC
    where = [r.where for r in read_sdf(sdf)]
    manifest = prepare(config(tmp_path, sdf, max_molecules=2, split_fractions=(0.5, 0.5, 0.0))).manifest
    assert manifest["counts"]["total"] == {"molecules": 2, "conformers": 4}
    assert manifest["skipped"]["beyond_max_molecules"] == {
        "count": 2,
        "unit": "conformer",
        "examples": [f"{where[2]}: CCC", f"{where[5]}: CCC"],
    }
    assert manifest["input"]["records_read"] == 6


def test_sdf_records_report_their_first_line(tmp_path):
    sdf = tmp_path / "two.sdf"
    block = Chem.MolToMolBlock(Chem.MolFromSmiles("CO"))
    sdf.write_text(block + "$$$$\n" + block + "$$$$\n", encoding="utf-8")
    lines_per_record = block.count("\n") + 1
    assert [r.where for r in read_sdf(sdf)] == ["two.sdf:1", f"two.sdf:{lines_per_record + 1}"]


def test_empty_input_fails_naming_the_file(tmp_path):
    empty = tmp_path / "empty.smi"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(PrepareError, match=r"empty\.smi: the input holds no molecules"):
        prepare(config(tmp_path, empty))


def test_nothing_usable_fails_with_the_skip_summary(tmp_path, capsys):
    bad = write_smi(tmp_path / "bad.smi", ["xyz", "C1CC"])
    with pytest.raises(PrepareError, match=r"(?s)bad\.smi: none of the 2 input records.*invalid_smiles: 2"):
        prepare(config(tmp_path, bad))
    assert cli(["--input", str(bad), "--output", str(tmp_path / "cli")]) == 1
    assert "bad.smi" in capsys.readouterr().err
    assert not (tmp_path / "cli" / "manifest.json").exists()


def test_missing_input_and_unknown_type_fail_clearly(tmp_path):
    with pytest.raises(PrepareError, match="nothere.smi: input file not found"):
        prepare(config(tmp_path, tmp_path / "nothere.smi"))
    with pytest.raises(InputError, match=r"unknown input type '\.xyz'"):
        prepare(config(tmp_path, tmp_path / "mols.xyz"))


def test_small_shards_hold_the_same_lines(tmp_path, smiles_file, built):
    prepare(config(tmp_path, smiles_file, conformers_per_molecule=3, lines_per_shard=4))
    for name in SPLITS:
        shards = sorted((tmp_path / "out" / name).glob("part-*.jsonl"))
        assert all(len(s.read_text().splitlines()) <= 4 for s in shards)
        assert [s.name for s in shards] == [f"part-{i:05d}.jsonl" for i in range(len(shards))]
        assert read_split(tmp_path / "out", name) == read_split(built, name)


def test_rebuild_removes_stale_shards(tmp_path, smiles_file):
    prepare(config(tmp_path, smiles_file, conformers_per_molecule=1, lines_per_shard=1))
    prepare(config(tmp_path, smiles_file, conformers_per_molecule=1, max_molecules=3))
    rows = [r for name in SPLITS for r in read_split(tmp_path / "out", name)]
    assert len(rows) == 3


def test_up_to_date_output_is_not_rebuilt(tmp_path, smiles_file):
    cfg = config(tmp_path, smiles_file, conformers_per_molecule=1)
    assert prepare(cfg).rebuilt
    manifest = tmp_path / "out" / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    again = prepare(config(tmp_path, smiles_file, conformers_per_molecule=1, workers=2))
    assert not again.rebuilt and manifest.stat().st_mtime_ns == stamp
    assert prepare(config(tmp_path, smiles_file, conformers_per_molecule=2)).rebuilt  # settings changed
    write_smi(smiles_file.parent / "grown.smi", SMILES + ["CCCC"])
    grown = config(tmp_path, smiles_file.parent / "grown.smi", conformers_per_molecule=2)
    assert prepare(grown).rebuilt  # input changed
    assert not prepare(grown).rebuilt
    assert prepare(config(tmp_path, smiles_file.parent / "grown.smi", conformers_per_molecule=2, force=True)).rebuilt


def test_a_data_set_built_under_older_rules_is_rebuilt(tmp_path, smiles_file, monkeypatch):
    """A rule change (e.g. dropping broken ETKDG conformers) must not leave an old data set in use."""
    from molgen3D.datasets import prepare as prepare_module

    cfg = config(tmp_path, smiles_file, conformers_per_molecule=1)
    assert prepare(cfg).rebuilt and not prepare(cfg).rebuilt
    monkeypatch.setattr(prepare_module, "RULES", prepare_module.RULES + 1)
    result = prepare(cfg)
    assert result.rebuilt and result.manifest["versions"]["rules"] == str(prepare_module.RULES)


def test_embedded_default_is_cached(tmp_path):
    out = prepare_embedded_default(tmp_path / "emb", max_molecules=5, conformers_per_molecule=1)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input"]["file"] == "wehi_mols.csv"
    assert manifest["counts"]["total"]["molecules"] + sum(s["count"] for s in manifest["skipped"].values()) == 5
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert prepare_embedded_default(tmp_path / "emb", max_molecules=5, conformers_per_molecule=1) == out
    assert (out / "manifest.json").stat().st_mtime_ns == stamp


def test_mmff_changes_coordinates_but_not_molecules(tmp_path, smiles_file):
    plain = prepare(config(tmp_path, smiles_file, out="plain", conformers_per_molecule=1, max_molecules=3))
    mmff = prepare(config(tmp_path, smiles_file, out="mmff", conformers_per_molecule=1, max_molecules=3, mmff=True))
    assert mmff.manifest["counts"] == plain.manifest["counts"]
    rows_plain = [r for n in SPLITS for r in read_split(tmp_path / "plain", n)]
    rows_mmff = [r for n in SPLITS for r in read_split(tmp_path / "mmff", n)]
    assert [r["canonical_smiles"] for r in rows_plain] == [r["canonical_smiles"] for r in rows_mmff]
    assert all(a["embedded_smiles"] != b["embedded_smiles"] for a, b in zip(rows_plain, rows_mmff))


def test_cli_writes_the_data_set(tmp_path, smiles_file):
    out = tmp_path / "cli"
    assert cli(["--input", str(smiles_file), "--output", str(out), "--conformers-per-molecule", "1"]) == 0
    assert json.loads((out / "manifest.json").read_text())["counts"]["total"]["conformers"] == len(SMILES)


def test_invalid_settings_name_the_option(tmp_path, smiles_file):
    with pytest.raises(ValueError, match="--conformers-per-molecule"):
        prepare(config(tmp_path, smiles_file, conformers_per_molecule=0))
    with pytest.raises(ValueError, match="split_fractions"):
        prepare(config(tmp_path, smiles_file, split_fractions=(0.5, 0.2, 0.2)))


def test_split_assignment_is_stable_exact_and_follows_the_fractions():
    names = [f"C{'C' * (i % 7)}O{i}" for i in range(20_000)]
    splits = assign_splits(names, 42, (0.8, 0.1, 0.1))
    assert Counter(splits.values()) == {"train": 16_000, "valid": 2_000, "test": 2_000}
    assert splits == assign_splits(reversed(names), 42, (0.8, 0.1, 0.1))  # input order does not matter
    assert splits != assign_splits(names, 43, (0.8, 0.1, 0.1))
    assert set(assign_splits(names[:500], 1, (1.0, 0.0, 0.0)).values()) == {"train"}
    assert set(assign_splits(names[:500], 1, (0.0, 0.0, 1.0)).values()) == {"test"}
    with pytest.raises(ValueError):
        validate_fractions((0.9, 0.2, -0.1))


@pytest.mark.parametrize("seed", [0, 1, 2, 42])
def test_ten_molecules_split_exactly_for_every_seed(seed):
    names = [f"C{'C' * i}O" for i in range(10)]
    assert Counter(assign_splits(names, seed, (0.8, 0.1, 0.1)).values()) == {"train": 8, "valid": 1, "test": 1}


def test_split_counts_largest_remainder_and_a_molecule_in_every_nonzero_split():
    assert split_counts(10, (0.8, 0.1, 0.1)) == [8, 1, 1]
    assert split_counts(7, (0.5, 0.25, 0.25)) == [3, 2, 2]  # 3.5, 1.75, 1.75: the larger remainders round up
    assert split_counts(3, (0.98, 0.01, 0.01)) == [1, 1, 1]
    assert split_counts(5, (1.0, 0.0, 0.0)) == [5, 0, 0]
    with pytest.raises(ValueError, match=r"2 molecule\(s\) cannot fill the 3 non-empty splits.*0.8, 0.1, 0.1"):
        split_counts(2, (0.8, 0.1, 0.1))
