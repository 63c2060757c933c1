"""A real worker's ``/metrics``, scraped over HTTP and parsed as Prometheus parses it, agrees
with what the test sent and what is on the topics (both engines)."""

from __future__ import annotations

import time
import urllib.request
from collections import Counter

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from producers.publisher import EventPublisher
from streamrec.contract import decode_dead_letter
from streamrec.harness.topics import read_topic
from streamrec.kafka.admin import ensure_topics
from tests.integration.conftest import free_port
from tests.integration.helpers import trained_shop, wait_for_recommendations

pytestmark = pytest.mark.integration


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of ``url`` by sample name, then by its sorted labels."""
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def by_label(samples: dict, name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: value for labels, value in samples.get(name, {}).items()}


def total(samples: dict, name: str) -> float:
    return sum(samples.get(name, {}).values())


def messages_on(bootstrap: str, topic: str, partitions: int) -> int:
    """How many messages ``topic`` holds (no transactions: every offset is a message)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "metrics-test-count"})
    try:
        return sum(high - low for low, high in (consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                                                for p in range(partitions)))
    finally:
        consumer.close()


@pytest.mark.parametrize("engine", ["batch", "faust"])
def test_metrics_count_what_was_sent(bootstrap, topics, start_worker, tmp_path, engine):
    shop = trained_shop(tmp_path / "models", items=500, users=120, history=6_000, live=1_200, seed=23)
    good = shop.live
    port = free_port()
    ensure_topics(bootstrap, {topics.events: 2})
    start_worker(shop.models_dir, partitions=2, engine=engine, extra_env={"STREAMREC_WORKER__METRICS_PORT": str(port)})
    url = f"http://127.0.0.1:{port}/metrics"

    bad = [
        (b"u-1", b'{"event_id": "cut", "user_id": '),  # malformed_json
        (b"u-2", b"not json at all"),  # malformed_json
        (good[0].user_id.encode(), orjson.dumps({**good[0].to_dict(), "event_id": "tp", "type": "teleport"})),  # unknown_type
        (b"someone-else", orjson.dumps({**good[1].to_dict(), "event_id": "km"})),  # key_mismatch
    ]
    sent_reasons = Counter({"malformed_json": 2, "unknown_type": 1, "key_mismatch": 1})
    with EventPublisher(bootstrap, topics.events) as publisher:
        for n, event in enumerate(good):
            publisher.publish(event)
            if n % 300 == 0 and bad:
                publisher.publish_raw(*bad.pop())
        for key, value in bad:
            publisher.publish_raw(key, value)

    wait_for_recommendations(bootstrap, topics.recommendations, good, timeout=120)
    letters = read_topic(bootstrap, topics.dlq, done=lambda m: len(m) >= 4, timeout=60)
    assert Counter(decode_dead_letter(v)["reason"] for _, v in letters) == sent_reasons

    deadline = time.monotonic() + 60
    while True:
        samples = scrape(url)
        lists = total(samples, "streamrec_lists_total")
        lag = by_label(samples, "streamrec_consumer_lag", "partition")
        settled = (total(samples, "streamrec_events_total") == len(good)
                   and lists == messages_on(bootstrap, topics.recommendations, 2)
                   and set(lag) == {"0", "1"} and not any(lag.values()))
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    events = by_label(samples, "streamrec_events_total", "type")
    assert events == {t: float(n) for t, n in Counter(e.type for e in good).items()} | {
        t: 0.0 for t in set(events) - {e.type for e in good}}
    assert by_label(samples, "streamrec_dead_letters_total", "reason") == {r: float(n) for r, n in sent_reasons.items()}
    assert lists == messages_on(bootstrap, topics.recommendations, 2) >= len({e.user_id for e in good})
    assert lag == {"0": 0.0, "1": 0.0}
    assert total(samples, "streamrec_duplicates_skipped_total") == 0
    # One latency per list, each from its event's produce time: all under the test's own span.
    assert total(samples, "streamrec_event_to_list_seconds_count") == lists
    assert 0 < total(samples, "streamrec_event_to_list_seconds_sum") < lists * 120
    assert total(samples, "streamrec_batch_size_events_sum") == len(good) + sum(sent_reasons.values())
    assert total(samples, "streamrec_search_seconds_count") == total(samples, "streamrec_batches_total") > 0
    assert by_label(samples, "streamrec_model_info", "version") == {shop.model.version: 1.0}
    assert 0 <= total(samples, "streamrec_model_age_seconds") < 3600
    tables = by_label(samples, "streamrec_table_bytes", "table")
    assert tables.get("user-states", 0) > 0 and "catalog" in tables
    assert "streamrec_catalog_items" in samples and "streamrec_catalog_unavailable_items" in samples
