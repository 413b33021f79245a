"""GEOM input: rdkit_folder / summary / pickle folder, the Torsional Diffusion filters, split files, shares."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import rdDistGeom

from molgen3D.datasets.geom import find_geom, load_split_file, read_test_set
from molgen3D.datasets.inputs import InputError
from molgen3D.datasets.prepare import PrepareConfig, PrepareError, prepare
from molgen3D.datasets.splits import SPLITS
from molgen3D.training.pretraining.dataprocessing.unit_checks import parse_line

# name -> SMILES; GEOM names its pickles after the SMILES, any name works for the reader
MOLECULES = {
    "a_flexible": "CCCCCCOC(=O)c1ccccc1",
    "b_amide": "CC(=O)NCCc1ccc(O)cc1",
    "c_salt": "CC(=O)[O-].[Na+]",
    "d_ether": "COCCOCCOC",
    "e_amine": "NCCCCCCN",
    "f_sulfur": "FS(F)(F)(F)(F)F",
}


def geom_conformers(smiles: str, n: int, seed: int) -> list[dict]:
    """Conformer dicts in GEOM's schema: one RDKit molecule with hydrogens and one conformer each."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = rdDistGeom.ETKDGv3()
    params.randomSeed = seed
    ids = list(rdDistGeom.EmbedMultipleConfs(mol, n, params))
    assert len(ids) == n
    weights = np.random.default_rng(seed).dirichlet(np.ones(n))
    out = []
    for rank, conf_id in enumerate(ids):
        single = Chem.Mol(mol, False, conf_id)
        out.append(
            {
                "rd_mol": single,
                "boltzmannweight": float(weights[rank]),
                "totalenergy": -100.0 - rank,
                "relativeenergy": float(rank),
                "degeneracy": 1,
                "geom_id": 1000 * seed + rank,
                "set": 1,
                "conformerweights": [float(weights[rank])],
            }
        )
    return out


def write_geom(root: Path, molecules: dict[str, str], n: int = 4, extra: dict[str, list[dict]] | None = None) -> Path:
    """An rdkit_folder: summary_drugs.json + drugs/<name>.pickle."""
    folder = root / "rdkit_folder"
    (folder / "drugs").mkdir(parents=True)
    summary = {}
    for seed, (name, smiles) in enumerate(molecules.items(), start=1):
        conformers = geom_conformers(smiles, n, seed) + (extra or {}).get(name, [])
        data = {
            "smiles": smiles,
            "conformers": conformers,
            "totalconfs": len(conformers),
            "charge": 0,
            "uniqueconfs": len(conformers),
            "lowestenergy": -100.0,
            "poplowestpct": 50.0,
            "temperature": 298.15,
            "ensembleenergy": 0.1,
            "ensembleentropy": 1.0,
            "ensemblefreeenergy": -0.3,
        }
        with open(folder / "drugs" / f"{name}.pickle", "wb") as f:
            pickle.dump(data, f)
        summary[smiles] = {k: v for k, v in data.items() if k not in ("conformers", "smiles")}
        summary[smiles]["pickle_path"] = f"drugs/{name}.pickle"
    (folder / "summary_drugs.json").write_text(json.dumps(summary), encoding="utf-8")
    return folder


def rows(out: Path, name: str) -> list[dict]:
    found = []
    for shard in sorted((out / name).glob("part-*.jsonl*")):
        opener = __import__("gzip").open if shard.suffix == ".gz" else open
        with opener(shard, "rt", encoding="utf-8") as f:
            found += [json.loads(line) for line in f]
    return found


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def geom(tmp_path_factory) -> Path:
    reacted = geom_conformers("CCCCCCOC(=O)c1ccccc1O", 1, 99)  # a different graph in a's pickle, ranked first
    reacted[0]["boltzmannweight"] = 2.0
    return write_geom(tmp_path_factory.mktemp("geom"), MOLECULES, extra={"a_flexible": reacted})


