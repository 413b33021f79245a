"""Evaluation keeps its work (samples SDF, table, resume, rescore); chemistry columns; generate options at scale."""

from __future__ import annotations

import json

import pytest
from rdkit import Chem

from molgen3D.generation import generate as generate_module
from molgen3D.generation import model_io
from molgen3D.evaluation import rescore as rescore_module
from molgen3D.scoring.geometry import clash_count, geometry_report
from molgen3D.scoring.posebusters import posebusters_checks
from molgen3D.evaluation.evaluate import EvaluateConfig, evaluate, samples_file
from molgen3D.scoring.options import ScoringOptions
from molgen3D.scoring.references import read_references
from molgen3D.generation.sample_io import iter_sdf_samples
from molgen3D.scoring.outcome import SampleOutcome

from .helpers import fixture_lines

FAST = dict(progress=False, max_conformers=2, max_molecules=2)
QUICK = ScoringOptions(rmsd_workers=1, posebusters="none")


def stored(path):
    return [
        (s, o.sample_index, o.failure, None if o.mol is None else Chem.MolToMolBlock(o.mol))
        for o, s, _ in iter_sdf_samples(path)
    ]


@pytest.fixture(scope="module")
def etkdg_run(tmp_path_factory, fixture_data):
    out = tmp_path_factory.mktemp("eval")
    metrics = evaluate(
        EvaluateConfig(
            references=str(fixture_data / "test"),
            out=out,
            baseline="etkdg",
            scoring=ScoringOptions(rmsd_workers=1),
            **FAST,
        )
    )
    return out, metrics


def test_evaluate_writes_samples_in_molecule_order_and_the_table(etkdg_run, fixture_data):
    out, metrics = etkdg_run
    references, _ = read_references(fixture_data / "test", max_molecules=2, max_conformers=2)
    records = list(iter_sdf_samples(samples_file(out, "etkdg")))
    assert [(s, idx) for _, s, idx in records] == [
        (r.smiles, i) for i, r in enumerate(references) for _ in range(2 * len(r.conformers))
    ]
    assert [o.sample_index for o, _, _ in records[:4]] == [0, 1, 2, 3]
    table = (out / "table.txt").read_text()
    assert "COV-R" in table and "stereo OK" in table and "internal_energy" in table


def test_posebusters_energy_check_runs_on_every_etkdg_conformer(etkdg_run):
    _, metrics = etkdg_run
    pb = metrics["posebusters"]["methods"]["etkdg"]
    assert pb["samples"] == metrics["methods"]["etkdg"]["samples_valid"]
    assert pb["checks"]["internal_energy"]["not_run"] == 0  # conformer ids other than 0 used to fail here
    assert pb["checks"]["bond_lengths"]["pass_rate"] == 1.0


def test_resume_continues_from_what_is_written(etkdg_run, fixture_data, tmp_path, monkeypatch):
    out, metrics = etkdg_run
    full = stored(samples_file(out, "etkdg"))
    interrupted = tmp_path / "e"
    evaluate(
        EvaluateConfig(references=str(fixture_data / "test"), out=interrupted, baseline="etkdg", scoring=QUICK, **FAST)
    )
    path = samples_file(interrupted, "etkdg")
    text = path.read_text()
    first_molecule = sum(1 for r in full if r[0] == full[0][0])
    records = text.split("$$$$\n")
    path.write_text("$$$$\n".join(records[: first_molecule + 1]) + "$$$$\n" + records[first_molecule + 1][:40])
    calls = []
    from molgen3D.evaluation import evaluate as evaluate_module

    real = evaluate_module.etkdg_baseline
    monkeypatch.setattr(evaluate_module, "etkdg_baseline", lambda s, k, **kw: calls.append(s) or real(s, k, **kw))
    evaluate(
        EvaluateConfig(
            references=str(fixture_data / "test"),
            out=interrupted,
            baseline="etkdg",
            scoring=QUICK,
            resume=True,
            **FAST,
        )
    )
    assert len(calls) == 1 and len(calls[0]) == 1  # only the second molecule was sampled again
    assert stored(path) == full
    run = json.loads((interrupted / "run.json").read_text())
    assert run["methods"]["etkdg"]["resumed_at_molecule"] == 1 and run["methods"]["etkdg"]["complete"]
    with pytest.raises(ValueError, match="other settings"):
        evaluate(
            EvaluateConfig(
                references=str(fixture_data / "test"),
                out=interrupted,
                baseline="etkdg",
                scoring=QUICK,
                resume=True,
                etkdg_seed=5,
                **FAST,
            )
        )


