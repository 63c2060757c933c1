import math

import pytest

from streamrec.core.abtest import analyse, users_per_arm

SPLIT = {"control": 0.5, "treatment": 0.5}


def z_test_p(k1, n1, k0, n0):
    """The pooled two-proportion z-test, written out here as the independent expectation."""
    pooled = (k1 + k0) / (n1 + n0)
    z = (k1 / n1 - k0 / n0) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
    return math.erfc(abs(z) / math.sqrt(2))


def wilson(k, n, z=1.959963984540054):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_intervals_lift_and_p_value_match_the_textbook_formulas():
    result = analyse({"control": (5_000, 400), "treatment": (5_100, 480)}, SPLIT, "control")
    control, treatment = result.arms
    assert control.rate == 0.08 and control.lift is None and control.p_value is None
    assert (control.rate_low, control.rate_high) == pytest.approx(wilson(400, 5_000), rel=1e-9)
    assert treatment.p_value == pytest.approx(z_test_p(480, 5_100, 400, 5_000), rel=1e-6)
    assert treatment.lift == pytest.approx((480 / 5_100) / 0.08 - 1)
    # The log-method interval of the ratio: exp(log RR +- z * sqrt(1/k1 - 1/n1 + 1/k0 - 1/n0)).
    se = math.sqrt(1 / 480 - 1 / 5_100 + 1 / 400 - 1 / 5_000)
    rr = (480 / 5_100) / 0.08
    assert treatment.lift_low == pytest.approx(rr * math.exp(-1.959963984540054 * se) - 1, rel=1e-6)
    assert treatment.lift_high == pytest.approx(rr * math.exp(1.959963984540054 * se) - 1, rel=1e-6)


def test_sample_ratio_mismatch_is_flagged_against_the_configured_split():
    assert not analyse({"control": (5_000, 10), "treatment": (5_060, 10)}, SPLIT, "control").srm_flagged
    bad = analyse({"control": (5_000, 10), "treatment": (5_600, 10)}, SPLIT, "control")
    assert bad.srm_flagged and bad.srm_p_value < 1e-6
    # A 1:3 split is what was asked for here: no mismatch.
    assert not analyse({"a": (2_500, 1), "b": (7_500, 1)}, {"a": 1.0, "b": 3.0}, "a").srm_flagged


def test_degenerate_counts_give_no_false_evidence():
    none = analyse({"control": (100, 0), "treatment": (100, 0)}, SPLIT, "control").arms[1]
    assert none.p_value == 1.0 and none.lift is None
    empty = analyse({}, SPLIT, "control")
    assert empty.srm_p_value is None and empty.arms[0].rate is None
    with pytest.raises(ValueError, match="impossible"):
        analyse({"control": (10, 11), "treatment": (10, 1)}, SPLIT, "control")
    with pytest.raises(ValueError, match="does not have"):
        analyse({"other": (10, 1)}, SPLIT, "control")


def test_users_per_arm_grows_as_the_lift_shrinks():
    assert users_per_arm(0.1, 0.1) > users_per_arm(0.1, 0.2) > users_per_arm(0.1, 0.4)
    with pytest.raises(ValueError):
        users_per_arm(0.1, 0.0)


def test_means_from_sums_match_scipy_on_the_raw_values():
    import numpy as np
    from scipy import stats

    from streamrec.core.abtest import analyse_means

    rng = np.random.default_rng(4)
    control = np.where(rng.random(3_000) < 0.1, rng.lognormal(3, 1, 3_000), 0.0)
    treatment = np.where(rng.random(3_200) < 0.12, rng.lognormal(3, 1, 3_200), 0.0)
    sums = {"control": (len(control), control.sum(), (control**2).sum()),
            "treatment": (len(treatment), treatment.sum(), (treatment**2).sum())}
    c, t = analyse_means(sums, ["control", "treatment"], "control")
    assert t.p_value == pytest.approx(stats.ttest_ind(treatment, control, equal_var=False).pvalue, rel=1e-6)
    low, high = stats.t.interval(0.95, len(control) - 1, loc=control.mean(), scale=stats.sem(control))
    assert (c.mean, c.mean_low, c.mean_high) == pytest.approx((control.mean(), low, high), rel=1e-9)
    assert t.lift == pytest.approx(treatment.mean() / control.mean() - 1)
