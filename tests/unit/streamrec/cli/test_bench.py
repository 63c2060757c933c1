"""The ``bench`` command's option checks and report formatting (no broker, no workload)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from streamrec.benchmarks.report import markdown_index, markdown_sides, ratio, rolling_percentile
from streamrec.benchmarks.runner import SideResult
from streamrec.cli.bench import bench


def test_a_bad_factory_is_refused_with_a_sentence():
    result = CliRunner().invoke(bench, ["--factory", "NotAnIndex", "--events", "100"])
    assert result.exit_code == 2
    assert "is not a FAISS factory string" in result.output


def test_bad_index_sizes_are_refused_with_a_sentence():
    result = CliRunner().invoke(bench, ["--index-only", "--index-sizes", "12k"])
    assert result.exit_code == 2
    assert "comma-separated whole numbers" in result.output


def side(name: str, rate: float | None) -> SideResult:
    return SideResult(side=name, mode="flat_out", events=10, answered=10, recommendations=9, events_per_s=rate,
                      latency_ms={"p50": 1.0, "p95": 2.0, "p99": 3.0, "mean": 1.5, "max": 4.0, "count": 10},
                      cpu_s=1.0, cpu_s_total=2.0, rss_mb=100.0, ready_s=1.0, window_s=1.0, produce_rate=None,
                      broker_cpu_s=None, bench_cpu_s=None, lag=[(0.0, 10), (1.0, 0)])


def test_ratio_and_markdown_table():
    worker, naive = side("worker", 5000.0), side("naive", 400.0)
    assert ratio(worker, naive) == 12.5
    assert ratio(worker, side("naive", None)) is None
    result = {"worker": worker.summary(), "naive": naive.summary(), "ratio": 12.5}
    table = markdown_sides(result)
    assert "| events/s (sustained) | 5,000.0 | 400.0 |" in table
    assert "12.5×" in table
    assert result["worker"]["max_lag"] == 10 and result["worker"]["cpu_us_per_event"] == 1e5


def test_index_rows_render():
    row = {"n_items": 12000, "vectors": "trained", "factory": "Flat", "effort": None, "auto": True, "build_s": 0.01,
           "bytes_per_item": 512.0, "recall_at_10": 1.0, "qps": {"1": 10.0, "64": 20.0, "1024": 30.0}}
    assert "| 12,000 | trained | Flat (auto) | – | – | 0.0 | 512 | 1.000 | 10 | 20 | 30 |" in markdown_index([row])
    ivf = {**row, "factory": "IVF256,Flat", "auto": False, "effort": 12, "target_recall": 0.95, "recall_at_10": 0.964}
    assert "| IVF256,Flat | 0.95 | 12 | 0.0 | 512 | 0.964 |" in markdown_index([ivf])


@pytest.mark.parametrize(("flag", "value", "words"), [
    ("--index-targets", "0.95,high", "expected recalls like 0.95,0.99"),
    ("--index-targets", "1.5", "in (0, 1]"),
    ("--index-datasets", "movielens", "unknown dataset 'movielens'"),
])
def test_bad_index_options_are_refused_with_a_sentence(flag, value, words):
    result = CliRunner().invoke(bench, ["--index-only", flag, value])
    assert result.exit_code == 2 and words in result.output


def test_rolling_percentile_per_window():
    series = np.array([[0.0, 1.0], [0.1, 3.0], [0.6, 10.0], [0.7, np.nan]])
    centers, values = rolling_percentile(series, 0.5, 50)
    assert centers.tolist() == [0.25, 0.75]
    assert values.tolist() == [2.0, 10.0]


# --------------------------------------------------------------------------- the agreement gate

from streamrec.cli.bench import agreement, agreement_failure, same_up_to_ties  # noqa: E402
from streamrec.contract import Recommendation, ScoredItem, encode_recommendation  # noqa: E402


def rec(event_id: str, *items: tuple[str, float]) -> bytes:
    return encode_recommendation(Recommendation("u-1", tuple(ScoredItem(i, s) for i, s in items), "v000001",
                                                event_id, 1_700_000_000.0, 1_700_000_001.0))


def test_lists_that_differ_only_inside_a_tie_are_the_same():
    a = [("a", 0.9), ("b", 0.5), ("c", 0.5), ("d", 0.1)]
    assert same_up_to_ties(a, [("a", 0.9), ("c", 0.5), ("b", 0.5), ("d", 0.1)])
    assert same_up_to_ties(a, [("a", 0.9), ("c", 0.5 + 1e-7), ("b", 0.5), ("d", 0.1)])  # float noise
    # The last run may go on past the cut: another member of the tie may have been kept.
    assert same_up_to_ties([("a", 0.9), ("b", 0.5)], [("a", 0.9), ("z", 0.5)])


def test_lists_that_really_differ_are_not_the_same():
    a = [("a", 0.9), ("b", 0.5), ("c", 0.5), ("d", 0.1)]
    assert not same_up_to_ties(a, [("a", 0.9), ("b", 0.5), ("x", 0.5), ("d", 0.1)])  # a tie before the end
    assert not same_up_to_ties(a, [("b", 0.9), ("a", 0.5), ("c", 0.5), ("d", 0.1)])  # swapped, not tied
    assert not same_up_to_ties(a, a[:3])  # shorter
    assert not same_up_to_ties(a, [("a", 0.9), ("b", 0.5), ("c", 0.5), ("d", 0.2)])  # another score


def test_the_gate_passes_identical_and_tied_lists_and_fails_on_one_real_difference():
    worker = {b"e1": rec("e1", ("a", 0.9), ("b", 0.5)), b"e2": rec("e2", ("a", 0.9), ("b", 0.5), ("c", 0.5)),
              b"e3": rec("e3", ("a", 0.9))}
    naive = {b"e1": rec("e1", ("a", 0.9), ("b", 0.5)), b"e2": rec("e2", ("a", 0.9), ("c", 0.5), ("b", 0.5)),
             b"e4": rec("e4", ("a", 0.9))}
    found = agreement(worker, naive)
    assert found is not None
    assert (found["compared"], found["identical"], found["identical_up_to_ties"], found["differing"]) == (2, 1, 1, 0)
    assert agreement_failure({"naive": {}, "agreement": found}) is None

    naive[b"e1"] = rec("e1", ("b", 0.9), ("a", 0.5))
    found = agreement(worker, naive)
    assert found["differing"] == 1 and found["differing_examples"] == ["e1"]
    failure = agreement_failure({"naive": {}, "agreement": found})
    assert failure is not None and "different lists" in failure and "1 of 2" in failure and "e1" in failure


def test_the_gate_fails_when_nothing_could_be_compared_and_is_silent_without_a_naive_side():
    assert agreement({b"e1": rec("e1", ("a", 0.9))}, {b"e2": rec("e2", ("a", 0.9))}) is None
    assert "no trigger event in common" in agreement_failure({"naive": {}, "agreement": None})
    assert agreement_failure({"naive": None, "agreement": None}) is None


def test_memory_per_user_is_extrapolated_from_the_measured_table():
    from streamrec.cli.bench import per_user_memory

    side = {"rss_mb": 600.0, "table": {"users": 1_000_000, "state_bytes_per_user": 600.0, "disk_bytes_per_user": 610.0}}
    found = per_user_memory(side)
    assert found["rocksdb_gb_at_extrapolated"] == 6.1 and found["changelog_gb_at_extrapolated"] == 6.0
    assert found["extrapolated_users"] == 10_000_000 and found["rss_mb"] == 600.0
    assert per_user_memory({"table": {"users": 0}}) is None and per_user_memory({}) is None


def test_a_negative_steady_rate_is_refused_with_a_sentence():
    from click.testing import CliRunner

    from streamrec.cli.bench import bench

    result = CliRunner().invoke(bench, ["--steady-rate", "-5"])
    assert result.exit_code == 2 and "--steady-rate" in result.output
