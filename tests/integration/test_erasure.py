"""The right to be forgotten on the real broker, with either engine: after ``forget``, nothing
of the user is readable in any compacted topic (read from the beginning) or in the worker's
RocksDB table, ``serve`` answers as for an unknown user, and the user's later events start a
fresh profile. ``serve`` runs with a bearer token here, so its 401/403 are checked over real HTTP too."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from producers.erasure import forget
from producers.publisher import EventPublisher
from streamrec.config import KafkaSettings
from streamrec.contract import ErasureRequest, Event, decode_erasure
from streamrec.core.interest import InterestParams, fold_events
from streamrec.harness.worker import WorkerConfig
from streamrec.kafka.admin import ensure_worker_topics, topic_config
from streamrec.kafka.erasures import read_erasures
from streams.tables import changelog_topic, read_user_states, table_partitions

from .helpers import trained_shop, wait_for_recommendations
from .test_serve import Serve

pytestmark = pytest.mark.integration

#: Compacted topics of this test clean within a second or two (docs/security.md gives the
#: production values and the worst case they mean).
FAST_CLEANING = {"segment.ms": "100", "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "100",
                 "min.compaction.lag.ms": "0"}
TOKEN = "test-token-" + "x" * 24
TARGET = "u-forget-me"


def get(port: int, path: str, token: str | None = TOKEN) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def read_all(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """Every record of ``topic`` from the beginning to its end now (tombstones included)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"audit-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        open_partitions, records = set(partitions), []
        deadline = time.monotonic() + 30
        while open_partitions and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=0.5):
                if message.error() is not None:
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        open_partitions.discard(message.partition())
                    continue
                records.append((message.key(), message.value()))
        assert not open_partitions, f"{topic} not read to its end"
        return records
    finally:
        consumer.close()


def mentions(records: list[tuple[bytes | None, bytes | None]], user_id: str) -> int:
    needle = user_id.encode()
    return sum(needle in (key or b"") or needle in (value or b"") for key, value in records)


def events_of(user_id: str, items: list[str], start_ts: float, prefix: str) -> list[Event]:
    kinds = ["view", "click", "add_to_cart", "view", "purchase"]
    return [Event(f"{prefix}-{n}", user_id, item, kinds[n % len(kinds)], start_ts + n) for n, item in enumerate(items)]


