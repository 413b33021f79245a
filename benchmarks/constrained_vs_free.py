"""Does constrained decoding distort a trained model? Constrained (canonical), constrained (any split), free.

    PYTHONPATH=src .venv/bin/python benchmarks/constrained_vs_free.py --model HF_DIR [--molecules 8]

Samples K = 2L conformers of the same test molecules with the same seed in the three modes and
reports validity, the share of samples that are the tokenizer's own tokenization, and COV-R /
MAT-R, overall and on the molecules where free decoding gave a valid sample (there the three
modes can be compared; the difference is given with its standard error over molecules).
Writes benchmarks/results/constrained_vs_free.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from molgen3D.generation.canonical import is_canonical  # noqa: E402
from molgen3D.generation.generate import with_model_format  # noqa: E402
from molgen3D.scoring.coverage import coverage_matching  # noqa: E402
from molgen3D.generation.model_io import load_model, model_context, model_directory  # noqa: E402
from molgen3D.scoring.references import read_references  # noqa: E402
from molgen3D.scoring.rmsd import RmsdPool  # noqa: E402
from molgen3D.generation.decode_loops import run_with_cache  # noqa: E402
from molgen3D.generation.sampling import DEFAULT_PRECISION, SamplingConfig, assemble, plan_jobs, run_batches  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "constrained_vs_free.json"
MODES = {
    "constrained, canonical": dict(constrained=True, canonical=True),
    "constrained, any split": dict(constrained=True, canonical=False),
    "free": dict(constrained=False),
}


def sample(model, tokenizer, smiles, counts, cfg):
    batches, failed = plan_jobs(tokenizer, smiles, counts, cfg, max_context=model_context(model))
    results = run_batches(
        functools.partial(run_with_cache, model), tokenizer, smiles, batches, cfg, device=model.device
    )
    ids = [r.token_ids for batch in results for r in batch]
    canonical = sum(is_canonical(tokenizer, i) for i in ids) / max(len(ids), 1)
    return assemble(tokenizer, smiles, batches, results, failed, cfg.positions), canonical


def mean_se(values) -> tuple[float, float]:
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if not arr.size:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else math.nan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="HF model folder (e.g. the demo's run_dir/hf)")
    parser.add_argument("--references", required=True, help="JSONL test split (e.g. artifacts/data/embedded/test)")
    parser.add_argument("--molecules", type=int, default=8)
    parser.add_argument("--max-conformers", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=1500)
    parser.add_argument("--threshold", type=float, default=0.75)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    torch.set_num_threads(1)
    references, precision = read_references(
        args.references, max_molecules=args.molecules, max_conformers=args.max_conformers
    )
    smiles = [r.smiles for r in references]
    counts = [2 * len(r.conformers) for r in references]
    model, tokenizer, _ = load_model(args.model, device="cpu")
    per_mode = {}
    with RmsdPool(workers=1) as pool:
        for name, options in MODES.items():
            cfg = SamplingConfig(max_new_tokens=args.max_new_tokens, seed=args.seed, batch_size=8, **options)
            # The model folder's coordinate format (decimals, relative positions) decides how samples decode.
            cfg = with_model_format(cfg, model_directory(args.model), precision or DEFAULT_PRECISION)
            outcomes, canonical = sample(model, tokenizer, smiles, counts, cfg)
            matrices, _ = pool.matrices([(r.conformers, [o.mol for o in s]) for r, s in zip(references, outcomes)])
            scores = [coverage_matching(m, args.threshold) for m in matrices]
            per_mode[name] = {
                "validity": sum(o.mol is not None for s in outcomes for o in s) / sum(counts),
                "failures": dict(Counter(o.failure for s in outcomes for o in s if o.failure)),
                "canonical": canonical,
                "valid_per_molecule": [sum(o.mol is not None for o in s) for s in outcomes],
                "cov_r": [x["cov_r"] for x in scores],
                "mat_r": [x["mat_r"] for x in scores],
            }
            print(
                f"  {name}: validity {per_mode[name]['validity']:.1%}, failures {per_mode[name]['failures']}",
                flush=True,
            )
    free_ok = [i for i, n in enumerate(per_mode["free"]["valid_per_molecule"]) if n > 0]
    summary = {}
    for name, r in per_mode.items():
        summary[name] = {
            "validity": r["validity"],
            "canonical": r["canonical"],
            "failures": r["failures"],
            "cov_r": mean_se(r["cov_r"])[0],
            "mat_r": mean_se(r["mat_r"])[0],
            "cov_r_where_free_valid": mean_se([r["cov_r"][i] for i in free_ok])[0],
            "mat_r_where_free_valid": mean_se([r["mat_r"][i] for i in free_ok])[0],
        }
        if name != "free":
            summary[name]["mat_r_minus_free"] = mean_se([r["mat_r"][i] - per_mode["free"]["mat_r"][i] for i in free_ok])
            summary[name]["cov_r_minus_free"] = mean_se([r["cov_r"][i] - per_mode["free"]["cov_r"][i] for i in free_ok])
    result = {
        "model": args.model,
        "references": args.references,
        "molecules": len(smiles),
        "samples": sum(counts),
        "threshold": args.threshold,
        "molecules_where_free_valid": len(free_ok),
        "modes": summary,
        "per_molecule": per_mode,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{len(smiles)} molecules, {sum(counts)} samples per mode (K = 2L); free decoding valid on "
        f"{len(free_ok)} molecules; COV at < {args.threshold} A"
    )
    print(
        f"{'mode':<26}{'validity':>9}{'canonical':>10}{'COV-R':>8}{'MAT-R':>8}"
        f"{'COV-R*':>8}{'MAT-R*':>8}  (* = where free is valid)"
    )
    for name, s in summary.items():
        print(
            f"{name:<26}{s['validity']:>9.1%}{s['canonical']:>10.1%}{s['cov_r']:>8.1%}{s['mat_r']:>8.3f}"
            f"{s['cov_r_where_free_valid']:>8.1%}{s['mat_r_where_free_valid']:>8.3f}"
        )
    for name, s in summary.items():
        if "mat_r_minus_free" in s:
            (dm, se), (dc, sc) = s["mat_r_minus_free"], s["cov_r_minus_free"]
            print(f"{name} - free, where free is valid: MAT-R {dm:+.3f} +- {se:.3f} A, COV-R {dc:+.1%} +- {sc:.1%}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
