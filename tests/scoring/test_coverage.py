"""COV/MAT on hand-made RMSD matrices whose answers are worked out in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from molgen3D.scoring.coverage import DEFAULT_THRESHOLDS, coverage_curves, coverage_matching, summarize

nan = float("nan")


def test_plain_matrix():
    # 2 references x 3 samples.
    rmsd = np.array([[0.5, 1.0, 2.0], [0.9, 0.8, 0.3]])
    got = coverage_matching(rmsd, threshold=0.6)
    # row minima 0.5, 0.3 -> both < 0.6: COV-R 1; MAT-R (0.5 + 0.3) / 2 = 0.4
    # column minima 0.5, 0.8, 0.3 -> 2 of 3 < 0.6: COV-P 2/3; MAT-P (0.5 + 0.8 + 0.3) / 3
    assert got["cov_r"] == 1.0
    assert got["mat_r"] == pytest.approx(0.4)
    assert got["cov_p"] == pytest.approx(2 / 3)
    assert got["mat_p"] == pytest.approx(1.6 / 3)


def test_ties_at_the_threshold_are_not_covered():
    rmsd = np.array([[0.75, 2.0], [1.0, 0.75]])
    got = coverage_matching(rmsd, threshold=0.75)
    # every best RMSD equals the threshold exactly; coverage is strict "<"
    assert got["cov_r"] == 0.0 and got["cov_p"] == 0.0
    assert got["mat_r"] == pytest.approx(0.75) and got["mat_p"] == pytest.approx(0.75)
    assert coverage_matching(rmsd, threshold=0.7500001)["cov_r"] == 1.0


def test_nan_columns_are_failed_samples():
    # sample 2 failed (NaN column), sample 0 timed out against reference 1 only.
    rmsd = np.array([[0.2, 1.5, nan], [nan, 0.9, nan]])
    got = coverage_matching(rmsd, threshold=1.0)
    # row minima 0.2, 0.9 -> both covered; MAT-R (0.2 + 0.9) / 2 = 0.55
    # scored samples: 0 (best 0.2), 1 (best 0.9); failed sample 2 is left out of the P side
    assert got["cov_r"] == 1.0 and got["mat_r"] == pytest.approx(0.55)
    assert got["cov_p"] == 1.0 and got["mat_p"] == pytest.approx(0.55)
    assert coverage_matching(rmsd, threshold=0.5)["cov_p"] == 0.5


def test_all_nan_row_counts_as_uncovered_and_leaves_mat_r():
    rmsd = np.array([[0.3, 0.4], [nan, nan], [1.2, 0.1]])
    got = coverage_matching(rmsd, threshold=0.5)
    # references: 0 (0.3 covered), 1 (nothing), 2 (0.1 covered) -> COV-R 2/3
    # MAT-R over references that have an RMSD: (0.3 + 0.1) / 2
    assert got["cov_r"] == pytest.approx(2 / 3)
    assert got["mat_r"] == pytest.approx(0.2)
    # samples: best 0.3 and 0.1 -> both < 0.5
    assert got["cov_p"] == 1.0 and got["mat_p"] == pytest.approx(0.2)


def test_every_sample_failed():
    got = coverage_matching(np.full((2, 4), nan), threshold=0.75)
    assert got["cov_r"] == 0.0
    assert all(math.isnan(got[k]) for k in ("mat_r", "cov_p", "mat_p"))


def test_rejects_non_matrix():
    with pytest.raises(ValueError, match="L x K"):
        coverage_matching(np.zeros(3), 0.5)


def test_curves_step_at_each_best_rmsd():
    rmsd = np.array([[0.12, 0.9], [2.0, nan]])
    curves = coverage_curves(rmsd)
    assert curves["thresholds"][0] == pytest.approx(0.05) and curves["thresholds"][-1] == pytest.approx(3.0)
    assert len(curves["thresholds"]) == 60
    t = curves["thresholds"]
    # COV-R: reference 0 (best 0.12) joins above 0.12, reference 1 (best 2.0) strictly above 2.0
    expected_r = ((t > 0.12).astype(float) + (t > 2.0).astype(float)) / 2
    # COV-P: samples best 0.12 and 0.9
    expected_p = ((t > 0.12).astype(float) + (t > 0.9).astype(float)) / 2
    np.testing.assert_allclose(curves["cov_r"], expected_r)
    np.testing.assert_allclose(curves["cov_p"], expected_p)
    # the curve agrees with coverage_matching at every threshold
    for k in (0, 10, 39, 40, 59):
        single = coverage_matching(rmsd, float(t[k]))
        assert curves["cov_r"][k] == pytest.approx(single["cov_r"])
        assert curves["cov_p"][k] == pytest.approx(single["cov_p"])


def test_default_thresholds_are_exact_multiples():
    assert np.allclose(DEFAULT_THRESHOLDS, np.arange(1, 61) / 20)


def test_summarize_ignores_undefined_molecules():
    got = summarize([0.5, nan, 1.0, 0.0])
    assert got == {"mean": pytest.approx(0.5), "median": pytest.approx(0.5), "molecules": 3}
