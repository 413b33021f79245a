"""prepare-data throughput: molecules/s with 1 and 2 workers next to a bare ETKDGv3 loop.

The bare loop (parse, AddHs, EmbedMultipleConfs, nothing else) is the floor our pipeline
adds canonicalisation, encoding, splitting and writing to. Writes benchmarks/results/prepare_data.json.
Usage: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/prepare_data.py [--molecules 200] [--conformers 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

from rdkit import Chem
from rdkit.Chem import rdDistGeom

from molgen3D.datasets.inputs import bundled_smiles_file, read_smiles
from molgen3D.datasets.prepare import PrepareConfig, prepare


def bare_etkdg(smiles: list[str], conformers: int, seed: int) -> float:
    start = time.perf_counter()
    for smi in smiles:
        mol = Chem.MolFromSmiles(smi)
        if mol is None:
            continue
        params = rdDistGeom.ETKDGv3()
        params.randomSeed = seed
        params.numThreads = 1
        rdDistGeom.EmbedMultipleConfs(Chem.AddHs(mol), conformers, params)
    return time.perf_counter() - start


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--molecules", type=int, default=200)
    parser.add_argument("--conformers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "prepare_data.json")
    args = parser.parse_args()
    smiles = [r.text for r in read_smiles(bundled_smiles_file())][: args.molecules]
    rows = {"bare_etkdg_loop": bare_etkdg(smiles, args.conformers, 42)}
    digests = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            config = PrepareConfig(
                output=f"{tmp}/w{workers}",
                max_molecules=args.molecules,
                conformers_per_molecule=args.conformers,
                workers=workers,
                force=True,
            )
            start = time.perf_counter()
            prepare(config)
            rows[f"prepare_data_workers_{workers}"] = time.perf_counter() - start
            digests[workers] = tree_digest(Path(tmp) / f"w{workers}")
    base = rows["bare_etkdg_loop"]
    result = {
        "molecules": args.molecules,
        "conformers_per_molecule": args.conformers,
        "results": {
            name: {
                "seconds": round(sec, 2),
                "molecules_per_s": round(args.molecules / sec, 1),
                "speed_vs_bare_loop": round(base / sec, 2),
            }
            for name, sec in rows.items()
        },
        "workers_2_vs_1": round(rows["prepare_data_workers_1"] / rows["prepare_data_workers_2"], 2),
        "byte_identical_1_vs_2_workers": digests[1] == digests[2],
    }
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n", encoding="utf-8")
    return 0 if result["byte_identical_1_vs_2_workers"] else 1


if __name__ == "__main__":
    sys.exit(main())
