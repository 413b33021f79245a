"""How far does a small error in each written number move a conformer, per coordinate format?

A model never writes the exact numbers, so the price of a format is how its errors add up:
absolute positions keep an error on its atom; relative offsets pass it on to the atom's subtree
(a random walk along the SMILES tree); local frames also turn the subtree, so an error in an
early bond direction moves far atoms by the lever arm. This script measures that, the same way
for every format: each held-out reference conformer is written in the format, every written
number gets independent Gaussian noise of `--noise` A, the text is turned back into absolute
coordinates, and the aligned RMSD (heavy atoms, atoms in order, no symmetry search) to the clean
conformer is reported: mean, median and 90th percentile over conformers and draws. It has no model in it,
so it separates what the format does to errors from what a model learns.

Writes benchmarks/results/format_drift.json.

Usage: .venv/bin/python benchmarks/format_drift.py --conformers 200 --noise 0.01,0.05,0.1
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from molgen3D.chem.coordinate_format import CoordinateFormat, apply_format, to_absolute_text  # noqa: E402
from molgen3D.chem.enriched_smiles import decode  # noqa: E402

FORMATS = {
    "absolute": CoordinateFormat(decimals=4, frame="canonical", positions="absolute"),
    "relative": CoordinateFormat(decimals=4, frame="canonical", positions="relative"),
    "local": CoordinateFormat(decimals=4, frame="canonical", positions="local"),
}


def aligned_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """RMSD of `a` onto `b` after the best proper rotation and translation (Kabsch)."""
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, 1.0, d]) @ vt
    return float(np.sqrt(np.mean(np.sum((a @ rot - b) ** 2, axis=1))))


def perturbed(text: str, noise: float, rng: np.random.Generator, decimals: int) -> str:
    """`text` with every coordinate number moved by N(0, noise) and re-written to `decimals`."""
    out, pos = [], 0
    while (start := text.find("<", pos)) >= 0:
        end = text.index(">", start)
        values = [float(v) + rng.normal(0.0, noise) for v in text[start + 1 : end].split(",")]
        out.append(text[pos : start + 1] + ",".join(f"{v:.{decimals}f}" for v in values) + ">")
        pos = end + 1
    return "".join(out) + text[pos:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data:embedded_root", help="prepared data set; its test/ split is used")
    parser.add_argument("--conformers", type=int, default=200, help="test conformers (lines) to perturb")
    parser.add_argument("--noise", default="0.01,0.05,0.1", help="comma list of per-number noise (A)")
    parser.add_argument("--repeats", type=int, default=3, help="noise draws per conformer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "format_drift.json")
    args = parser.parse_args()

    from molgen3D.config.paths import resolve_path
    from molgen3D.datasets.jsonl_paths import expand_paths

    rows = []
    for file in expand_paths([str(resolve_path(args.data) / "test")]):
        with open(file, encoding="utf-8") as f:
            rows += [json.loads(line)["embedded_smiles"] for line in f]
    rows = rows[: args.conformers]
    noises = [float(x) for x in args.noise.split(",")]
    begin = time.perf_counter()
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, fmt in FORMATS.items():
        results[name] = {}
        for noise in noises:
            rng = np.random.default_rng(args.seed)
            rmsds = []
            for text in rows:
                written = apply_format(text, fmt)
                clean = decode(to_absolute_text(written, fmt)).GetConformer().GetPositions()
                for _ in range(args.repeats):
                    noisy = to_absolute_text(perturbed(written, noise, rng, fmt.decimals), fmt)
                    rmsds.append(aligned_rmsd(decode(noisy).GetConformer().GetPositions(), clean))
            r = np.array(rmsds)
            results[name][str(noise)] = {
                "mean": float(r.mean()),
                "median": float(np.median(r)),
                "p90": float(np.quantile(r, 0.9)),
                "share_below_0.75": float(np.mean(r < 0.75)),
            }
    atoms = [text.count("<") for text in rows]
    print(f"{len(rows)} test conformers ({np.mean(atoms):.1f} heavy atoms on average), {args.repeats} draws each")
    print(f"{'format':10s} {'noise/number':>12s} {'RMSD mean':>10s} {'median':>8s} {'p90':>8s} {'<0.75 A':>8s}")
    for name, by_noise in results.items():
        for noise, r in by_noise.items():
            print(
                f"{name:10s} {float(noise):12.2f} {r['mean']:10.3f} {r['median']:8.3f} {r['p90']:8.3f} "
                f"{r['share_below_0.75']:8.0%}"
            )
    for noise in map(str, noises):
        base = results["absolute"][noise]["mean"]
        print(
            f"noise {float(noise):.2f}: relative / absolute = {results['relative'][noise]['mean'] / base:.2f}, "
            f"local / absolute = {results['local'][noise]['mean'] / base:.2f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "settings": {**vars(args), "out": str(args.out)},
        "conformers": len(rows),
        "mean_heavy_atoms": float(np.mean(atoms)),
        "formats": {name: fmt.to_dict() for name, fmt in FORMATS.items()},
        "rmsd": results,
        "seconds": time.perf_counter() - begin,
        "machine": platform.platform(),
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
