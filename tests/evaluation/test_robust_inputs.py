"""Bad sample fields, absurd coordinates, wrong graphs, mismatched files, SDF/CSV inputs, long prompts."""

from __future__ import annotations

import json

import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from molgen3D.chem.enriched_smiles import decode
from molgen3D.datasets.skips import SkipLog
from molgen3D.scoring.checks import (
    GRAPH_MISMATCH,
    MAX_ABS_COORDINATE,
    NON_FINITE,
    OUT_OF_RANGE,
    coordinate_failure,
    single_conformer,
    stereo_matches,
)
from molgen3D.evaluation.evaluate import EvaluateConfig, evaluate
from molgen3D.scoring.options import ScoringOptions
from molgen3D.scoring.references import read_references
from molgen3D.generation.sample_io import BAD_FIELD, SamplesMismatchError, read_samples, read_smiles_inputs
from molgen3D.generation.sampling import PARSE_ERROR, PROMPT_TOO_LONG, SamplingConfig, finish_sample, plan_jobs

OK = "[C]<0.0000,0.0000,0.0000>[O]<1.4000,0.0000,0.0000>"


def jsonl(path, **fields):
    record = {"canonical_smiles": "CO", "sample_index": 0, "embedded_smiles": OK, "failure": None, **fields}
    path.write_text(json.dumps(record) + "\n")
    return read_samples(path)["CO"][0]


@pytest.mark.parametrize(
    "fields,reason",
    [
        ({"embedded_smiles": 12345}, BAD_FIELD),
        ({"embedded_smiles": ["x"]}, BAD_FIELD),
        ({"failure": 7, "embedded_smiles": None}, BAD_FIELD),
        ({"num_tokens": "many"}, BAD_FIELD),
        ({"embedded_smiles": "[C]<1e308,0.0,0.0>[O]<1.4,0.0,0.0>"}, OUT_OF_RANGE),
        ({"embedded_smiles": "[C]<1e400,0.0,0.0>[O]<1.4,0.0,0.0>"}, PARSE_ERROR),
        ({"embedded_smiles": "[C]<0.0,0.0,0.0>[N]<1.4,0.0,0.0>"}, GRAPH_MISMATCH),
    ],
)
def test_bad_sample_fields_are_failure_reasons(tmp_path, fields, reason):
    outcome = jsonl(tmp_path / "s.jsonl", **fields)
    assert outcome.mol is None and outcome.failure == reason


def test_non_finite_coordinates_fail():
    mol = Chem.Mol(decode(OK))
    mol.GetConformer().SetAtomPosition(1, (float("nan"), 0.0, 0.0))
    assert coordinate_failure(mol) == NON_FINITE and coordinate_failure(decode(OK)) is None


def test_the_coordinate_bound_is_inclusive_and_stated():
    inside = f"[C]<{MAX_ABS_COORDINATE:.1f},0.0,0.0>[O]<1.4,0.0,0.0>"
    outside = f"[C]<{MAX_ABS_COORDINATE + 0.1:.1f},0.0,0.0>[O]<1.4,0.0,0.0>"
    assert finish_sample(f"[CONFORMER]{inside}[/CONFORMER]", "CO", None)[1] is None
    assert finish_sample(f"[CONFORMER]{outside}[/CONFORMER]", "CO", None)[1] == OUT_OF_RANGE


def test_sdf_sample_with_another_graph_is_not_valid(tmp_path):
    path = tmp_path / "s.sdf"
    mol = Chem.AddHs(Chem.MolFromSmiles("CCN"))
    AllChem.EmbedMolecule(mol, randomSeed=1)
    mol.SetProp("smiles", "CCO")
    mol.SetIntProp("sample_index", 0)
    with Chem.SDWriter(str(path)) as w:
        w.write(mol)
    (outcome,) = read_samples(path)["CCO"]
    assert outcome.mol is None and outcome.failure == GRAPH_MISMATCH


def test_samples_for_other_molecules_name_them(tmp_path, fixture_data):
    path = tmp_path / "s.jsonl"
    path.write_text(
        json.dumps({"canonical_smiles": "CO", "sample_index": 0, "embedded_smiles": OK, "failure": None}) + "\n"
    )
    mismatch = r"no samples for 1 of the 1 reference molecules .*not references \(e\.g\. CO\)"
    with pytest.raises(SamplesMismatchError, match=mismatch):
        evaluate(
            EvaluateConfig(
                references=str(fixture_data / "test"),
                out=tmp_path / "e",
                samples=path,
                max_molecules=1,
                progress=False,
                scoring=ScoringOptions(rmsd_workers=1, posebusters="none"),
            )
        )


