"""End to end on the fixture: generate -> SDF -> evaluate (model and ETKDG), metrics.json and the plot."""

from __future__ import annotations

import json

import pytest
from rdkit import Chem

from molgen3D.chem.enriched_smiles import decode, encode
from molgen3D.evaluation import evaluate as evaluate_module
from molgen3D.generation import generate as generate_module
from molgen3D.scoring.checks import same_graph
from molgen3D.evaluation.evaluate import EvaluateConfig, evaluate
from molgen3D.scoring.options import ScoringOptions
from molgen3D.scoring.report import format_table
from molgen3D.scoring.references import read_references
from molgen3D.generation.sample_io import MoleculeInput, read_samples, summary_path, write_samples
from molgen3D.scoring.outcome import SampleOutcome

from .helpers import fixture_lines


@pytest.fixture(scope="module")
def smiles_file(tmp_path_factory, fixture_data):
    """The first two test-split molecules written non-canonically (explicit H, other atom order) plus a bad line."""
    smiles = [r.smiles for r in read_references(fixture_data / "test", max_molecules=2)[0]]
    path = tmp_path_factory.mktemp("inputs") / "mols.smi"
    lines = [
        f"{Chem.MolToSmiles(Chem.AddHs(Chem.MolFromSmiles(s)), doRandom=True)} mol{i}" for i, s in enumerate(smiles)
    ]
    path.write_text("\n".join([*lines, "C1CC not_a_ring"]) + "\n")
    return path, smiles


@pytest.fixture(scope="module")
def generated(tmp_path_factory, compact_model_dir, smiles_file):
    path, _ = smiles_file
    out = tmp_path_factory.mktemp("gen") / "samples.sdf"
    code = generate_module.cli(
        [
            "--model",
            str(compact_model_dir),
            "--smiles",
            str(path),
            "--num-samples",
            "6",
            "--out",
            str(out),
            "--max-new-tokens",
            "400",
            "--batch-size",
            "6",
            "--no-progress",
            "--threads",
            "1",
        ]
    )
    assert code == 0
    return out


def test_generate_writes_one_record_per_sample_and_a_summary(generated, smiles_file):
    _, canonical = smiles_file
    summary = json.loads(summary_path(generated).read_text())
    assert summary["samples_requested"] == 12
    assert summary["input_skipped"]["invalid_smiles"]["count"] == 1
    assert summary["input_skipped"]["invalid_smiles"]["examples"][0].endswith("mols.smi:3: 'C1CC'")
    records = [m for m in Chem.SDMolSupplier(str(generated), removeHs=False)]
    failed = sum(e["count"] for e in summary["failures"].values())
    assert len(records) == summary["samples_valid"] == 12 - failed
    assert [m["smiles"] for m in summary["molecules"]] == canonical  # prompts are canonical whatever the input
    for rec in records:
        assert same_graph(rec, rec.GetProp("smiles"))
        assert rec.GetProp("_Name") in ("mol0", "mol1") and 0 <= rec.GetIntProp("sample_index") < 6
    assert {rec.GetIntProp("sample_index") for rec in records if rec.GetProp("_Name") == "mol0"} <= set(range(6))
    samples = read_samples(generated)
    assert sum(map(len, samples.values())) == 12  # failures come back from the sidecar


@pytest.mark.slow
def test_evaluate_samples_file_against_etkdg(generated, tmp_path, fixture_data):
    out = tmp_path / "eval"
    metrics = evaluate(
        EvaluateConfig(
            references=str(fixture_data / "test"),
            out=out,
            samples=generated,
            baseline="etkdg",
            max_molecules=2,
            progress=False,
            scoring=ScoringOptions(rmsd_workers=1),
        )
    )
    assert (out / "coverage.png").stat().st_size > 10_000
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["methods"].keys() == {"model", "etkdg"}
    references, _ = read_references(fixture_data / "test", max_molecules=2)
    assert on_disk["num_molecules"] == 2 and on_disk["reference_conformers"] == sum(
        len(r.conformers) for r in references
    )
    etkdg = on_disk["methods"]["etkdg"]
    assert etkdg["samples_requested"] == 2 * on_disk["reference_conformers"] and etkdg["validity"] == 1.0
    for name in ("model", "etkdg"):
        method = on_disk["methods"][name]
        assert len(method["per_molecule"]) == 2 and len(method["curves"]["cov_r"]) == 60
        agg = method["aggregate"]["cov_r"]
        values = [m["cov_r"] for m in method["per_molecule"]]
        assert agg["mean"] == pytest.approx(sum(values) / 2)
    # ETKDG conformers of drug-like molecules sit within a few A of other ETKDG conformers; a random model's
    # shapes cannot (the distance bounds keep its atoms at sane distances, not in the right shape)
    assert etkdg["aggregate"]["mat_r"]["mean"] < 3.0
    model = on_disk["methods"]["model"]
    assert model["aggregate"]["mat_r"]["mean"] > etkdg["aggregate"]["mat_r"]["mean"] + 1.0
    assert model["aggregate"]["cov_r"]["mean"] == 0.0
    assert on_disk["posebusters"]["available"] is True
    table = format_table(metrics)
    assert "etkdg" in table and "model" in table and "COV-R" in table
    assert (out / "table.txt").read_text().strip() == table


