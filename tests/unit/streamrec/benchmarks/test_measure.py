"""The benchmark's arithmetic: percentiles, who answered which event, rates, lag, pacing."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.benchmarks.load import Pacer, Workload
from streamrec.benchmarks.measure import (
    answer_times,
    consumer_lag,
    extract_event_id,
    interpolate,
    percentiles,
    rate_series,
    sustained_rate,
)
from streamrec.contract import Recommendation, ScoredItem, encode_recommendation


def test_percentiles_match_numpy_and_ignore_nan():
    values = np.arange(1, 101, dtype=float)
    out = percentiles(np.r_[values, np.nan])
    assert out["p50"] == pytest.approx(np.percentile(values, 50))
    assert out["p99"] == pytest.approx(np.percentile(values, 99))
    assert out["max"] == 100.0 and out["count"] == 100


def test_percentiles_of_nothing_are_none():
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None, "mean": None, "max": None, "count": 0}


def test_a_coalescing_recommendation_answers_the_earlier_events_of_its_user():
    # Events: u0 u1 u0 u0 u1 u2; the worker sent one rec for u0 at event 2 (covering 0 and 2),
    # one for u1 at 4 (covering 1 and 4), one for u0 at 3; u2 got nothing.
    users = np.array([0, 1, 0, 0, 1, 2])
    answered = answer_times(users, np.array([0, 1, 0]), np.array([2, 4, 3]), np.array([10.0, 11.0, 12.0]))
    assert answered[:5].tolist() == [10.0, 11.0, 10.0, 12.0, 11.0]
    assert np.isnan(answered[5])


def test_a_duplicate_recommendation_counts_its_first_arrival():
    answered = answer_times(np.array([0]), np.array([0, 0]), np.array([0, 0]), np.array([9.0, 7.0]))
    assert answered.tolist() == [7.0]


def test_recommendations_of_other_users_never_answer_an_event():
    answered = answer_times(np.array([0, 1]), np.array([1]), np.array([0]), np.array([5.0]))
    assert np.isnan(answered).all()


def test_per_event_answers_give_per_event_latency():
    users = np.arange(1000) % 37
    arrivals = np.linspace(0, 1, 1000)
    answered = answer_times(users, users, np.arange(1000), arrivals)
    np.testing.assert_allclose(answered, arrivals)


def test_sustained_rate_leaves_out_the_first_instant():
    times = np.r_[np.full(100, 5.0), np.linspace(5.001, 15.0, 1000)]
    rate, first, last = sustained_rate(times)
    assert (first, last) == (5.0, 15.0)
    assert rate == pytest.approx(100.0)


def test_sustained_rate_needs_two_answers():
    assert sustained_rate(np.array([1.0])) == (None, None, None)
    assert sustained_rate(np.array([2.0, 2.0]))[0] is None


def test_rate_series_counts_per_bin():
    ends, rates = rate_series(np.array([10.1, 10.2, 10.7, 11.9]), start=10.0, bin_s=0.5)
    assert ends.tolist() == [0.5, 1.0, 1.5, 2.0]
    assert rates.tolist() == [4.0, 2.0, 0.0, 2.0]


def test_consumer_lag_counts_uncommitted_partitions_from_their_start():
    assert consumer_lag({0: 100, 1: 50, 2: 7}, {0: 100, 1: 20, 2: -1001}) == 37
    assert consumer_lag({0: 100}, {0: None}, {0: 40}) == 60
    assert consumer_lag({0: 5}, {0: 9}) == 0  # never negative


def test_interpolate_is_linear_and_clamped():
    series = [(0.0, 1.0), (1.0, 3.0), (3.0, 3.0)]
    assert interpolate(series, 0.5) == 2.0
    assert interpolate(series, -5.0) == 1.0
    assert interpolate(series, 10.0) == 3.0
    assert interpolate([], 1.0) is None


def test_event_id_is_extracted_from_a_real_recommendation():
    rec = Recommendation("u-1", (ScoredItem("sku-1", 0.5),), "v000001", "syn-0-42", 1.0, 2.0)
    assert extract_event_id(encode_recommendation(rec)) == b"syn-0-42"
    assert extract_event_id(b'{"user_id": "u"}') is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_pacer_holds_a_steady_rate():
    clock = FakeClock()
    pacer = Pacer(1000.0, clock=clock, sleep=clock.sleep, slack=0.0)
    for n in range(5000):
        pacer.wait(n)
    assert clock.now == pytest.approx(100.0 + 4999 / 1000.0)


def test_pacer_sends_what_is_due_within_its_slack_at_once():
    clock = FakeClock()
    pacer = Pacer(5000.0, clock=clock, sleep=clock.sleep, slack=0.001)
    left_at = []
    for n in range(5000):
        pacer.wait(n)
        left_at.append(clock.now)
    # no event leaves late or more than the slack early, and one sleep covers ~5 events
    early = [pacer.due(n) - t for n, t in enumerate(left_at)]
    assert max(early) <= 0.001 + 1e-9
    assert min(early) >= -1e-9
    assert 800 <= len(clock.slept) <= 1100  # without slack: one per event


def test_a_late_pacer_catches_up_without_sleeping_or_drifting():
    clock = FakeClock()
    pacer = Pacer(100.0, clock=clock, sleep=clock.sleep)
    pacer.wait(0)
    clock.now += 0.5  # the producer stalled for 50 events' worth of time
    for n in range(1, 51):
        pacer.wait(n)
    assert clock.slept == []
    pacer.wait(60)
    assert clock.slept == [pytest.approx(0.1)]
    assert clock.now == pytest.approx(pacer.due(60))


def test_pacer_rejects_a_bad_rate():
    with pytest.raises(ValueError, match="rate"):
        Pacer(0.0)


def test_each_users_last_event_is_expected():
    workload = Workload(10, 3, 0, model_dir=None, item_vectors="trained", factory="Flat",  # type: ignore[arg-type]
                        keys=[b"a"] * 5, values=[b""] * 5, event_ids=[b"e0", b"e1", b"e2", b"e3", b"e4"],
                        user_codes=np.array([0, 1, 0, 2, 1]))
    assert workload.last_event_ids() == {b"e2", b"e3", b"e4"}
    assert workload.head(2).last_event_ids() == {b"e0", b"e1"}