def test_rescore_at_another_threshold_without_sampling(etkdg_run, monkeypatch, capsys):
    out, metrics = etkdg_run
    from molgen3D.evaluation import evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "etkdg_baseline", lambda *a, **k: pytest.fail("rescore sampled"))
    assert rescore_module.cli([str(out), "--threshold", "0.5", "--posebusters", "none"]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["threshold"] == 0.5 and "RMSD < 0.5 A" in (out / "table.txt").read_text()
    before, after = metrics["methods"]["etkdg"], again["methods"]["etkdg"]
    assert after["rmsd"] == before["rmsd"] and after["per_molecule"][0]["mat_r"] == before["per_molecule"][0]["mat_r"]
    assert all(a["cov_r"] <= b["cov_r"] for a, b in zip(after["per_molecule"], before["per_molecule"]))
    assert rescore_module.cli([str(out.parent / "nowhere")]) == 1 and "run.json" in capsys.readouterr().err


def test_geometry_report_sees_stretched_bonds_and_clashes(fixture_data):
    (ref,), _ = read_references(fixture_data / "test", max_molecules=1)
    good = ref.conformers[0]
    squashed = Chem.Mol(good)
    conf = squashed.GetConformer()
    for i in range(squashed.GetNumAtoms()):
        conf.SetAtomPosition(i, conf.GetAtomPosition(i) * 0.5)
    ok = geometry_report([ref], [[SampleOutcome(0, good, None, "", 0)]])
    bad = geometry_report([ref], [[SampleOutcome(0, squashed, None, "", 0)]])
    assert ok["bond_length_mae"] < 0.05 and bad["bond_length_mae"] > 0.5
    assert ok["clash_free"] == 1.0 and clash_count(good) == 0
    assert bad["clash_free"] == 0.0 and clash_count(squashed) > 0
    assert bad["bond_angle_mae"] == pytest.approx(ok["bond_angle_mae"], abs=1.0)  # scaling keeps angles


def test_posebusters_counts_checks_it_could_not_run():
    bad = posebusters_checks([Chem.MolFromMolBlock(Chem.MolToMolBlock(Chem.MolFromSmiles("CC")))], "mol")
    assert bad["samples"] == 1 and set(bad["checks"]) >= {"bond_lengths", "internal_energy"}


@pytest.fixture(scope="module")
def smiles_file(tmp_path_factory, fixture_data):
    smiles = sorted({r["canonical_smiles"] for r in fixture_lines(fixture_data, "test")}, key=len)[:2]
    path = tmp_path_factory.mktemp("in") / "m.smi"
    path.write_text("\n".join(smiles) + "\n")
    return path


def run_generate(model, smiles_file, out, *extra):
    code = generate_module.cli(
        [
            "--model",
            str(model),
            "--smiles",
            str(smiles_file),
            "--out",
            str(out),
            "--num-samples",
            "3",
            "--max-new-tokens",
            "300",
            "--batch-size",
            "2",
            "--no-progress",
            "--threads",
            "1",
            "--device",
            "cpu",
            *extra,
        ]
    )
    assert code == 0
    return json.loads((out.with_name(f"{out.stem}.summary.json")).read_text())


@pytest.mark.slow
def test_same_samples_with_one_or_two_workers(compact_model_dir, smiles_file, tmp_path):
    one = run_generate(compact_model_dir, smiles_file, tmp_path / "one.jsonl")
    two = run_generate(compact_model_dir, smiles_file, tmp_path / "two.jsonl", "--workers", "2")
    assert two["workers"] == 2
    assert (tmp_path / "one.jsonl").read_text() == (tmp_path / "two.jsonl").read_text()
    assert one["samples_requested"] == 6


def test_add_hs_and_mmff_are_counted(compact_model_dir, smiles_file, tmp_path):
    summary = run_generate(
        compact_model_dir,
        smiles_file,
        tmp_path / "h.sdf",
        "--add-hs",
        "--mmff",
        "--mmff-max-iters",
        "5",
        "--no-geometry",
    )
    h = summary["hydrogens"]
    assert h["added"] == summary["samples_valid"] > 0
    assert sum(v for k, v in h.items() if k.startswith("mmff_")) == h["added"]
    for mol in Chem.SDMolSupplier(str(tmp_path / "h.sdf"), removeHs=False):
        assert any(a.GetAtomicNum() == 1 for a in mol.GetAtoms()) and mol.HasProp("mmff")


def test_cuda_is_refused_without_a_gpu(compact_model_dir, smiles_file, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code = generate_module.cli(
        [
            "--model",
            str(compact_model_dir),
            "--smiles",
            str(smiles_file),
            "--out",
            str(tmp_path / "x.sdf"),
            "--device",
            "cuda",
        ]
    )
    assert code == 1 and "no CUDA device" in capsys.readouterr().err
    assert str(model_io.resolve_device("auto")) == "cpu"
    assert model_io.model_dtype("cuda") == torch.bfloat16 and model_io.model_dtype("cpu") == torch.float32


def test_checkpoint_conversion_goes_to_the_cache(tmp_path, monkeypatch):
    import torch
    import torch.distributed.checkpoint as dcp

    from molgen3D.hf.checkpoint_step import write_manifest

    step = tmp_path / "run" / "checkpoint" / "step-10"
    dcp.save({"w": torch.ones(4)}, checkpoint_id=str(step), no_dist=True)  # a conversion needs an intact step
    write_manifest(step)
    monkeypatch.setenv("MOLGEN3D_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_export(step_dir, out_dir, overwrite=False):
        calls.append(out_dir)
        (out_dir / "config.json").write_text("{}")
        return out_dir

    from molgen3D.hf import export as hf_export

    monkeypatch.setattr(hf_export, "export_step", fake_export)
    first = model_io.model_directory(str(step))
    assert model_io.model_directory(str(step)) == first and len(calls) == 1  # converted once
    assert first.parent == tmp_path / "cache" / "exports" and not calls[0].exists()  # temp folder renamed
    assert [p.name for p in first.parent.iterdir()] == [first.name]


def test_cuda_workers_take_gpus_round_robin(monkeypatch):
    import torch

    from molgen3D.generation.parallel import worker_devices

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert worker_devices("cuda", 3) == ["cuda:0", "cuda:1", "cuda:0"]
    assert worker_devices("cuda:1", 1) == ["cuda:1"]
    assert worker_devices("cpu", 2) == ["cpu", "cpu"]


def test_stereo_rate_counts_the_inverted_sample_and_the_sdf_says_which(tmp_path):
    """Threonine: one sample as the prompt says, one mirrored (both centres inverted): valid both, stereo 50%."""
    from rdkit.Chem import AllChem

    from molgen3D.scoring.geometry import mark_stereo
    from molgen3D.scoring.references import ReferenceMolecule
    from molgen3D.generation.sample_io import MoleculeInput, write_samples

    smiles = Chem.MolToSmiles(Chem.MolFromSmiles("C[C@@H](O)[C@H](N)C(=O)O"))
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=7)
    good = Chem.RemoveHs(mol)
    bad = Chem.Mol(good)
    conf = bad.GetConformer()
    for i in range(bad.GetNumAtoms()):
        p = conf.GetAtomPosition(i)
        conf.SetAtomPosition(i, (-p.x, p.y, p.z))
    ref = ReferenceMolecule(smiles, [good], name="threonine")
    outcomes = [[SampleOutcome(0, good, None, "", 0), SampleOutcome(1, bad, None, "", 0)]]
    report = geometry_report([ref], outcomes)
    assert report["stereo_checked"] == 2 and report["stereo_ok"] == 0.5
    assert mark_stereo([smiles], outcomes) == {"checked": 2, "ok": 1}
    path = tmp_path / "s.sdf"
    write_samples(path, [MoleculeInput("threonine", smiles, "")], outcomes, failures=True)
    assert [o.extra["stereo_ok"] for o, _, _ in iter_sdf_samples(path)] == ["True", "False"]
    assert all(o.mol is not None for o, _, _ in iter_sdf_samples(path))  # wrong stereo is not a failure
