"""GEOM at scale: prepare-data on a synthetic GEOM tree, and the loader's index at 10 million lines.

Synthesises an rdkit_folder in GEOM's schema (summary_drugs.json + drugs/<name>.pickle holding
`conformers` with `rd_mol`, `boltzmannweight`, `totalenergy`, ...): drug-like templates from the
SMILES bundled with RDKit, one ETKDGv3 embedding each, and the other conformers of a molecule as
jittered copies, so pickles are GEOM-sized without hours of embedding. Then:
- prepare throughput: conformers per CPU second of `prepare-data` workers (share step and finalize), next
  to a bare `pickle.load` + `MolToSmiles` loop over the same files (the floor: reading GEOM at
  all); peak memory of the main process and of the largest worker;
- the loader: a JSONL set of `--jsonl-lines` lines, LineIndex start-up time and index bytes per line;
- a projection to full GEOM-DRUGS (about 304k molecules, 33M conformers stored, at most 30 kept
  per molecule) on one 64-core node and on a Slurm array of such nodes.
Writes benchmarks/results/geom_scale.json.
Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/geom_scale.py [--molecules 20000] [--conformers 15]
       [--jsonl-lines 10000000] [--workers 2] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdDistGeom
from rdkit.rdBase import BlockLogs
from tqdm import tqdm

from molgen3D.datasets.inputs import bundled_smiles_file, read_smiles
from molgen3D.datasets.prepare import PrepareConfig, prepare
from molgen3D.training.pretraining.dataprocessing.line_index import LineIndex

GEOM_DRUGS = {"molecules": 304_466, "conformers_stored": 33_078_483, "max_kept_per_molecule": 30}
NODE_CORES = 64


def templates(n: int, seed: int) -> list[Chem.Mol]:
    """`n` embedded drug-like molecules (with hydrogens) from RDKit's bundled SMILES."""
    pool = [r.text for r in read_smiles(bundled_smiles_file())]
    random.Random(seed).shuffle(pool)
    found = []
    params = rdDistGeom.ETKDGv3()
    params.randomSeed = seed
    with BlockLogs():
        for smiles in pool:
            mol = Chem.MolFromSmiles(smiles)
            if mol is None or len(Chem.GetMolFrags(mol)) > 1 or mol.GetNumHeavyAtoms() > 40:
                continue
            mol = Chem.AddHs(mol)
            if rdDistGeom.EmbedMolecule(mol, params) == 0:
                found.append(mol)
            if len(found) == n:
                break
    return found


def write_geom_tree(root: Path, molecules: int, conformers: int, n_templates: int = 200, seed: int = 0) -> Path:
    """An rdkit_folder with `molecules` pickles of `conformers` conformers each; returns the folder."""
    rng = np.random.default_rng(seed)
    bases = templates(min(n_templates, molecules), seed)
    folder = root / "rdkit_folder"
    (folder / "drugs").mkdir(parents=True, exist_ok=True)
    summary = {}
    for m in tqdm(range(molecules), desc="synthesise GEOM", unit="mol", file=sys.stderr, mininterval=2.0):
        base = bases[m % len(bases)]
        positions = base.GetConformer().GetPositions()
        weights = rng.dirichlet(np.ones(conformers))
        confs = []
        for c in range(conformers):
            mol = Chem.Mol(base)
            conf = mol.GetConformer()
            jittered = positions + rng.normal(0.0, 0.05, positions.shape)
            for i, p in enumerate(jittered):
                conf.SetAtomPosition(i, p.tolist())
            confs.append(
                {
                    "rd_mol": mol,
                    "boltzmannweight": float(weights[c]),
                    "totalenergy": -90.0 - c * 1e-3,
                    "relativeenergy": c * 0.1,
                    "degeneracy": 1,
                    "geom_id": m * 1000 + c,
                    "set": 1,
                    "conformerweights": [float(weights[c])],
                }
            )
        smiles = Chem.MolToSmiles(Chem.RemoveHs(base))
        entry = {
            "totalconfs": conformers,
            "uniqueconfs": conformers,
            "charge": 0,
            "lowestenergy": -90.0,
            "poplowestpct": float(weights.max() * 100),
            "temperature": 298.15,
            "ensembleenergy": 0.2,
            "ensembleentropy": 2.0,
            "ensemblefreeenergy": -0.5,
        }
        name = f"mol{m:07d}"
        with open(folder / "drugs" / f"{name}.pickle", "wb") as f:
            pickle.dump({"smiles": smiles, "conformers": confs, **entry}, f, protocol=pickle.HIGHEST_PROTOCOL)
        summary[f"{smiles}|{name}"] = {**entry, "pickle_path": f"drugs/{name}.pickle"}
    (folder / "summary_drugs.json").write_text(json.dumps(summary), encoding="utf-8")
    return folder


