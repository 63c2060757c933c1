"""The statistics of an experiment report, over per-user counts (users are the randomisation
unit: a user's variant is fixed, so users, not lists or events, are the independent draws).

Every interval and test is scipy's:

- a variant's conversion rate (converted users / users) with its 95 % Wilson score interval
  (``scipy.stats.binomtest(...).proportion_ci(method="wilson")``);
- the relative lift of a variant over the control, ``rate / control_rate - 1``, with the 95 %
  interval of the rate ratio (``scipy.stats.contingency.relative_risk``, the log method) minus 1;
- its two-sided p-value: Pearson's chi-square test of the 2x2 table converted / not converted ×
  variant / control, without continuity correction (``scipy.stats.chi2_contingency``; equal to the
  pooled two-proportion z-test);
- the sample-ratio-mismatch check: a chi-square goodness-of-fit test of the users per variant
  against the configured split (``scipy.stats.chisquare``), flagged below p = 0.001.

>>> result = analyse({"control": (10_000, 500), "treatment": (10_000, 600)}, {"control": 0.5, "treatment": 0.5}, "control")
>>> t = result.arms[1]
>>> round(t.lift, 3), t.p_value < 0.01, result.srm_flagged
(0.2, True, False)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from scipy import stats
from scipy.stats.contingency import relative_risk

#: Below this p-value the users per variant do not match the configured split.
SRM_ALPHA = 0.001


@dataclass(frozen=True)
class ArmResult:
    variant: str
    users: int
    converted: int
    rate: float | None
    rate_low: float | None
    rate_high: float | None
    #: Relative lift over the control and its interval (None for the control itself).
    lift: float | None = None
    lift_low: float | None = None
    lift_high: float | None = None
    p_value: float | None = None


@dataclass(frozen=True)
class ExperimentResult:
    control: str
    confidence: float
    arms: tuple[ArmResult, ...]
    expected_shares: dict[str, float]
    srm_p_value: float | None
    srm_flagged: bool

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "arms": [asdict(a) for a in self.arms]}


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def analyse(arms: Mapping[str, tuple[int, int]], shares: Mapping[str, float], control: str, *,
            confidence: float = 0.95) -> ExperimentResult:
    """Per-variant conversion with intervals, lift over ``control`` with interval and p-value,
    and the sample-ratio check. ``arms``: variant -> (users, converted users); ``shares``: each
    configured variant's expected share of users (a variant with no users yet counts as 0)."""
    if control not in shares:
        raise ValueError(f"the control {control!r} is not one of the variants {sorted(shares)}")
    unknown = set(arms) - set(shares)
    if unknown:
        raise ValueError(f"users were counted in variants the experiment does not have: {sorted(unknown)}")
    n_c, k_c = arms.get(control, (0, 0))
    results = []
    for variant in shares:
        n, k = arms.get(variant, (0, 0))
        if not 0 <= k <= n:
            raise ValueError(f"variant {variant!r}: {k} converted users out of {n} users is impossible")
        rate = low = high = None
        if n:
            ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
            rate, low, high = k / n, float(ci.low), float(ci.high)
        lift = lift_low = lift_high = p_value = None
        if variant != control and n and n_c:
            if k_c:
                rr = relative_risk(k, n, k_c, n_c)
                ci = rr.confidence_interval(confidence_level=confidence)
                lift, lift_low, lift_high = rr.relative_risk - 1, _finite(ci.low - 1), _finite(ci.high - 1)
            if k + k_c and (n - k) + (n_c - k_c):
                table = [[k, n - k], [k_c, n_c - k_c]]
                p_value = float(stats.chi2_contingency(table, correction=False).pvalue)
            else:  # nobody (or everybody) converted in both: no evidence of a difference
                p_value = 1.0
        results.append(ArmResult(variant, n, k, rate, low, high, lift, lift_low, lift_high, p_value))
    observed = [arms.get(v, (0, 0))[0] for v in shares]
    total = sum(observed)
    srm_p = None
    if total:
        weight = sum(shares.values())
        expected = [total * shares[v] / weight for v in shares]
        srm_p = float(stats.chisquare(observed, expected).pvalue)
    return ExperimentResult(control, confidence, tuple(results), dict(shares), srm_p,
                            srm_p is not None and srm_p < SRM_ALPHA)


@dataclass(frozen=True)
class MeanResult:
    """A per-user mean (e.g. attributed revenue per user exposed) of one variant."""

    variant: str
    users: int
    mean: float | None
    mean_low: float | None
    mean_high: float | None
    #: Relative difference to the control's mean (no interval) and Welch's t-test p-value.
    lift: float | None = None
    p_value: float | None = None


