"""The scores of one method: per molecule COV/MAT, their aggregates and curves, validity, failures, chemistry."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from molgen3D.scoring.coverage import DEFAULT_THRESHOLDS, coverage_curves, coverage_matching, summarize
from molgen3D.scoring.geometry import geometry_report
from molgen3D.scoring.outcome import SampleOutcome, failure_report
from molgen3D.scoring.references import ReferenceMolecule

METRICS = ("cov_r", "mat_r", "cov_p", "mat_p")


def score_method(
    name: str,
    references: Sequence[ReferenceMolecule],
    outcomes: Sequence[Sequence[SampleOutcome]],
    matrices: Sequence[np.ndarray],
    rmsd_stats: dict,
    threshold: float,
    samples_per_second: float | None,
) -> dict:
    """Metrics of one method: per molecule, aggregates, curves, validity, failures, RMSD stats, chemistry."""
    per_molecule, curves = [], []
    for ref, samples, matrix in zip(references, outcomes, matrices):
        scores = coverage_matching(matrix, threshold)
        curves.append(coverage_curves(matrix))
        per_molecule.append(
            {
                "name": ref.name,
                "smiles": ref.smiles,
                "references": len(ref.conformers),
                "samples": len(samples),
                "valid": sum(o.mol is not None for o in samples),
                **scores,
            }
        )
    requested = sum(map(len, outcomes))
    valid = sum(m["valid"] for m in per_molecule)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # thresholds where no molecule defines COV-P -> NaN
        curve = {
            "thresholds": DEFAULT_THRESHOLDS,
            "cov_r": np.nanmean([c["cov_r"] for c in curves], axis=0),
            "cov_p": np.nanmean([c["cov_p"] for c in curves], axis=0),
        }
    chemistry = geometry_report(references, outcomes)
    return {
        "name": name,
        "aggregate": {k: summarize([m[k] for m in per_molecule]) for k in METRICS},
        "samples_requested": requested,
        "samples_valid": valid,
        "validity": valid / requested if requested else float("nan"),
        "chemistry": chemistry,
        "failures": failure_report(references, outcomes),
        "samples_per_second": samples_per_second,
        "rmsd": rmsd_stats,
        "curves": curve,
        "per_molecule": per_molecule,
    }
