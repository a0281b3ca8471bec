"""Threshold rules: the FRR bound holds at its confidence on simulated good parts, the defect
rules on hand cases, and the trade-off table counts what each threshold does."""

import math
from statistics import NormalDist

import numpy as np
import pytest

from crad.thresholds import (MIN_FIT, balanced_threshold, choose, estimated_frr, frr_threshold, miss_threshold,
                             normals_needed, tradeoff_markdown, tradeoff_table)


def coverage(draw, true_frr, n, trials=300, target=0.01, confidence=0.95):
    """Share of seeded repetitions whose threshold keeps the true FRR within the target, and the methods used."""
    rng = np.random.default_rng(n)
    met, methods = 0, set()
    for _ in range(trials):
        threshold, info = frr_threshold(draw(rng, n), target, confidence)
        met += true_frr(threshold) <= target
        methods.add(info["method"])
    return met / trials, methods


def test_order_statistic_bound_holds_at_its_confidence_and_is_not_wasteful():
    # Uniform(0, 1) good scores: the true FRR at t is 1 - t. 400 normals >= the 299 a bound needs.
    share, methods = coverage(lambda rng, n: rng.uniform(0, 1, n), lambda t: 1 - t, 400)
    assert methods == {"order statistic"}
    assert 0.92 <= share < 1.0  # 95 % nominal: met in about 95 % of runs, not in all (not simply the max)


def test_fitted_tail_bound_holds_for_log_normal_scores_with_few_normals():
    share, methods = coverage(lambda rng, n: np.exp(rng.normal(0, 0.5, n)),
                              lambda t: 1 - NormalDist(0, 0.5).cdf(math.log(t)), 40)
    assert methods == {"log-normal tail"}
    assert 0.90 <= share < 1.0


def test_order_statistic_is_the_documented_one():
    n, frr = 1000, 0.01
    threshold, info = frr_threshold(np.arange(1, n + 1, dtype=float), frr, 0.95)

    def confidence(r):  # P(the r-th smallest is above the (1 - frr) quantile) = P(at least n - r + 1 above it)
        return 1 - sum(math.comb(n, i) * frr ** i * (1 - frr) ** (n - i) for i in range(n - r + 1))

    assert confidence(996) >= 0.95 > confidence(995)  # 0.971 and 0.934
    assert info["order"] == 996 and threshold == 996.0
    assert normals_needed(0.01, 0.95) == 299


# (normals, target FRR, confidence) -> the order statistic chosen, as the hand-written binomial CDF
# (a cumulative sum of the log pmf) chose it before scipy's binom.cdf replaced it (commit 250fd34):
# the same thresholds, from the edge case where the largest normal is just enough (59 at 5 %/95 %,
# 299 at 1 %/95 %) to n in the thousands.
ORDERS_BEFORE_SCIPY = {
    (59, 0.05, 0.9): 59, (59, 0.05, 0.95): 59, (299, 0.01, 0.95): 299, (299, 0.05, 0.9): 290,
    (299, 0.05, 0.95): 291, (400, 0.01, 0.95): 400, (400, 0.05, 0.9): 386, (400, 0.05, 0.95): 388,
    (1000, 0.01, 0.95): 996, (1000, 0.05, 0.9): 960, (1000, 0.01, 0.99): 998, (1000, 0.05, 0.95): 962,
    (2995, 0.01, 0.95): 2975, (2995, 0.001, 0.95): 2995, (2995, 0.05, 0.9): 2861, (2995, 0.01, 0.99): 2978,
    (2995, 0.05, 0.95): 2866, (5000, 0.01, 0.95): 4962, (5000, 0.001, 0.95): 4999, (5000, 0.05, 0.9): 4771,
    (5000, 0.01, 0.99): 4967, (5000, 0.05, 0.95): 4776,
}


@pytest.mark.parametrize("case", sorted(ORDERS_BEFORE_SCIPY), ids=lambda case: "n%d-frr%g-conf%g" % case)
def test_order_statistic_unchanged_by_scipy_binomial(case):
    n, frr, confidence = case
    threshold, info = frr_threshold(np.arange(1, n + 1, dtype=float), frr, confidence)
    assert info["method"] == "order statistic"
    assert (info["order"], threshold) == (ORDERS_BEFORE_SCIPY[case], float(ORDERS_BEFORE_SCIPY[case]))