def test_evaluate_samples_from_the_model_directly(compact_model_dir, tmp_path, fixture_data):
    code = evaluate_module.cli(
        [
            "--references",
            str(fixture_data / "test"),
            "--out",
            str(tmp_path / "e"),
            "--model",
            str(compact_model_dir),
            "--max-molecules",
            "1",
            "--max-conformers",
            "1",
            "--max-new-tokens",
            "400",
            "--no-progress",
            "--rmsd-workers",
            "1",
        ]
    )
    assert code == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    model = metrics["methods"]["model"]
    assert list(metrics["methods"]) == ["model"] and model["samples_requested"] == 2
    assert model["settings"]["precision"] == 4  # read from the reference text
    assert model["samples_per_second"] > 0


def test_evaluate_needs_something_to_score(tmp_path, fixture_data, capsys):
    with pytest.raises(SystemExit) as stop:  # tyro reports invalid settings and exits 2
        evaluate_module.cli(["--references", str(fixture_data / "test"), "--out", str(tmp_path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "nothing to score" in err and "--baseline etkdg" in err


def test_generate_reports_a_missing_model(tmp_path, capsys):
    smi = tmp_path / "m.smi"
    smi.write_text("CCO\n")
    code = generate_module.cli(
        ["--model", str(tmp_path / "nope"), "--smiles", str(smi), "--out", str(tmp_path / "o.sdf")]
    )
    assert code == 1 and "not a directory" in capsys.readouterr().err


def scaled(mol: Chem.Mol, factor: float) -> Chem.Mol:
    """The conformer blown up by `factor`: the same graph, far from the original when factor is large."""
    out = Chem.Mol(mol)
    conf = out.GetConformer()
    for i in range(out.GetNumAtoms()):
        conf.SetAtomPosition(i, conf.GetAtomPosition(i) * factor)
    return out


def test_a_samples_file_is_scored_on_exactly_k_samples(tmp_path, fixture_data):
    """K = 2L: samples beyond K are left out and counted, a shortfall is counted as failed samples."""
    (ref,), _ = read_references(fixture_data / "test", max_molecules=1, max_conformers=1)
    other = sorted({r["canonical_smiles"] for r in fixture_lines(fixture_data, "test")} - {ref.smiles})[0]
    far, exact = scaled(ref.conformers[0], 5.0), ref.conformers[0]
    outcomes = [
        [SampleOutcome(k, m, None, encode(m), 0) for k, m in enumerate([far, far, exact])],
        [SampleOutcome(0, None, "max_new_tokens", "", 0)],
    ]
    path = tmp_path / "samples.jsonl"
    write_samples(path, [MoleculeInput("ref", ref.smiles, "x:1"), MoleculeInput("other", other, "x:2")], outcomes)
    metrics = evaluate(
        EvaluateConfig(
            references=str(fixture_data / "test"),
            out=tmp_path / "eval",
            samples=path,
            max_molecules=1,
            max_conformers=1,
            progress=False,
            scoring=ScoringOptions(rmsd_workers=1),
        )
    )
    model = metrics["methods"]["model"]
    # L = 1, K = 2: the exact conformer is sample 2, beyond K, so nothing covers the reference
    assert model["samples_requested"] == 2 and model["per_molecule"][0]["samples"] == 2
    assert model["per_molecule"][0]["cov_r"] == 0.0 and model["per_molecule"][0]["mat_r"] > 1.0
    assert model["samples_unused"]["beyond_k"]["count"] == 1
    assert model["samples_unused"]["not_a_reference"]["count"] == 1
    assert "left out (beyond_k): 1" in format_table(metrics)

    write_samples(path, [MoleculeInput("ref", ref.smiles, "x:1")], [outcomes[0][2:]])
    short = evaluate(
        EvaluateConfig(
            references=str(fixture_data / "test"),
            out=tmp_path / "eval2",
            samples=path,
            max_molecules=1,
            max_conformers=1,
            progress=False,
            scoring=ScoringOptions(rmsd_workers=1),
        )
    )
    model = short["methods"]["model"]
    assert model["samples_requested"] == 2 and model["samples_valid"] == 1
    assert model["failures"]["not_in_samples_file"]["count"] == 1 and model["per_molecule"][0]["cov_r"] == 1.0


def test_sdf_failures_take_the_missing_sample_indices(tmp_path):
    ok = "[C]<0.0000,0.0000,0.0000>[O]<1.4000,0.0000,0.0000>"
    molecules = [MoleculeInput("methanol", "CO", "x:1")]
    outcomes = [
        [
            SampleOutcome(0, None, "max_new_tokens", "", 9),
            SampleOutcome(1, decode(ok), None, ok, 30),
            SampleOutcome(2, None, "grammar_dead_end", "", 3),
        ]
    ]
    path = tmp_path / "s.sdf"
    write_samples(path, molecules, outcomes)
    summary_path(path).write_text(json.dumps({"molecules": generate_module.molecule_summaries(molecules, outcomes)}))
    back = sorted(read_samples(path)["CO"], key=lambda o: o.sample_index)
    assert [o.sample_index for o in back] == [0, 1, 2]
    assert back[1].mol is not None and {back[0].failure, back[2].failure} == {"max_new_tokens", "grammar_dead_end"}


@pytest.mark.parametrize(
    "line,problem",
    [
        ("{not json", "JSONDecodeError"),
        ('{"canonical_smiles": "CO"}', "KeyError"),
        ('["CO", 0]', "TypeError"),
    ],
)
def test_bad_jsonl_sample_line_names_file_and_line(tmp_path, line, problem):
    path = tmp_path / "s.jsonl"
    good = json.dumps({"canonical_smiles": "CO", "sample_index": 0, "embedded_smiles": None, "failure": "x"})
    path.write_text(f"{good}\n{line}\n")
    with pytest.raises(ValueError, match=rf"s\.jsonl:2: not a sample line .*{problem}"):
        read_samples(path)


def test_relax_mmff_scores_each_method_again_after_a_force_field(tmp_path, fixture_data):
    """--relax mmff adds `<method>+mmff` rows from the same samples; the unrelaxed rows are unchanged."""
    out = tmp_path / "eval"
    common = dict(
        references=str(fixture_data / "test"),
        baseline="etkdg",
        max_molecules=2,
        progress=False,
        scoring=ScoringOptions(rmsd_workers=1, posebusters="none"),
    )
    plain = evaluate(EvaluateConfig(out=tmp_path / "plain", **common))
    metrics = evaluate(EvaluateConfig(out=out, relax="mmff", mmff_max_iters=50, **common))
    assert set(metrics["methods"]) == {"etkdg", "etkdg+mmff"}
    assert metrics["methods"]["etkdg"]["aggregate"] == plain["methods"]["etkdg"]["aggregate"]
    relaxed = metrics["methods"]["etkdg+mmff"]
    assert relaxed["samples_requested"] == metrics["methods"]["etkdg"]["samples_requested"]
    assert relaxed["validity"] == 1.0 and "relaxed with MMFF94" in relaxed["source"]
    assert sum(relaxed["settings"]["outcomes"].values()) > 0
    assert (out / "samples" / "etkdg+mmff.sdf").is_file()
    assert "etkdg+mmff" in (out / "table.txt").read_text()
    # The force field moves atoms: the relaxed samples are not the ETKDG samples they started from.
    mat = [metrics["methods"][n]["aggregate"]["mat_r"]["mean"] for n in ("etkdg", "etkdg+mmff")]
    assert mat[0] != mat[1]
