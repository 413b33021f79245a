"""Reference loading (SDF and JSONL), input SMILES files, sample files, and a baseline-only evaluation."""

from __future__ import annotations

import json

import pytest
from rdkit import Chem

from molgen3D.chem.enriched_smiles import decode
from molgen3D.evaluation.evaluate import EvaluateConfig, evaluate
from molgen3D.datasets.skips import SkipLog
from molgen3D.scoring.options import ScoringOptions
from molgen3D.scoring.references import coordinate_precision, read_references
from molgen3D.generation.sample_io import MoleculeInput, read_samples, read_smiles_inputs, write_samples
from molgen3D.scoring.outcome import SampleOutcome

from .helpers import fixture_lines


def counts(skips: SkipLog) -> dict[str, int]:
    return {reason: entry["count"] for reason, entry in skips.as_dict().items()}


def first_example(skips: SkipLog, reason: str) -> str:
    return skips.as_dict()[reason]["examples"][0]


@pytest.fixture(scope="module")
def reference_sdf(tmp_path_factory, fixture_data):
    """The test split as an SDF with hydrogens, conformers of the two molecules interleaved, plus a 2D record."""
    lines = fixture_lines(fixture_data, "test")
    smiles = sorted({r["canonical_smiles"] for r in lines})[:2]
    per_mol = {
        s: [Chem.AddHs(decode(r["embedded_smiles"]), addCoords=True) for r in lines if r["canonical_smiles"] == s]
        for s in smiles
    }
    path = tmp_path_factory.mktemp("sdf") / "refs.sdf"
    writer = Chem.SDWriter(str(path))
    for a, b in zip(per_mol[smiles[0]], per_mol[smiles[1]]):
        writer.write(a)
        writer.write(b)
    flat = Chem.MolFromSmiles("CCO")
    flat.Compute2DCoords()
    writer.write(flat)
    writer.close()
    return path, smiles, per_mol


def test_sdf_references_group_by_molecule(reference_sdf):
    path, smiles, per_mol = reference_sdf
    skips = SkipLog()
    molecules, precision = read_references(path, skips=skips)
    assert precision is None
    assert [m.smiles for m in molecules] == smiles
    for m in molecules:
        assert len(m.conformers) == len(per_mol[m.smiles])
        assert all(c.GetNumAtoms() == Chem.MolFromSmiles(m.smiles).GetNumAtoms() for c in m.conformers)  # H removed
    assert counts(skips) == {"not_3d": 1} and first_example(skips, "not_3d").startswith("refs.sdf:")
    capped, _ = read_references(path, max_molecules=1, max_conformers=2)
    assert len(capped) == 1 and len(capped[0].conformers) == 2


def test_jsonl_references_count_bad_lines(fixture_data, tmp_path):
    lines = (fixture_data / "valid" / "part-00000.jsonl").read_text().splitlines()
    broken = tmp_path / "split.jsonl"
    first = json.loads(lines[0])
    bad_text = json.dumps({"canonical_smiles": first["canonical_smiles"], "embedded_smiles": "[C]<1.0,2.0>"})
    broken.write_text("\n".join([*lines, "{not json", '{"canonical_smiles": "C"}', bad_text]) + "\n")
    skips = SkipLog()
    molecules, precision = read_references(broken, skips=skips)
    assert precision == 4 == coordinate_precision(first["embedded_smiles"])
    assert len(molecules) == 4 and sum(len(m.conformers) for m in molecules) == len(lines)
    assert counts(skips) == {"bad_json": 1, "missing_key": 1, "decode_error": 1}
    assert first_example(skips, "bad_json").startswith(f"{broken}:{len(lines) + 1}")


def test_missing_references_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no JSONL files"):
        read_references(tmp_path / "nowhere")


def test_smiles_inputs_csv_with_names(tmp_path):
    csv_file = tmp_path / "in.csv"
    csv_file.write_text("ID,SMILES\naspirin,OC(=O)c1ccccc1OC(C)=O\nbroken,C1CC\n,[2H]C([2H])([2H])O\n")
    skips = SkipLog()
    got = read_smiles_inputs(csv_file, skips)
    assert [m.name for m in got] == ["aspirin", "[2H]C([2H])([2H])O"]
    assert got[0].smiles == "CC(=O)Oc1ccccc1C(=O)O"  # canonical
    assert counts(skips) == {"invalid_smiles": 1} and first_example(skips, "invalid_smiles").startswith(f"{csv_file}:3")
    with pytest.raises(ValueError, match="no SMILES column"):
        (tmp_path / "x.csv").write_text("a,b\n1,2\n")
        read_smiles_inputs(tmp_path / "x.csv", skips)


def test_jsonl_samples_keep_failures(tmp_path):
    ok = "[C]<0.0000,0.0000,0.0000>[O]<1.4000,0.0000,0.0000>"
    outcomes = [[SampleOutcome(0, decode(ok), None, ok, 30), SampleOutcome(1, None, "max_new_tokens", "[C]<1.", 99)]]
    path = tmp_path / "s.jsonl"
    write_samples(path, [MoleculeInput("methanol", "CO", "x:1")], outcomes)
    back = read_samples(path)["CO"]
    assert [(o.sample_index, o.failure) for o in back] == [(0, None), (1, "max_new_tokens")]
    assert back[0].mol.GetNumAtoms() == 2 and back[1].mol is None


def test_baseline_only_on_sdf_references(reference_sdf, tmp_path):
    path, smiles, per_mol = reference_sdf
    metrics = evaluate(
        EvaluateConfig(
            references=str(path),
            out=tmp_path,
            baseline="etkdg",
            progress=False,
            scoring=ScoringOptions(rmsd_workers=1),
            samples_per_reference=1,
        )
    )
    assert list(metrics["methods"]) == ["etkdg"]
    etkdg = metrics["methods"]["etkdg"]
    assert etkdg["samples_requested"] == sum(len(v) for v in per_mol.values())
    assert [m["smiles"] for m in etkdg["per_molecule"]] == smiles
    assert etkdg["rmsd"]["computed"] == sum(len(v) ** 2 for v in per_mol.values())
    assert metrics["references_skipped"]["not_3d"]["count"] == 1
    assert (tmp_path / "coverage.png").is_file()
