"""Figures over molecules for the side-by-side benchmarks: a mean with its standard error, and the paired
change between two runs on the same molecules (imported by `posttrain.py` and `geometry_decoding.py`)."""

from __future__ import annotations

import math

import numpy as np


def mean_se(values) -> dict:
    """Mean, standard error and count of the finite values (None where there are none / one)."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if not arr.size:
        return {"mean": None, "se": None, "n": 0}
    se = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else None
    return {"mean": float(arr.mean()), "se": se, "n": int(arr.size)}


def paired(after: dict, before: dict) -> dict:
    """Per metric: mean and standard error over molecules of (after - before)."""
    out = {}
    for k, a in after["per_molecule"].items():
        b = before["per_molecule"][k]
        out[k] = mean_se(x - y for x, y in zip(a, b) if x is not None and y is not None)
    return out


METRICS = ("cov_r", "mat_r", "cov_p", "mat_p")


def method_figures(metrics: dict, method: str = "model") -> dict:
    """One method's figures from `evaluate`'s metrics: per-molecule COV/MAT and their means with standard
    errors, validity, chemistry, PoseBusters pass rates, samples/s and the sampler's counts."""
    scores = metrics["methods"][method]
    per = scores["per_molecule"]
    pb = metrics["posebusters"]["methods"][method]
    return {
        "per_molecule": {k: [m[k] for m in per] for k in METRICS},
        "summary": {k: mean_se(m[k] for m in per) for k in METRICS},
        "validity": scores["validity"],
        "chemistry": scores["chemistry"],
        "posebusters": {k: v["pass_rate"] for k, v in pb["checks"].items()} | {"all_pass": pb["all_pass"]},
        "samples_per_second": scores.get("samples_per_second"),
        "sampler_counts": scores.get("sampler_counts", {}),
    }
