"""The side-by-side benchmarks' figures over molecules: means with standard errors, paired changes, and one
method's figures read from `evaluate`'s metrics."""

from __future__ import annotations

import math

import pytest


def test_paired_change_and_its_standard_error(load_benchmark):
    om = load_benchmark("over_molecules")
    assert om.mean_se([1.0, 2.0, 3.0, None, math.nan]) == {"mean": 2.0, "se": pytest.approx(1 / math.sqrt(3)), "n": 3}
    assert om.mean_se([]) == {"mean": None, "se": None, "n": 0} and om.mean_se([4.0])["se"] is None
    before = {"per_molecule": {"mat_r": [1.5, 1.0, None]}}
    after = {"per_molecule": {"mat_r": [1.2, 0.8, 0.5]}}
    change = om.paired(after, before)["mat_r"]
    assert change["n"] == 2 and change["mean"] == pytest.approx(-0.25) and change["se"] == pytest.approx(0.05)


def test_method_figures_read_evaluate_metrics(load_benchmark):
    om = load_benchmark("over_molecules")
    per = [
        {"cov_r": 0.5, "mat_r": 1.0, "cov_p": 0.25, "mat_p": 1.2},
        {"cov_r": 0.0, "mat_r": 2.0, "cov_p": 0.0, "mat_p": 2.2},
    ]
    metrics = {
        "methods": {
            "model": {"per_molecule": per, "validity": 1.0, "chemistry": {"stereo_ok": 1.0}, "samples_per_second": 3.0}
        },
        "posebusters": {"methods": {"model": {"checks": {"bond_lengths": {"pass_rate": 0.5}}, "all_pass": 0.25}}},
    }
    got = om.method_figures(metrics)
    assert got["summary"]["mat_r"]["mean"] == 1.5 and got["per_molecule"]["cov_r"] == [0.5, 0.0]
    assert got["posebusters"] == {"bond_lengths": 0.5, "all_pass": 0.25} and got["sampler_counts"] == {}
    # the scripts that use them load
    assert load_benchmark("geometry_decoding").MODES["stereo + geometry"] == {"geometry": True}