def config(out: Path, source: Path, **kwargs) -> PrepareConfig:
    kwargs.setdefault("split_fractions", (0.5, 0.25, 0.25))
    return PrepareConfig(output=str(out), input=source, **kwargs)


def test_rdkit_folder_summary_and_pickle_folder_are_the_same_input(tmp_path, geom):
    found = [find_geom(p) for p in (geom, geom / "summary_drugs.json", geom / "drugs")]
    assert all(f.pickles == found[0].pickles for f in found)
    assert [p.stem for p in found[0].pickles] == sorted(MOLECULES)
    trees = []
    for i, source in enumerate((geom, geom / "summary_drugs.json", geom / "drugs")):
        prepare(config(tmp_path / f"o{i}", source))
        trees.append({k: v for k, v in tree(tmp_path / f"o{i}").items() if k != "manifest.json"})
    assert trees[0] == trees[1] == trees[2]


def test_torsional_diffusion_filters_and_extra_fields(tmp_path, geom):
    manifest = prepare(config(tmp_path / "out", geom, max_conformers_per_molecule=3)).manifest
    skipped = manifest["skipped"]
    assert skipped["multiple_fragments"]["count"] == 1
    assert "c_salt.pickle" in skipped["multiple_fragments"]["examples"][0]
    assert skipped["atom_degree_above_max"]["count"] == 4  # every conformer of SF6 (degree 6)
    assert skipped["conformer_graph_differs"]["count"] == 1  # the reacted conformer of a
    assert manifest["input"]["kind"] == "geom" and manifest["input"]["records_read"] == len(MOLECULES)
    all_rows = [r for name in SPLITS for r in rows(tmp_path / "out", name)]
    assert {r["name"] for r in all_rows} == {"a_flexible", "b_amide", "d_ether", "e_amine"}
    for name in ("a_flexible", "b_amide"):
        data = pickle.loads((geom / "drugs" / f"{name}.pickle").read_bytes())
        weights = sorted((c["boltzmannweight"] for c in data["conformers"] if c["geom_id"] != 99000), reverse=True)
        kept = [r["boltzmann_weight"] for r in all_rows if r["name"] == name]
        assert kept == weights[:3]  # at most 3, the highest Boltzmann weights, in that order
        assert all(isinstance(r["energy"], float) for r in all_rows if r["name"] == name)
    assert manifest["counts"]["total"] == {"molecules": 4, "conformers": 12}
    assert skipped["beyond_max_conformers"]["count"] == 4  # one beyond 3 in each of the four kept molecules


def test_default_keeps_30_conformers(tmp_path):
    source = write_geom(tmp_path, {"m1": "CCCCCCCCO", "m2": "CCCCCCCCN", "m3": "CCCCCCCCC"}, n=33)
    manifest = prepare(config(tmp_path / "out", source)).manifest
    assert manifest["counts"]["total"]["conformers"] == 90
    assert manifest["skipped"]["beyond_max_conformers"]["count"] == 9