def analyse_means(arms: Mapping[str, tuple[int, float, float]], variants: list[str], control: str, *,
                  confidence: float = 0.95) -> tuple[MeanResult, ...]:
    """Per-user means from ``(users, sum, sum of squares)`` per variant: the mean with its
    t interval (``scipy.stats.t.interval``), its relative difference to the control, and
    Welch's two-sided t-test against the control (``scipy.stats.ttest_ind_from_stats``).

    >>> control, better = analyse_means({"c": (4, 4.0, 8.0), "t": (4, 8.0, 32.0)}, ["c", "t"], "c")
    >>> control.mean, better.mean, better.lift
    (1.0, 2.0, 1.0)
    """
    def stats_of(variant: str) -> tuple[int, float, float]:
        n, total, sumsq = arms.get(variant, (0, 0.0, 0.0))
        if n < 2:
            return n, (total / n if n else math.nan), math.nan
        variance = max(0.0, (sumsq - total * total / n) / (n - 1))
        return n, total / n, math.sqrt(variance)

    n_c, mean_c, sd_c = stats_of(control)
    results = []
    for variant in variants:
        n, mean, sd = stats_of(variant)
        low = high = None
        if n >= 2:
            if sd > 0:
                interval = stats.t.interval(confidence, n - 1, loc=mean, scale=sd / math.sqrt(n))
                low, high = float(interval[0]), float(interval[1])
            else:
                low = high = mean
        lift = p_value = None
        if variant != control and n >= 2 and n_c >= 2:
            if mean_c > 0:
                lift = mean / mean_c - 1
            if sd > 0 or sd_c > 0:
                p_value = float(stats.ttest_ind_from_stats(mean, sd, n, mean_c, sd_c, n_c, equal_var=False).pvalue)
            elif mean == mean_c:
                p_value = 1.0
        results.append(MeanResult(variant, n, None if math.isnan(mean) else mean, low, high, lift, p_value))
    return tuple(results)


#: ``report experiment --metric``: the arm record's field counted as a success.
METRIC_FIELDS = {"converted": "converted_users", "buyers": "buyers", "clicked": "clicked_users"}


def analyse_arm_records(records: Mapping[str, Mapping[str, Any]], shares: Mapping[str, float], control: str, *,
                        metric: str = "converted") -> tuple[ExperimentResult, tuple[MeanResult, ...]]:
    """The experiment's conversion (:func:`analyse`) and revenue per user (:func:`analyse_means`)
    from its variants' totals as the attribution topic holds them (variant -> ``arm`` record),
    as ``streamrec report experiment`` and the operations page show them.

    >>> records = {"c": {"users": 100, "converted_users": 5, "revenue": 50.0, "revenue_sumsq": 500.0},
    ...            "t": {"users": 100, "converted_users": 10, "revenue": 100.0, "revenue_sumsq": 1000.0}}
    >>> result, revenue = analyse_arm_records(records, {"c": 0.5, "t": 0.5}, "c")
    >>> result.arms[1].rate, round(result.arms[1].lift, 6), revenue[1].mean
    (0.1, 1.0, 1.0)
    """
    if metric not in METRIC_FIELDS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRIC_FIELDS)}")
    field = METRIC_FIELDS[metric]
    result = analyse({v: (r["users"], r[field]) for v, r in records.items()}, shares, control)
    revenue = analyse_means({v: (r["users"], r["revenue"], r.get("revenue_sumsq", 0.0)) for v, r in records.items()},
                            list(shares), control)
    return result, revenue


def users_per_arm(base_rate: float, lift: float, *, alpha: float = 0.05, power: float = 0.8) -> int:
    """Users per arm (equal split) for a two-sided test at ``alpha`` to detect a relative ``lift``
    of a conversion rate ``base_rate`` with probability ``power`` (the normal approximation to
    the two-proportion test, quantiles from ``scipy.stats.norm``).

    >>> users_per_arm(0.05, 0.2)
    8158
    """
    p0, p1 = base_rate, base_rate * (1 + lift)
    if not (0 < p0 < 1 and 0 < p1 < 1 and p0 != p1):
        raise ValueError(f"rates must lie in (0, 1) and differ, got {p0} and {p1}")
    z_a, z_b = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    pooled = (p0 + p1) / 2
    n = (z_a * math.sqrt(2 * pooled * (1 - pooled)) + z_b * math.sqrt(p0 * (1 - p0) + p1 * (1 - p1))) ** 2 / (p1 - p0) ** 2
    return math.ceil(n)
