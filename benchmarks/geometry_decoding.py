"""Geometry-aware decoding, side by side: the same model, molecules and seeds sampled without the distance
bounds (`--no-geometry`) and with them (the default), each scored as `evaluate` scores (COV/MAT with
standard errors over molecules, PoseBusters per check, bonds, ring closures, clashes, stereo) with the
sampler's speed and fallback counts.

    PYTHONPATH=src .venv/bin/python benchmarks/geometry_decoding.py [--model HF_DIR] [--molecules 16]

Default model: the newest demo model under artifacts/ckpts/cpu_tiny (run `bash scripts/demo.sh` first).
Writes benchmarks/results/geometry_decoding.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from over_molecules import METRICS, method_figures, paired  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "geometry_decoding.json"
MODES = {"stereo only": dict(geometry=False), "stereo + geometry": dict(geometry=True)}


def newest_demo_model() -> Path:
    found = sorted(REPO.glob("artifacts/ckpts/cpu_tiny/*/hf/config.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit("no demo model under artifacts/ckpts/cpu_tiny: run `bash scripts/demo.sh` or pass --model")
    return found[-1].parent


def run_mode(model: str, references: str, out: Path, molecules: int, threads: int, max_new_tokens: int, **mode):
    from molgen3D.evaluation.evaluate import EvaluateConfig, evaluate
    from molgen3D.generation.sampling import SamplingConfig

    start = time.perf_counter()
    metrics = evaluate(
        EvaluateConfig(
            references=references,
            out=out,
            model=model,
            max_molecules=molecules,
            threads=threads,
            progress=False,
            overwrite=True,
            sampling=SamplingConfig(max_new_tokens=max_new_tokens, **mode),
        )
    )
    return {"seconds": time.perf_counter() - start, **method_figures(metrics)}


def _cell(s: dict, pct: bool) -> str:
    if s["mean"] is None:
        return "n/a"
    scale, unit = (100, "%") if pct else (1, "")
    se = f" +- {s['se'] * scale:.1f}" if pct and s["se"] is not None else f" +- {s['se']:.3f}" if s["se"] else ""
    return f"{s['mean'] * scale:.1f}{unit}{se}" if pct else f"{s['mean']:.3f}{se}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="HF model folder; default: the newest demo model")
    parser.add_argument("--references", default=str(REPO / "artifacts" / "data" / "embedded" / "test"))
    parser.add_argument("--molecules", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=1500)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    model = args.model or str(newest_demo_model())
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, mode in MODES.items():
            print(f"sampling and scoring: {name}", flush=True)
            folder = Path(tmp) / name.split()[-1].strip("()")
            rows[name] = run_mode(
                model, args.references, folder, args.molecules, args.threads, args.max_new_tokens, **mode
            )
    base, geo = rows["stereo only"], rows["stereo + geometry"]
    result = {
        "model": model,
        "molecules": args.molecules,
        "machine": platform.platform(),
        "modes": rows,
        "geometry_minus_default": paired(geo, base),
        "speed_ratio": geo["samples_per_second"] / base["samples_per_second"],
    }
    print(f"\n{'':22s} {'COV-R':>14s} {'MAT-R':>14s} {'COV-P':>14s} {'MAT-P':>14s}")
    for name, row in [*rows.items(), ("paired difference", {"summary": result["geometry_minus_default"]})]:
        s = row["summary"]
        cells = [_cell(s[k], k.startswith("cov")) for k in METRICS]
        print(f"{name:22s} " + " ".join(f"{c:>14s}" for c in cells))
    checks = ("bond_lengths", "bond_angles", "internal_steric_clash", "aromatic_ring_flatness", "internal_energy")
    print(f"\n{'':22s} " + " ".join(f"{c[:12]:>12s}" for c in (*checks, "all_pass")))
    for name, row in rows.items():
        pb = row["posebusters"]
        print(f"{name:22s} " + " ".join(f"{100 * pb[c]:11.1f}%" for c in (*checks, "all_pass")))
    print()
    for name, row in rows.items():
        c = row["chemistry"]
        n = row["sampler_counts"]
        print(
            f"{name:22s} ring-closure bond MAE {c['ring_closure_bond_mae']:.3f} A,"
            f" tree bonds {c['tree_bond_mae']:.3f} A,"
            f" angles {c['bond_angle_mae']:.1f} deg, clash-free {100 * c['clash_free']:.1f}%,"
            f" stereo {100 * c['stereo_ok']:.0f}%, {row['samples_per_second']:.2f} samples/s;"
            f" guarded steps {n.get('guarded_steps', 0)}, relaxed {n.get('geometry_relaxed_steps', 0)},"
            f" no bounds {n.get('geometry_fallback_steps', 0)}"
        )
    print(f"\nspeed with geometry: {result['speed_ratio']:.2f}x the default's samples/s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
