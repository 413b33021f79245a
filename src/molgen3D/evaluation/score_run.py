"""Score the samples an evaluation folder holds: RMSDs (cached in `rmsd/`), then metrics.json, table.txt, coverage.png.

`evaluate` calls `score_run` after sampling and `molgen3d rescore` on its own, so both give the same numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from molgen3D.evaluation.run_folder import RMSD_DIR, read_stored, references_of, run_state, samples_file
from molgen3D.files import atomic_output, sha256_file, write_text_atomic
from molgen3D.scoring.method_scores import score_method
from molgen3D.scoring.options import ScoringOptions
from molgen3D.scoring.posebusters import posebusters_report
from molgen3D.scoring.report import format_table, json_safe
from molgen3D.scoring.rmsd import RmsdPool


def _file_key(path: Path, max_matches: int) -> str:
    return f"{max_matches}:{sha256_file(path)}"


def _matrices(out: Path, name: str, references, outcomes, pool_args: dict) -> tuple[list[np.ndarray], dict]:
    """RMSD matrices of one method: from `rmsd/<name>.npz` when it was computed from this very samples file."""
    cache = Path(out) / RMSD_DIR / f"{name}.npz"
    key = _file_key(samples_file(out, name), pool_args["max_matches"])
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            if str(data["key"]) == key and int(data["n"]) == len(references):
                return [data[f"m{i}"] for i in range(len(references))], json.loads(str(data["stats"]))
    with RmsdPool(**pool_args) as pool:
        matrices, stats = pool.matrices(
            [(ref.conformers, [o.mol for o in samples]) for ref, samples in zip(references, outcomes)]
        )
    stats = stats.as_dict()
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(cache, "wb") as f:
        np.savez(f, key=key, n=len(references), stats=json.dumps(stats), **{f"m{i}": m for i, m in enumerate(matrices)})
    return matrices, stats


def score_run(
    out: Path,
    options: ScoringOptions,
    *,
    references=None,
) -> dict:
    """Score the samples stored in an evaluation directory: metrics.json, table.txt and coverage.png."""
    out = Path(out)
    state = run_state(out)
    references = references if references is not None else references_of(state)
    ident = state["identity"]
    counts = [ident["samples_per_reference"] * len(r.conformers) for r in references]
    threshold = options.threshold
    methods, results = {}, {}
    for name, info in state["methods"].items():
        outcomes = read_stored(samples_file(out, name), references, counts)
        methods[name] = outcomes
        matrices, stats = _matrices(out, name, references, outcomes, options.pool_args())
        speed = info.get("samples_per_second")
        if speed is None and info.get("seconds"):
            speed = info["samples"] / info["seconds"]
        results[name] = score_method(name, references, outcomes, matrices, stats, threshold, speed)
        results[name].update(
            {
                k: v
                for k, v in info.items()
                if k in ("source", "settings", "samples_unused", "model_folder", "sampler_counts")
            }
        )
        results[name]["samples_file"] = str(samples_file(out, name))
    from molgen3D.scoring.plots import plot_coverage

    plot = plot_coverage(
        {name: r["curves"] for name, r in results.items()},
        threshold,
        out / "coverage.png",
        f"{len(references)} molecules, {sum(len(r.conformers) for r in references)} reference conformers, K = "
        f"{ident['samples_per_reference']}L",
    )
    metrics = {
        "references": ident["references"],
        "threshold": threshold,
        "num_molecules": len(references),
        "reference_conformers": sum(len(r.conformers) for r in references),
        "samples_per_reference": ident["samples_per_reference"],
        "references_skipped": state.get("references_skipped", {}),
        "nan_policy": "failed samples are NaN columns: they lower COV-R, are left out of COV-P/MAT-P; "
        "aggregates are over molecules where the metric is defined (see 'molecules')",
        "methods": results,
        "posebusters": posebusters_report(methods, options.posebusters),
        "plot": str(plot),
    }
    metrics = json_safe(metrics)
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    write_text_atomic(out / "table.txt", format_table(metrics) + "\n")
    return metrics
