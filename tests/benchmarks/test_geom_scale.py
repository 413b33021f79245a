"""benchmarks/geom_scale.py at test size: the synthetic GEOM tree, the measurements and the projection."""

from __future__ import annotations

import argparse
import pickle

from molgen3D.datasets.geom import find_geom


def test_synthetic_tree_has_geoms_schema(load_benchmark, tmp_path):
    bench = load_benchmark("geom_scale")
    folder = bench.write_geom_tree(tmp_path, molecules=4, conformers=3, n_templates=2)
    geom = find_geom(folder / "summary_drugs.json")
    assert len(geom.pickles) == 4 and geom.missing_from_summary() == []
    data = pickle.loads(geom.pickles[0].read_bytes())
    assert {"smiles", "conformers", "totalconfs", "lowestenergy", "ensembleenergy"} <= set(data)
    conformer = data["conformers"][0]
    assert {"rd_mol", "boltzmannweight", "totalenergy", "relativeenergy", "geom_id"} <= set(conformer)
    assert conformer["rd_mol"].GetNumConformers() == 1
    assert any(a.GetSymbol() == "H" for a in conformer["rd_mol"].GetAtoms())


def test_tiny_run_reports_every_figure(load_benchmark, tmp_path):
    bench = load_benchmark("geom_scale")
    args = argparse.Namespace(
        molecules=6, conformers=3, jsonl_lines=2500, workers=1, work=str(tmp_path / "w"), keep=False
    )
    result = bench.run(args)
    assert result["prepare"]["conformers_read"] == 18 and result["prepare"]["conformers_written"] > 0
    assert result["prepare"]["share_conformers_per_s_per_worker"] > 0
    assert result["bare_pickle_load_smiles"]["conformers"] == 18
    assert result["loader"]["lines_indexed"] == 2500
    assert result["loader"]["index_bytes_per_line"] <= 16
    assert result["projection"]["one_node_hours"] > result["projection"]["slurm_array_hours"]["64"] > 0
    assert not (tmp_path / "w").exists()
