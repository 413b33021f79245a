"""The reward equals its definition (FACTS 12) on hand-made RMSD matrices."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from molgen3D.training.posttraining.reward import (
    coverage_credit,
    group_terms,
    matching_credit,
    soft_coverage,
    soft_hits,
)

DELTA, RHO = 0.75, 0.1


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


D = np.array(
    [
        [0.40, 1.90, 0.70, np.nan],
        [1.20, 0.60, 0.80, 2.50],
        [0.90, 0.95, 3.00, 0.50],
    ]
)


def test_soft_hits_are_the_sigmoid_kernel_and_nan_is_no_hit():
    k = soft_hits(D, DELTA, RHO)
    assert k[0, 0] == pytest.approx(sigmoid((DELTA - 0.40) / RHO))
    assert k[2, 3] == pytest.approx(sigmoid((DELTA - 0.50) / RHO))
    assert k[0, 3] == 0.0


def test_marginal_credit_is_k_times_the_others_misses_averaged_over_references():
    k = soft_hits(D, DELTA, RHO)
    expected = [
        np.mean([k[j, i] * np.prod([1 - k[j, m] for m in range(4) if m != i]) for j in range(3)]) for i in range(4)
    ]
    assert coverage_credit(D, DELTA, RHO) == pytest.approx(expected, rel=1e-12)


def test_marginal_credits_sum_to_the_mean_soft_coverage_when_hits_do_not_overlap():
    # each reference is hit by at most one rollout (the others are far): the credits add up exactly
    d = np.array([[0.2, 5.0, 5.0], [5.0, 0.3, 5.0], [5.0, 5.0, 5.0]])
    assert coverage_credit(d, DELTA, RHO).sum() == pytest.approx(soft_coverage(d, DELTA, RHO).mean(), rel=1e-9)


def test_marginal_credits_fall_short_of_the_soft_coverage_when_two_rollouts_share_a_reference():
    # the formula K_ij prod_(l != i)(1 - K_lj) counts only what losing one rollout would cost: two rollouts on
    # the same reference leave each other almost nothing (that is what pushes rollouts apart)
    d = np.array([[0.2, 0.25]])
    assert coverage_credit(d, DELTA, RHO).sum() < 0.05 < soft_coverage(d, DELTA, RHO).mean()


def test_shapley_credits_sum_to_the_mean_soft_coverage_and_are_the_average_over_orders():
    rng = np.random.default_rng(0)
    d = rng.uniform(0.3, 1.2, size=(4, 5))
    shap = coverage_credit(d, DELTA, RHO, credit="shapley")
    assert shap.sum() == pytest.approx(soft_coverage(d, DELTA, RHO).mean(), rel=1e-10)
    k = soft_hits(d, DELTA, RHO)
    brute = np.zeros(5)
    orders = list(itertools.permutations(range(5)))
    for order in orders:
        for pos, i in enumerate(order):
            before = np.prod(1 - k[:, list(order[:pos])], axis=1) if pos else np.ones(4)
            brute[i] += np.mean(k[:, i] * before)
    assert shap == pytest.approx(brute / len(orders), rel=1e-10)


def test_depth_weight_multiplies_each_credit():
    k = soft_hits(D, DELTA, RHO)
    plain = k * 0
    for j, i in itertools.product(range(3), range(4)):
        depth = 1 + 2.0 * min(max(1 - D[j, i] / DELTA, 0), 1) if np.isfinite(D[j, i]) else 1.0
        plain[j, i] = k[j, i] * np.prod([1 - k[j, m] for m in range(4) if m != i]) * depth
    assert coverage_credit(D, DELTA, RHO, depth_weight=2.0) == pytest.approx(plain.mean(axis=0), rel=1e-12)


def test_group_terms_floor_invalid_rollouts_and_score_the_rest_without_them():
    valid = np.array([True, False, True, True])
    d = D.copy()
    d[:, 3] = np.nan  # valid text but no finite RMSD: invalid too
    t = group_terms(d, valid, floor=-1.0, sigma=0.5, delta=DELTA, rho=RHO)
    assert list(t.valid) == [True, False, True, False]
    assert list(t.floor) == [0.0, -1.0, 0.0, -1.0]
    assert t.quality[1] == t.coverage[1] == t.precision[1] == t.quality[3] == 0.0
    assert t.quality[0] == pytest.approx(math.exp(-0.40 / 0.5))
    assert t.quality[2] == pytest.approx(math.exp(-0.70 / 0.5))
    assert t.precision[2] == pytest.approx(sigmoid((DELTA - 0.70) / RHO))
    # coverage of the valid rollouts is computed among themselves only
    assert t.coverage[[0, 2]] == pytest.approx(coverage_credit(d[:, [0, 2]], DELTA, RHO))


def test_matching_credit_is_what_each_reference_match_loses_without_the_rollout():
    sigma = 0.5
    q = np.where(np.isfinite(D), np.exp(-np.nan_to_num(D, nan=0.0) / sigma), 0.0)
    brute = [np.mean(q.max(axis=1) - np.delete(q, i, axis=1).max(axis=1)) for i in range(D.shape[1])]
    credit = matching_credit(D, sigma)
    assert credit == pytest.approx(brute)
    # rollout 2 is no reference's nearest: nothing; rollout 0 leads reference 0 by q(0.40) - q(0.70)
    assert credit[2] == 0.0
    assert credit[0] == pytest.approx((math.exp(-0.40 / sigma) - math.exp(-0.70 / sigma)) / 3)
    # a tie for nearest earns neither, and one rollout alone earns its whole match
    assert matching_credit(np.array([[0.5, 0.5]]), sigma) == pytest.approx([0.0, 0.0])
    assert matching_credit(np.array([[0.5], [np.nan]]), sigma) == pytest.approx([math.exp(-1.0) / 2])


def test_group_terms_matching_leaves_invalid_rollouts_out():
    valid = np.array([True, False, True, True])
    t = group_terms(D, valid, floor=-1.0, sigma=0.5, delta=DELTA, rho=RHO)
    assert t.matching[1] == 0.0
    assert t.matching[[0, 2, 3]] == pytest.approx(matching_credit(D[:, [0, 2, 3]], 0.5))
    assert t.matching[2] > 0.0  # with rollout 1 out, rollout 2 is reference 1's nearest


def test_unknown_credit_is_an_error():
    with pytest.raises(ValueError, match="marginal"):
        coverage_credit(D, DELTA, RHO, credit="mean")