def test_too_few_normals_fall_back_to_max_margin_and_say_so():
    threshold, info = frr_threshold(np.array([1.0, 2.0, 4.0]), 0.01, 0.95)
    assert threshold == pytest.approx(4.3) and info["method"] == "max-margin" and str(MIN_FIT) in info["text"]


def test_defect_rules():
    normal, defect = np.array([1.0, 2.0, 3.0]), np.array([2.5, 5.0, 6.0, 7.0])
    assert miss_threshold(defect, 0.0)[0] == 2.5  # catch every defect
    assert miss_threshold(defect, 0.25)[0] == 5.0  # one of four may be missed
    assert miss_threshold(defect, 0.2)[0] == 2.5
    assert choose("auto", normal, defect)[1]["rule"] == "f1"
    assert choose("auto", normal)[1]["rule"] == "frr"
    with pytest.raises(ValueError, match="needs labelled defect"):
        choose("miss-rate", normal)


def test_tradeoff_rows_count_rejects_and_misses():
    normal = np.linspace(0.0, 1.0, 50)
    defect = np.array([0.5, 2.0, 3.0])
    rows = tradeoff_table(normal, defect, {"chosen": 0.9})
    chosen = next(r for r in rows if r["threshold_rule"] == "chosen")
    # normals >= 0.9: 0.9 lies between the 44th and 45th of 50 evenly spaced -> 5 rejected; 1 defect missed
    assert (chosen["false_rejects"], chosen["good"], chosen["missed"], chosen["defect"]) == (5, 50, 1, 3)
    assert [r["threshold"] for r in rows] == sorted(r["threshold"] for r in rows)
    names = {r["threshold_rule"] for r in rows}
    assert {"F1-optimal", "miss <= 5 %", "max + 10 % of range (old default)"} <= names
    assert "| chosen | 0.9 | 5 / 50 (10.0 %) | 1 / 3 (33.3 %) |" in tradeoff_markdown(rows)
    assert all(r["miss_rate"] is None for r in tradeoff_table(normal, np.zeros(0)))  # JSON-safe, not NaN


def test_balanced_rule_minimises_estimated_false_rejects_plus_synthetic_misses():
    rng = np.random.default_rng(1)
    normal = np.exp(rng.normal(0.0, 0.2, 40))
    # a third of the synthetic anomalies look like good parts, the rest score well above them
    synthetic = np.concatenate([np.exp(rng.normal(0.0, 0.2, 20)), np.exp(rng.normal(1.0, 0.2, 40))])
    threshold, info = choose("auto", normal, synthetic=synthetic)
    assert info["rule"] == "balanced" and threshold in synthetic
    frr, _ = estimated_frr(normal, synthetic)
    cost = frr + np.array([(synthetic < t).mean() for t in synthetic])
    assert info["estimated_frr"] + info["synthetic_miss_rate"] == pytest.approx(cost.min())
    # it sits below the FRR bound (which passes more anomalies) and above most good parts
    frr_bound, _ = frr_threshold(normal)
    assert threshold < frr_bound and (synthetic < threshold).mean() < (synthetic < frr_bound).mean()
    assert (normal >= threshold).mean() < 0.2 and "balanced" in info["text"]
    # too few normals to estimate a false-reject rate: the frr rule, and it says so
    few, few_info = balanced_threshold(normal[:5], synthetic)
    assert few_info["rule"] == "frr" and "only 5 normals" in few_info["text"]
    with pytest.raises(ValueError, match="synthetic"):
        choose("balanced", normal)


def test_tradeoff_table_counts_synthetic_misses_beside_false_rejects():
    normal = np.linspace(1.0, 2.0, 20)
    synthetic = np.array([1.5, 3.0, 4.0, 5.0])
    rows = tradeoff_table(normal, np.zeros(0), {"chosen": 2.5}, synthetic)
    chosen = next(r for r in rows if r["threshold_rule"] == "chosen")
    assert (chosen["false_rejects"], chosen["synthetic_missed"], chosen["synthetic"]) == (0, 1, 4)
    assert any(r["threshold_rule"].startswith("balanced") for r in rows)
    text = tradeoff_markdown(rows)
    assert "missed synthetic anomalies" in text and "| chosen | 2.5 | 0 / 20 (0.0 %) | n/a | 1 / 4 (25.0 %) |" in text
    assert "synthetic" not in tradeoff_table(normal, np.zeros(0))[0]  # without them the table is as before