def bare_loop(folder: Path) -> tuple[float, int]:
    """Seconds to pickle.load every file and write every conformer's SMILES; conformers seen."""
    seen = 0
    start = time.process_time()
    for path in sorted((folder / "drugs").glob("*.pickle")):
        with open(path, "rb") as f:
            data = pickle.load(f)
        for conformer in data["conformers"]:
            Chem.MolToSmiles(Chem.RemoveHs(conformer["rd_mol"]))
            seen += 1
    return time.process_time() - start, seen


def write_jsonl(folder: Path, lines: int, per_file: int = 1_000_000) -> int:
    """`lines` conformer lines (varied drug-sized text) in files of `per_file`; returns bytes written."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    atoms = [f"[C]<{x:.4f},{y:.4f},{z:.4f}>" for x, y, z in rng.normal(0, 3, (4096, 3))]
    templates_ = []
    for n in range(10, 50, 3):
        emb = "".join(atoms[(7 * n + j) % 4096] for j in range(n))
        templates_.append(json.dumps({"canonical_smiles": "C" * n, "embedded_smiles": emb}) + "\n")
    written = 0
    for start in tqdm(range(0, lines, per_file), desc="write jsonl", unit="file", file=sys.stderr):
        count = min(per_file, lines - start)
        block = "".join(templates_[i % len(templates_)] for i in range(start, start + count)).encode()
        (folder / f"part-{start // per_file:05d}.jsonl").write_bytes(block)
        written += len(block)
    return written


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (workers): robust to a shared machine."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process and of its largest finished child (Linux: KiB)."""
    return {
        "main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "largest_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def run(args: argparse.Namespace) -> dict:
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="geom_scale_"))
    result: dict = {"molecules": args.molecules, "conformers_per_molecule": args.conformers, "workers": args.workers}
    try:
        t = time.perf_counter()
        folder = write_geom_tree(work, args.molecules, args.conformers)
        result["synthesis_s"] = time.perf_counter() - t
        result["geom_bytes"] = sum(p.stat().st_size for p in (folder / "drugs").glob("*.pickle"))

        bare_s, seen = bare_loop(folder)
        result["bare_pickle_load_smiles"] = {"cpu_s": bare_s, "conformers": seen, "conformers_per_s": seen / bare_s}

        out = work / "prepared"
        cfg = dict(output=str(out), input=folder, split_fractions=(0.8, 0.1, 0.1), workers=args.workers)
        t, cpu = time.perf_counter(), cpu_seconds()
        prepare(PrepareConfig(**cfg, shard_index=0, num_shards=1))
        share_s, share_cpu = time.perf_counter() - t, cpu_seconds() - cpu
        t, cpu = time.perf_counter(), cpu_seconds()
        manifest = prepare(PrepareConfig(**cfg, finalize=True, num_shards=1)).manifest
        finalize_s, finalize_cpu = time.perf_counter() - t, cpu_seconds() - cpu
        kept = manifest["counts"]["total"]["conformers"]
        seen_total = args.molecules * args.conformers
        result["prepare"] = {
            "share_wall_s": share_s,
            "finalize_wall_s": finalize_s,
            "conformers_read": seen_total,
            "conformers_written": kept,
            "share_cpu_s": share_cpu,
            "finalize_cpu_s": finalize_cpu,
            "share_conformers_per_s_per_worker": seen_total / share_cpu,
            "share_wall_conformers_per_s": seen_total / share_s,
            "finalize_lines_per_s": kept / finalize_cpu,
            "ours_per_worker_over_bare": (seen_total / share_cpu) / (seen / bare_s),
            "skipped": {k: v["count"] for k, v in manifest["skipped"].items()},
            "peak_memory": peak_rss_mb(),
        }
        shutil.rmtree(folder)
        shutil.rmtree(out)

        jsonl = work / "jsonl"
        result["jsonl"] = {"lines": args.jsonl_lines, "bytes": write_jsonl(jsonl, args.jsonl_lines)}
        tracemalloc.start()
        t = time.perf_counter()
        index = LineIndex(jsonl)
        startup = time.perf_counter() - t
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        held = index.offsets.nbytes + index.file_starts.nbytes + index.file_sizes.nbytes
        result["loader"] = {
            "lines_indexed": len(index),
            "startup_s": startup,
            "index_bytes_per_line": held / len(index),
            "peak_bytes_per_line_while_indexing": traced_peak / len(index),
            "offsets_dtype": str(index.offsets.dtype),
        }
        del index
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result["projection"] = project(result)
    return result


