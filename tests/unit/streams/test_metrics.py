"""The metrics' own logic, without Kafka: bulk histograms, lag, the exposition, quantiles."""

from __future__ import annotations

import math

import numpy as np
from prometheus_client import generate_latest

from indexing.trainer import TrainerMetrics
from streams.dashboard import bucket_quantile, histogram_buckets, merge, parse_metrics
from streams.metrics import BulkHistogram, WorkerMetrics


def test_a_bulk_histogram_is_exposed_like_observing_one_value_at_a_time():
    from prometheus_client import CollectorRegistry, Histogram

    bounds = (0.01, 0.1, 1.0)
    values = np.array([0.005, 0.01, 0.05, 0.1, 0.5, 2.0, 7.0])
    bulk = BulkHistogram("x_seconds", "x", bounds)
    bulk.observe_many(values[:3])
    bulk.observe_many(values[3:])
    bulk.observe_many(np.array([]))
    registry = CollectorRegistry()
    registry.register(bulk)
    reference_registry = CollectorRegistry()
    reference = Histogram("x_seconds", "x", buckets=bounds, registry=reference_registry)
    for value in values:
        reference.observe(float(value))
    ours = parse_metrics(generate_latest(registry).decode())
    theirs = parse_metrics(generate_latest(reference_registry).decode())
    theirs.pop("x_seconds_created")
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert ours[name].keys() == theirs[name].keys()
        assert all(math.isclose(ours[name][k], theirs[name][k]) for k in theirs[name]), name


def test_worker_metrics_count_a_batch_and_follow_the_served_model_and_partitions():
    metrics = WorkerMetrics()
    metrics.record_batch(10, 4, 1, np.array([5, 2, 0, 1, 1]), np.array([0.02, 0.2, 0.3, 3.0]))
    metrics.set_model("v000001", created_at=1000.0, now=1060.0)
    metrics.set_model("v000002", created_at=1050.0, now=1060.0, search={"effort": 12, "recall_at_10": 0.9642})
    metrics.set_lag({0: 3, 1: 0})
    metrics.set_lag({1: 2})
    samples = parse_metrics(generate_latest(metrics.registry).decode())
    assert samples["streamrec_events_total"] == {(("type", "view"),): 5.0, (("type", "click"),): 2.0,
                                                 (("type", "add_to_cart"),): 0.0, (("type", "favorite"),): 1.0,
                                                 (("type", "purchase"),): 1.0}
    assert samples["streamrec_lists_total"] == {(): 4.0}
    assert samples["streamrec_duplicates_skipped_total"] == {(): 1.0}
    assert samples["streamrec_batch_size_events_sum"] == {(): 10.0}
    assert samples["streamrec_event_to_list_seconds_count"] == {(): 4.0}
    assert samples["streamrec_model_info"] == {(("version", "v000002"),): 1.0}
    assert samples["streamrec_model_age_seconds"] == {(): 10.0}
    assert samples["streamrec_index_recall_at_10"] == {(): 0.9642}
    assert samples["streamrec_index_search_effort"] == {(): 12.0}
    assert samples["streamrec_consumer_lag"] == {(("partition", "1"),): 2.0}
    p50 = bucket_quantile(0.5, histogram_buckets(samples, "streamrec_event_to_list_seconds"))
    assert 0.15 < p50 <= 0.25


def test_workers_add_up_and_the_trainer_has_its_own_registry():
    one, two = WorkerMetrics(), WorkerMetrics()
    one.lists.inc(3)
    two.lists.inc(4)
    merged = merge(parse_metrics(generate_latest(m.registry).decode()) for m in (one, two))
    assert merged["streamrec_lists_total"] == {(): 7.0}
    trainer = TrainerMetrics()
    trainer.cycles.labels("publish").inc()
    samples = parse_metrics(generate_latest(trainer.registry).decode())
    assert samples["streamrec_trainer_cycles_total"] == {(("decision", "publish"),): 1.0}