def test_split_file_assigns_by_sorted_pickle_index(tmp_path, geom):
    split = tmp_path / "split0.npy"
    arrays = np.empty(3, dtype=object)
    arrays[:] = [np.array([0, 3]), np.array([1]), np.array([4])]  # a_flexible, d_ether | b_amide | e_amine
    np.save(split, arrays, allow_pickle=True)
    manifest = prepare(config(tmp_path / "out", geom, split_file=split)).manifest
    names = {n: {r["name"] for r in rows(tmp_path / "out", n)} for n in SPLITS}
    assert names == {"train": {"a_flexible", "d_ether"}, "valid": {"b_amide"}, "test": {"e_amine"}}
    assert manifest["skipped"]["not_in_split_file"]["count"] == 2  # c_salt (index 2), f_sulfur (5)
    assert manifest["input"]["split_file"]["file"] == "split0.npy"
    np.save(split, np.array([np.array([0]), np.array([9]), np.array([1])], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match=r"split0\.npy: valid index 9 is outside the 6 pickle files"):
        load_split_file(split, 6)


@pytest.mark.slow
def test_shares_and_finalize_equal_a_single_run(tmp_path, geom):
    single = prepare(config(tmp_path / "single", geom, workers=1)).manifest
    for index in (2, 0):
        prepare(config(tmp_path / "sharded", geom, shard_index=index, num_shards=3))
    with pytest.raises(PrepareError, match=r"missing or unfinished \[1\]"):
        prepare(config(tmp_path / "sharded", geom, finalize=True, num_shards=3))
    prepare(config(tmp_path / "sharded", geom, shard_index=1, num_shards=3, workers=2))
    merged = prepare(config(tmp_path / "sharded", geom, finalize=True, num_shards=3)).manifest
    assert merged == single
    assert tree(tmp_path / "sharded") == tree(tmp_path / "single")
    assert not (tmp_path / "sharded" / "_shards").exists()


def test_corrupt_pickle_names_the_file(tmp_path):
    source = write_geom(tmp_path, {"m1": "CCCCO", "m2": "CCCCN", "m3": "CCCCC"})
    (source / "drugs" / "m2.pickle").write_bytes(b"\x80\x04\x95 truncated")
    with pytest.raises(InputError, match=r"m2\.pickle: cannot read this GEOM pickle"):
        prepare(config(tmp_path / "out", source))


def test_loader_ignores_the_extra_fields():
    line = json.dumps(
        {
            "canonical_smiles": "CCO",
            "embedded_smiles": "[C]<0,0,0>[C]<1.5,0,0>[O]<2.1,1.2,0>",
            "name": "x",
            "boltzmann_weight": 0.5,
            "energy": -1.0,
        }
    ).encode()
    text, reason, _ = parse_line(line, 0)
    assert reason is None and "name" not in text and "0.5" not in text.split("[CONFORMER]")[0]


def test_test_set_reader(tmp_path):
    mols = {s: [c["rd_mol"] for c in geom_conformers(s, 2, 1)] for s in ("CCCCO", "CCOCC")}
    with open(tmp_path / "test_mols.pkl", "wb") as f:
        pickle.dump(mols, f)
    (tmp_path / "test_smiles.csv").write_text("smiles,n_conformers,corrected_smiles\nCCCCO,2,OCCCC\nCCOCC,2,CCOCC\n")
    found = read_test_set(tmp_path / "test_smiles.csv", tmp_path / "test_mols.pkl")
    assert [(m.smiles, m.corrected_smiles, m.n_conformers, len(m.conformers)) for m in found] == [
        ("CCCCO", "OCCCC", 2, 2),
        ("CCOCC", "CCOCC", 2, 2),
    ]
    (tmp_path / "test_smiles.csv").write_text("smiles,n_conformers,corrected_smiles\nCCN,2,CCN\n")
    with pytest.raises(InputError, match=r"test_smiles\.csv:2: 'CCN' has no entry in .*test_mols\.pkl"):
        read_test_set(tmp_path / "test_smiles.csv", tmp_path / "test_mols.pkl")


def write_test_set(root: Path) -> Path:
    """Torsional Diffusion's files: test_smiles.csv + test_mols.pkl (one reacted conformer in the second)."""
    mols = {
        "CCCCO": [c["rd_mol"] for c in geom_conformers("CCCCO", 2, 1)],
        "CCOCCN": [c["rd_mol"] for c in geom_conformers("CCOCCN", 3, 2)]
        + [geom_conformers("CCOCCO", 1, 3)[0]["rd_mol"]],
    }
    with open(root / "test_mols.pkl", "wb") as f:
        pickle.dump(mols, f)
    (root / "test_smiles.csv").write_text("smiles,n_conformers,corrected_smiles\nCCCCO,2,OCCCC\nCCOCCN,4,NCCOCC\n")
    return root / "test_smiles.csv"


def test_test_set_as_evaluate_references(tmp_path):
    from molgen3D.datasets.skips import SkipLog
    from molgen3D.evaluation.evaluate import EvaluateConfig, evaluate
    from molgen3D.scoring.options import ScoringOptions
    from molgen3D.scoring.references import read_references

    csv_path = write_test_set(tmp_path)
    for spec in (csv_path, tmp_path):
        skips = SkipLog()
        refs, precision = read_references(str(spec), skips=skips)
        prompts = [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in ("OCCCC", "NCCOCC")]  # of corrected_smiles
        found = [(r.smiles, r.name, len(r.conformers)) for r in refs]
        assert found == [(prompts[0], "CCCCO", 2), (prompts[1], "CCOCCN", 3)]
        assert all(a.GetSymbol() != "H" for r in refs for m in r.conformers for a in m.GetAtoms())
        assert skips.count("reference_graph_differs") == 1 and precision is None
    metrics = evaluate(
        EvaluateConfig(
            references=str(csv_path),
            out=tmp_path / "eval",
            baseline="etkdg",
            progress=False,
            scoring=ScoringOptions(rmsd_workers=1),
        )
    )
    assert metrics["methods"]["etkdg"]["samples_requested"] == 2 * (2 + 3)  # K = 2L


def test_split_file_test_indices_as_evaluate_references(tmp_path, geom):
    from molgen3D.scoring.references import read_references

    split = tmp_path / "split0.npy"
    arrays = np.empty(3, dtype=object)
    arrays[:] = [np.array([0, 2]), np.array([3]), np.array([4, 1])]
    np.save(split, arrays, allow_pickle=True)
    refs, _ = read_references(f"{geom}::{split}")
    assert [(r.name, len(r.conformers)) for r in refs] == [("b_amide", 4), ("e_amine", 4)]
    assert refs[0].smiles == "CC(=O)NCCc1ccc(O)cc1"
    valid, _ = read_references(f"{geom / 'drugs'}::{split}::valid", max_conformers=2)
    assert [(r.name, len(r.conformers)) for r in valid] == [("d_ether", 2)]


def test_references_named_in_kekule_form_keep_their_conformers(tmp_path):
    """The test set's SMILES and its conformers are one molecule however the SMILES spells the ring."""
    from molgen3D.datasets.geom import geom_references
    from molgen3D.datasets.skips import SkipLog

    mols = {"Oc1ccccc1CCN": [c["rd_mol"] for c in geom_conformers("Oc1ccccc1CCN", 2, 1)]}
    with open(tmp_path / "test_mols.pkl", "wb") as f:
        pickle.dump(mols, f)
    (tmp_path / "test_smiles.csv").write_text("smiles,n_conformers,corrected_smiles\nOc1ccccc1CCN,2,NCCC1=CC=CC=C1O\n")
    skips = SkipLog()
    found = geom_references(str(tmp_path / "test_smiles.csv"), max_molecules=None, max_conformers=None, skips=skips)
    assert [(name, len(confs)) for _, name, confs in found] == [("Oc1ccccc1CCN", 2)]
    assert skips.count("reference_graph_differs") == 0


@pytest.mark.parametrize("entry", ["rdkit_folder", "summary_drugs.json", "drugs"])
def test_prepare_lists_the_pickles_and_parses_the_summary_once(tmp_path, geom, monkeypatch, entry):
    """GEOM-drugs has ~300k pickles and a summary of hundreds of MB: one listing of it and one parse per run."""
    from molgen3D.datasets import geom as geom_module

    calls = {"list": 0, "parse": 0}
    real_list, real_parse = geom_module._list_pickles, geom_module._load_summary

    def counted_list(folder):
        calls["list"] += folder.name == "drugs"
        return real_list(folder)

    def counted_parse(path):
        calls["parse"] += 1
        return real_parse(path)

    monkeypatch.setattr(geom_module, "_list_pickles", counted_list)
    monkeypatch.setattr(geom_module, "_load_summary", counted_parse)
    source = geom if entry == "rdkit_folder" else geom / entry
    result = prepare(config(tmp_path / "out", source))
    assert result.manifest["input"]["pickles"] == len(MOLECULES)
    assert calls == {"list": 1, "parse": 1}