def project(result: dict) -> dict:
    """Full GEOM-DRUGS from the measured per-worker rates (reading scales with stored conformers,
    writing with kept ones; finalize is one process)."""
    p = result["prepare"]
    per_conformer_read = 1.0 / result["bare_pickle_load_smiles"]["conformers_per_s"]
    share_cpu_per_conformer = 1.0 / p["share_conformers_per_s_per_worker"]
    ours_extra = max(share_cpu_per_conformer - per_conformer_read, 0.0)
    kept = GEOM_DRUGS["molecules"] * GEOM_DRUGS["max_kept_per_molecule"]
    kept = min(kept, GEOM_DRUGS["conformers_stored"])
    cpu_s = GEOM_DRUGS["conformers_stored"] * per_conformer_read + kept * ours_extra
    finalize_s = kept / p["finalize_lines_per_s"]
    node = cpu_s / NODE_CORES
    return {
        "assumptions": {
            **GEOM_DRUGS,
            "kept_conformers_upper_bound": kept,
            "node_cores": NODE_CORES,
            "read_cost_scales_with": "stored conformers",
            "encode_cost_scales_with": "kept conformers",
        },
        "share_cpu_hours": cpu_s / 3600,
        "one_node_hours": (node + finalize_s) / 3600,
        "slurm_array_hours": {str(n): (node / n + finalize_s) / 3600 for n in (4, 16, 64)},
        "finalize_hours": finalize_s / 3600,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecules", type=int, default=20_000)
    parser.add_argument("--conformers", type=int, default=15)
    parser.add_argument("--jsonl-lines", type=int, default=10_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "geom_scale.json")
    args = parser.parse_args()
    result = run(args)
    p, loader, proj = result["prepare"], result["loader"], result["projection"]
    print(
        f"prepare: {p['share_conformers_per_s_per_worker']:,.0f} conformers/s per worker "
        f"(bare pickle.load + MolToSmiles {result['bare_pickle_load_smiles']['conformers_per_s']:,.0f}/s, "
        f"ratio {p['ours_per_worker_over_bare']:.2f}); finalize {p['finalize_lines_per_s']:,.0f} lines/s; "
        f"peak memory main {p['peak_memory']['main_mb']:,.0f} MB, "
        f"worker {p['peak_memory']['largest_worker_mb']:,.0f} MB"
    )
    print(
        f"loader: {loader['lines_indexed']:,} lines indexed in {loader['startup_s']:.1f} s, "
        f"{loader['index_bytes_per_line']:.1f} bytes/line held "
        f"({loader['peak_bytes_per_line_while_indexing']:.1f} peak)"
    )
    print(
        f"GEOM-DRUGS projection: {proj['share_cpu_hours']:.1f} CPU hours; one {NODE_CORES}-core node "
        f"{proj['one_node_hours']:.2f} h; Slurm array "
        + ", ".join(f"{n} nodes {h:.2f} h" for n, h in proj["slurm_array_hours"].items())
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