def broken_sdf(path, n_good=4):
    """Good 3D records with an unreadable record (3 atoms announced, 1 written) in the middle."""
    blocks = []
    for k in range(n_good):
        mol = Chem.AddHs(Chem.MolFromSmiles("CCO" if k % 2 else "CCN"))
        AllChem.EmbedMolecule(mol, randomSeed=k + 1)
        blocks.append(Chem.MolToMolBlock(mol))
    bad = (
        "broken\n     RDKit          3D\n\n  3  2  0  0  0  0  0  0  0  0999 V2000\n"
        "    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0\n  1  2  1  0\nM  END\n"
    )
    blocks.insert(2, bad)
    path.write_text("".join(b + "$$$$\n" for b in blocks))
    return path


def test_sdf_references_match_prepare_data(tmp_path):
    """Same molecules and skip reasons as prepare-data; records after an unreadable one are kept."""
    from molgen3D.datasets.prepare import PrepareConfig, prepare

    path = broken_sdf(tmp_path / "refs.sdf")
    skips = SkipLog()
    refs, _ = read_references(path, skips=skips)
    assert sorted(len(r.conformers) for r in refs) == [2, 2]
    assert skips.count("invalid_record") == 1 and "refs.sdf:" in skips.as_dict()["invalid_record"]["examples"][0]
    result = prepare(PrepareConfig(output=str(tmp_path / "data"), input=path, split_fractions=(1.0, 0.0, 0.0)))
    assert result.manifest["counts"]["total"]["conformers"] == 4
    assert set(result.manifest["skipped"]) == set(skips.as_dict())
    assert {k: v["count"] for k, v in result.manifest["skipped"].items()} == {
        k: v["count"] for k, v in skips.as_dict().items()
    }


def test_generate_reads_sdf_and_geom_csv(tmp_path):
    skips = SkipLog()
    sdf = read_smiles_inputs(broken_sdf(tmp_path / "m.sdf"), skips)
    assert [(m.smiles, m.n_conformers) for m in sdf] == [("CCN", 2), ("CCO", 2)]
    csv_file = tmp_path / "test_smiles.csv"
    csv_file.write_text("smiles,n_conformers,corrected_smiles\nC[NH3+],3,CN\nOCC,2,CCO\nCC,zero,CC\n")
    got = read_smiles_inputs(csv_file, skips)
    assert [(m.name, m.smiles, m.n_conformers) for m in got] == [("C[NH3+]", "CN", 3), ("OCC", "CCO", 2)]
    assert skips.count("bad_n_conformers") == 1


def test_prompt_longer_than_the_context_is_skipped_and_counted(compact_tokenizer):
    long_smiles = "C" * 60
    batches, failed = plan_jobs(compact_tokenizer, ["CO", long_smiles], [2, 3], SamplingConfig(), max_context=30)
    assert [o.failure for o in failed[1]] == [PROMPT_TOO_LONG] * 3
    jobs = [job for batch in batches for job in batch]
    assert {job.mol for job in jobs} == {0} and all(job.limit <= 30 - len(job.prompt) for job in jobs)


def mirrored(mol):
    out = Chem.Mol(mol)
    conf = out.GetConformer()
    for i in range(out.GetNumAtoms()):
        p = conf.GetAtomPosition(i)
        conf.SetAtomPosition(i, (-p.x, p.y, p.z))
    return out


@pytest.mark.parametrize("smiles", ["C[C@@H](O)[C@H](N)C(=O)O", "CC(C)Cc1ccc([C@H](C)C(=O)O)cc1", "C/C=C/[C@H](C)O"])
def test_stereo_from_coordinates(smiles):
    canonical = Chem.MolToSmiles(Chem.MolFromSmiles(smiles))
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=3)
    heavy = Chem.RemoveHs(mol)
    assert stereo_matches(heavy, canonical) is True
    assert stereo_matches(mirrored(heavy), canonical) is False  # the enantiomer
    assert stereo_matches(heavy, "CCO") is None  # nothing specified, nothing to check


def test_single_conformer_renumbers_to_id_zero():
    mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    ids = list(AllChem.EmbedMultipleConfs(mol, 3, randomSeed=1))
    one = single_conformer(mol, ids[2])
    assert one.GetNumConformers() == 1 and one.GetConformer().GetId() == 0
    assert (one.GetConformer().GetPositions() == mol.GetConformer(ids[2]).GetPositions()).all()


def test_k_is_2l_from_the_geom_csv(tmp_path):
    from molgen3D.generation.generate import GenerateConfig, sample_counts

    csv_file = tmp_path / "test_smiles.csv"
    csv_file.write_text("smiles,n_conformers,corrected_smiles\nOCC,3,CCO\nCN,1,CN\n")
    molecules = read_smiles_inputs(csv_file, SkipLog())
    cfg = GenerateConfig(model="m", smiles=csv_file, out=tmp_path / "o.sdf", samples_per_reference=2)
    assert sample_counts(molecules, cfg) == [6, 2]
    smi = tmp_path / "m.smi"
    smi.write_text("CCO\n")
    with pytest.raises(ValueError, match="needs L per molecule"):
        sample_counts(read_smiles_inputs(smi, SkipLog()), cfg)
