"""GEOM coverage and matching on one molecule's RMSD matrix.

`rmsd` is L x K: references (rows) x samples (columns), NaN where no RMSD exists (a failed
sample, a time-out, a mapping error). Conventions for the NaN cases:
- COV-R = share of the L references whose best finite RMSD is < threshold (strict). A
  reference with no finite RMSD (all-NaN row) counts as not covered, so failures lower COV-R.
  With L = 0 it is NaN.
- MAT-R = mean over references of their best RMSD, over the references that have one;
  NaN when none has.
- A sample is "scored" when its column has a finite entry. COV-P = share of scored samples
  whose best RMSD is < threshold; MAT-P = mean over scored samples of their best RMSD. Both
  are NaN when no sample is scored (validity, reported separately, carries the failures).
"""

from __future__ import annotations

import warnings

import numpy as np

DEFAULT_THRESHOLDS = np.round(np.arange(1, 61) * 0.05, 2)
"""0.05 .. 3.00 A by 0.05."""


def _best(rmsd: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices -> NaN, handled by the callers
        return np.nanmin(rmsd, axis=axis) if rmsd.shape[axis] else np.full(rmsd.shape[1 - axis], np.nan)


def _as_matrix(rmsd) -> np.ndarray:
    matrix = np.asarray(rmsd, dtype=float)
    if matrix.ndim != 2:
        raise ValueError(f"rmsd must be an L x K matrix (references x samples), got shape {matrix.shape}")
    return matrix


def coverage_matching(rmsd, threshold: float) -> dict[str, float]:
    """cov_r, mat_r, cov_p, mat_p of one molecule (see the module docstring for NaN handling)."""
    matrix = _as_matrix(rmsd)
    best_ref = _best(matrix, axis=1)
    best_sample = _best(matrix, axis=0)
    scored_refs = best_ref[np.isfinite(best_ref)]
    scored_samples = best_sample[np.isfinite(best_sample)]
    n_refs = matrix.shape[0]
    return {
        "cov_r": float(np.sum(scored_refs < threshold) / n_refs) if n_refs else float("nan"),
        "mat_r": float(scored_refs.mean()) if scored_refs.size else float("nan"),
        "cov_p": float(np.mean(scored_samples < threshold)) if scored_samples.size else float("nan"),
        "mat_p": float(scored_samples.mean()) if scored_samples.size else float("nan"),
    }


def coverage_curves(rmsd, thresholds=DEFAULT_THRESHOLDS) -> dict[str, np.ndarray]:
    """COV-R and COV-P of one molecule at each threshold (same conventions as `coverage_matching`)."""
    matrix = _as_matrix(rmsd)
    thresholds = np.asarray(thresholds, dtype=float)
    best_ref = _best(matrix, axis=1)
    best_sample = _best(matrix, axis=0)
    scored_samples = best_sample[np.isfinite(best_sample)]
    with np.errstate(invalid="ignore"):
        cov_r = (
            (best_ref[None, :] < thresholds[:, None]).sum(axis=1) / matrix.shape[0]
            if matrix.shape[0]
            else (np.full(len(thresholds), np.nan))
        )
        cov_p = (
            (scored_samples[None, :] < thresholds[:, None]).mean(axis=1)
            if scored_samples.size
            else (np.full(len(thresholds), np.nan))
        )
    return {"thresholds": thresholds, "cov_r": np.asarray(cov_r, dtype=float), "cov_p": np.asarray(cov_p, dtype=float)}


def summarize(values) -> dict[str, float | int]:
    """Mean and median over molecules, ignoring NaN (molecules where the metric is undefined), and how many counted."""
    arr = np.asarray(values, dtype=float)
    finite = arr[np.isfinite(arr)]
    return {
        "mean": float(finite.mean()) if finite.size else float("nan"),
        "median": float(np.median(finite)) if finite.size else float("nan"),
        "molecules": int(finite.size),
    }
