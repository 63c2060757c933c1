"""``streamrec attribute``: the attribution job, its own service on the worker's Kafka.

It reads the recommendations and events topics, credits actions to lists
(:class:`streamrec.core.attribution.Attributor`) and publishes the hourly aggregates and the
experiment variants' totals to the compacted attribution topic (``kafka.attribution_topic``),
each record keyed by its bucket so that the newest value of a key is the current one.

Order: each round reads a batch of events, then the recommendations topic up to the end it has
*now*, and applies the lists before the events. A list an event names (or a window action's
list) was published before the shop could show it, so it is in the recommendations topic before
the event is in the events topic: reading the lists to their end after the events makes sure the
job knows it.

State: the per-user lists and the per-user sets of the experiment totals are held in memory and
rebuilt on start by reading both topics from the beginning (no consumer group, no commits): the
aggregates are then exactly what the retained topics say, and a restart republishes the same
values. The trade-off, in docs/business.md: memory grows with the users of the retained lists
(``attribution.lists_per_user`` lists each) and a restart re-reads the retention.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Producer,
    TopicPartition,
)

from streamrec.config import Settings
from streamrec.contract import (
    InvalidEvent,
    decode_erasure,
    decode_event,
    decode_recommendation,
)
from streamrec.core.attribution import Attributor, arm_record, bucket_record
from streamrec.kafka.admin import ensure_topics, watermarks
from streamrec.kafka.reading import read_to_end
from streamrec.kafka.security import client_config

logger = logging.getLogger(__name__)

#: Most events read per round.
ROUND_EVENTS = 5_000


@dataclass
class JobStats:
    events: int = 0
    lists: int = 0
    attributed: int = 0
    published: int = 0
    #: Messages that could not be decoded, by topic (the worker dead-letters bad events; the job skips them).
    skipped: dict[str, int] = field(default_factory=dict)


def _erasure(value: bytes | None):  # noqa: ANN202 - ErasureRequest | None
    """The erasure request ``value`` holds (``streamrec forget`` puts it on the events topic, in
    order with the user's events), or None."""
    try:
        return decode_erasure(value)
    except InvalidEvent:
        return None


def _reader(bootstrap: str, topic: str) -> tuple[Consumer, list[int]]:
    consumer = Consumer({**client_config(bootstrap), "group.id": f"attribution-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "enable.partition.eof": False, "log_level": 4})
    deadline = time.monotonic() + 30.0
    while True:
        meta = consumer.list_topics(topic, timeout=5).topics.get(topic)
        if meta is not None and meta.error is None and meta.partitions:
            break
        if time.monotonic() > deadline:
            consumer.close()
            raise RuntimeError(f"topic {topic!r} does not exist on {bootstrap}")
        time.sleep(0.2)
    partitions = sorted(meta.partitions)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    return consumer, partitions


def _ends(consumer: Consumer, topic: str, partitions: list[int]) -> dict[int, tuple[int, int]]:
    """``(low, high)`` watermarks per partition, now."""
    deadline = time.monotonic() + 30.0
    return {p: watermarks(consumer, topic, p, deadline=deadline) for p in partitions}


def _reached(consumer: Consumer, topic: str, ends: dict[int, tuple[int, int]]) -> bool:
    """Has ``consumer`` read every partition of ``topic`` up to ``ends``?"""
    waiting = [p for p, (low, high) in ends.items() if high > low]
    if not waiting:
        return True
    positions = consumer.position([TopicPartition(topic, p) for p in waiting])
    return all(tp.offset >= ends[tp.partition][1] for tp in positions)


class AttributionJob:
    """Reads lists and events, attributes, publishes the changed aggregates."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        kafka = settings.kafka
        self.bootstrap = kafka.bootstrap
        self.events_topic, self.recommendations_topic = kafka.events_topic, kafka.recommendations_topic
        self.attribution_topic = kafka.attribution_topic
        rules = settings.attribution
        self.attributor = Attributor(window_s=rules.window_s, lists_per_user=rules.lists_per_user)
        self.stats = JobStats()

    def _skip(self, topic: str, message: Any, reason: str) -> None:
        self.stats.skipped[topic] = self.stats.skipped.get(topic, 0) + 1
        logger.warning("attribution skips %s[%d]@%d: %s", topic, message.partition(), message.offset(), reason)

    def _read_lists_to_end(self, consumer: Consumer, partitions: list[int]) -> None:
        ends = _ends(consumer, self.recommendations_topic, partitions)
        deadline = time.monotonic() + 60.0
        while not _reached(consumer, self.recommendations_topic, ends):
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not read {self.recommendations_topic} to its end within 60 s")
            for message in consumer.consume(5_000, timeout=0.2):
                if message.error():
                    if message.error().code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"{self.recommendations_topic}: {message.error()}")
                    continue
                try:
                    rec = decode_recommendation(message.value())
                except (ValueError, KeyError, TypeError) as exc:
                    self._skip(self.recommendations_topic, message, f"not a recommendation: {exc!r}")
                    continue
                if self.attributor.add_list(rec):
                    self.stats.lists += 1

    def _apply_events(self, messages: list[Any]) -> None:
        for message in messages:
            if message.error():
                if message.error().code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"{self.events_topic}: {message.error()}")
                continue
            try:
                event = decode_event(message.value())
            except InvalidEvent as exc:
                erasure = _erasure(message.value())
                if erasure is not None:
                    self.attributor.forget(erasure.user_id)
                    continue
                self._skip(self.events_topic, message, exc.reason)
                continue
            self.stats.events += 1
            if self.attributor.add_event(event) is not None:
                self.stats.attributed += 1

    def publish(self, producer: Producer) -> int:
        """Send every bucket and arm that changed; how many records."""
        buckets, arms = self.attributor.drain_changes()
        records = [bucket_record(k, c) for k, c in buckets] + [arm_record(k, a) for k, a in arms]
        for key, value in records:
            producer.produce(self.attribution_topic, orjson.dumps(value), key.encode())
            producer.poll(0)
        producer.flush(30)
        self.stats.published += len(records)
        return len(records)

    def run(self, *, once: bool = False, stop: threading.Event | None = None) -> JobStats:
        """Attribute until ``stop`` is set, or (``once``) until the events topic's end as it was
        at the start has been read; then publish what changed and return the statistics."""
        partitions = self.settings.kafka.partitions
        ensure_topics(self.bootstrap, {self.events_topic: partitions, self.recommendations_topic: partitions})
        ensure_topics(self.bootstrap, {self.attribution_topic: 1},
                      configs={self.attribution_topic: {"cleanup.policy": "compact"}})
        producer = Producer({**client_config(self.bootstrap), "acks": "all", "linger.ms": 20, "log_level": 4})
        events, event_partitions = _reader(self.bootstrap, self.events_topic)
        lists, list_partitions = _reader(self.bootstrap, self.recommendations_topic)
        stop = stop or threading.Event()
        every = self.settings.attribution.publish_every_s
        next_publish = time.monotonic() + every
        try:
            event_ends = _ends(events, self.events_topic, event_partitions) if once else {}
            while not stop.is_set():
                if once and _reached(events, self.events_topic, event_ends):
                    self._read_lists_to_end(lists, list_partitions)
                    break
                batch = events.consume(ROUND_EVENTS, timeout=0.5)
                self._read_lists_to_end(lists, list_partitions)
                self._apply_events(batch)
                if time.monotonic() >= next_publish:
                    self.publish(producer)
                    next_publish = time.monotonic() + every
            self.publish(producer)
        finally:
            events.close()
            lists.close()
        return self.stats


def read_attribution(bootstrap: str, topic: str, *, timeout: float = 30.0) -> dict[str, dict[str, Any]]:
    """The current value of every key of the attribution topic, read to its end
    (:func:`streamrec.kafka.reading.read_to_end`, whose errors it raises)."""
    latest: dict[str, dict[str, Any]] = {}
    for message in read_to_end(bootstrap, topic, timeout=timeout, group="streamrec-attribution-reader"):
        if message.value() is not None:
            latest[message.key().decode()] = orjson.loads(message.value())
    return latest