@pytest.mark.parametrize("engine", ["batch", "faust"])
def test_forget_leaves_nothing_readable_and_later_events_start_afresh(bootstrap, topics, start_worker, tmp_path, engine):
    shop = trained_shop(tmp_path / "models", items=300, users=60, history=6_000, live=1_000, seed=17)
    model = shop.model
    run = topics.app_id.rsplit("-", 1)[-1]
    kafka = KafkaSettings(bootstrap=bootstrap, events_topic=topics.events, recommendations_topic=topics.recommendations,
                          dlq_topic=topics.dlq, items_topic=f"items-{run}", erasures_topic=f"erasures-{run}",
                          partitions=2, compacted_configs=FAST_CLEANING)
    changelog = changelog_topic(topics.app_id)
    ensure_worker_topics(kafka, changelog=changelog)
    compacted = [kafka.items_topic, kafka.erasures_topic, changelog]
    for topic in compacted:
        assert topic_config(bootstrap, topic)["segment.ms"] == "100"
    # The broker's cleaner looks for work every 15 s by default; every 0.2 s here.
    admin = AdminClient({"bootstrap.servers": bootstrap})
    broker_id = str(next(iter(admin.list_topics(timeout=10).brokers)))
    cluster = ConfigResource(ConfigResource.Type.BROKER, broker_id, incremental_configs=[
        ConfigEntry("log.cleaner.backoff.ms", "200", incremental_operation=AlterConfigOpType.SET)])
    for future in admin.incremental_alter_configs([cluster]).values():
        future.result(timeout=30)

    extra = {"STREAMREC_KAFKA__ITEMS_TOPIC": kafka.items_topic, "STREAMREC_KAFKA__ERASURES_TOPIC": kafka.erasures_topic,
             "STREAMREC_INDEX__USE_GPU": "false", "STREAMREC_SERVE__TOKEN": TOKEN}
    worker = start_worker(shop.models_dir, partitions=2, engine=engine, extra_env=extra)
    env = WorkerConfig(bootstrap=bootstrap, models_dir=shop.models_dir, data_dir=tmp_path / "unused", app_id=topics.app_id,
                       events_topic=topics.events, recommendations_topic=topics.recommendations, dlq_topic=topics.dlq,
                       partitions=2, extra_env=extra).env()
    serve = Serve(env, tmp_path, "serve")
    try:
        # The token: /healthz open; everything else 401 without it or malformed, 403 when wrong.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if get(serve.port, "/readyz")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.3)
        assert get(serve.port, "/healthz", token=None)[0] == 200
        status, body = get(serve.port, "/v1/users/u-1/recommendations", token=None)
        assert status == 401 and body["error"] == "unauthorized"
        assert get(serve.port, "/metrics", token=None)[0] == 401
        status, body = get(serve.port, "/v1/users/u-1/recommendations", token="not-the-token")
        assert status == 403 and body["error"] == "forbidden" and TOKEN not in json.dumps(body)

        # The user and others shop; the user's state and list exist.
        known = list(model.item_ids)
        before = events_of(TARGET, known[:8], 1_700_100_000.0, "before")
        others = shop.live[:300]
        with EventPublisher(bootstrap, topics.events) as publisher:
            for event in [*others[:150], *before, *others[150:]]:
                publisher.publish(event)
        wait_for_recommendations(bootstrap, topics.recommendations, [*others, *before], timeout=120)
        deadline = time.monotonic() + 30
        while get(serve.port, f"/v1/users/{TARGET}/recommendations")[1].get("state_event_id") != before[-1].event_id:
            assert time.monotonic() < deadline, "serve never saw the user's state"
            time.sleep(0.3)

        # Forget: the worker deletes the state and writes the changelog tombstone.
        asked = time.monotonic()
        if engine == "batch":  # the Python API here, the command with the other engine
            request = forget(TARGET, bootstrap=bootstrap, events_topic=topics.events, erasures_topic=kafka.erasures_topic)
        else:
            done = subprocess.run([sys.executable, "-m", "streamrec.cli", "forget", TARGET, "--json"], env=env,
                                  capture_output=True, text=True, timeout=60, check=True)
            sent = json.loads(done.stdout)
            assert sent["topics"] == [kafka.erasures_topic, topics.events]
            request = ErasureRequest(sent["erase_user_id"], sent["requested_at"])
        deadline = time.monotonic() + 60
        while (TARGET.encode(), None) not in read_all(bootstrap, changelog):
            assert time.monotonic() < deadline, f"no changelog tombstone:\n{worker.log_tail()}"
            time.sleep(0.5)

        # serve answers exactly as for a user it never saw.
        deadline = time.monotonic() + 30
        stranger = get(serve.port, "/v1/users/never-seen/recommendations")[1]
        while True:
            status, answer = get(serve.port, f"/v1/users/{TARGET}/recommendations")
            if answer["state_event_id"] is None or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert status == 200 and answer["state_event_id"] is None
        assert answer["items"] == stranger["items"]

        # The RocksDB table (read while the worker runs) has no row of the user.
        assert TARGET not in read_user_states(worker.config.data_dir)
        assert table_partitions(worker.config.data_dir)

        # Compaction is asynchronous: other users' events keep every changelog partition
        # rolling and cleaning until no record of the user (state or tombstone) is left.
        fillers = [Event(f"fill-{n}", f"filler-{n % 16}", known[n % len(known)], "view", 1_700_200_000.0 + n)
                   for n in range(2000)]
        deadline, n = time.monotonic() + 120, 0
        with EventPublisher(bootstrap, topics.events) as publisher:
            while mentions(read_all(bootstrap, changelog), TARGET):
                assert time.monotonic() < deadline, "the changelog still holds the user after 120 s"
                for event in fillers[n:n + 16]:
                    publisher.publish(event)
                publisher.flush()
                n = (n + 16) % len(fillers)
                time.sleep(0.3)
        gone_after = time.monotonic() - asked
        print(f"\n[{engine}] nothing of the user left in the changelog {gone_after:.1f} s after forget")

        # Every compacted topic of this deployment, read from the beginning: nothing of the user,
        # except the erasure request itself (the user id and the time of the request, nothing else).
        for topic in compacted:
            records = read_all(bootstrap, topic)
            if topic == kafka.erasures_topic:
                assert [(k, decode_erasure(v)) for k, v in records] == [(TARGET.encode(), request)]
            else:
                assert mentions(records, TARGET) == 0, topic
        assert read_erasures(bootstrap, kafka.erasures_topic) == {TARGET: request}

        # The user comes back: a fresh profile, built from the new events alone.
        after = events_of(TARGET, known[20:23], 1_700_300_000.0, "after")
        with EventPublisher(bootstrap, topics.events) as publisher:
            for event in after:
                publisher.publish(event)
        wait_for_recommendations(bootstrap, topics.recommendations, after, timeout=60)
    finally:
        serve.stop()
    assert worker.stop() == 0
    state = read_user_states(worker.config.data_dir)[TARGET]
    expected, last_ts = fold_events([(model.row_of[e.item_id], e.type, e.ts) for e in after], model.context, InterestParams())
    assert state.n_events == len(after) and [r.event_id for r in state.recent] == [e.event_id for e in after]
    np.testing.assert_allclose(state.vector, expected, rtol=1e-5, atol=1e-5)
    assert state.last_ts == last_ts and state.purchased == ()
