"""Reading a topic from the beginning until a condition holds, and waiting until every user
was answered (demo, tests, benchmarks, evaluation)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection, Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from streamrec.config import KafkaSettings
from streamrec.kafka.security import client_config


def _partitions(consumer: Consumer, topic: str, deadline: float) -> list[int]:
    """The topic's partitions, waiting for the topic to exist."""
    while True:
        metadata = consumer.list_topics(topic, timeout=5).topics.get(topic)
        if metadata is not None and metadata.error is None and metadata.partitions:
            return sorted(metadata.partitions)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"topic {topic} does not exist")
        time.sleep(0.2)


def read_topic(
    bootstrap: str,
    topic: str,
    *,
    done: Callable[[list[tuple[bytes | None, bytes]]], bool],
    timeout: float = 120.0,
    kafka: KafkaSettings | None = None,
) -> list[tuple[bytes | None, bytes]]:
    """Read ``topic`` from the beginning until ``done(messages)`` or ``timeout`` seconds.

    Partitions are assigned directly (no consumer group to join): quicker, and it avoids a
    librdkafka crash seen when a group consumer subscribes right after a broker starts.
    Messages of one partition keep their order. ``kafka`` gives the credentials (default: this
    process's settings).
    """
    consumer = Consumer(
        {
            **client_config(bootstrap, kafka),
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    messages: list[tuple[bytes | None, bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        partitions = _partitions(consumer, topic, deadline)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        while time.monotonic() < deadline:
            batch = consumer.consume(1000, timeout=0.5)
            for message in batch:
                if message.error():
                    if message.error().code() not in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                        raise RuntimeError(str(message.error()))
                    continue
                messages.append((message.key(), message.value()))
            if done(messages):
                return messages
    finally:
        consumer.close()
    raise TimeoutError(f"{topic}: condition not met after {timeout:.0f} s ({len(messages)} messages read)")


def last_event_per_user(events: Iterable) -> dict[str, str]:  # Iterable[streamrec.contract.Event]
    """Each user's last event id: the event whose list answers the user (a user's events in one
    micro-batch are answered by one list, triggered by the last of them)."""
    return {e.user_id: e.event_id for e in events}


def wait_for_answers(bootstrap: str, topic: str, event_ids: Collection[str], *, timeout: float = 300.0,
                     kafka: KafkaSettings | None = None) -> list:
    """Read the recommendations ``topic`` from the beginning until a list triggered by each of
    ``event_ids`` has arrived; every list read, with the wall time it was read:
    ``[(Recommendation, read_at), ...]``. Raises TimeoutError naming how many are missing."""
    from streamrec.contract import decode_recommendation

    wanted = set(event_ids)
    seen: set[str] = set()
    read: list = []

    def done(messages: list[tuple[bytes | None, bytes]]) -> bool:
        for _, value in messages[len(read):]:
            rec = decode_recommendation(value)
            read.append((rec, time.time()))
            seen.add(rec.event_id)
        return wanted <= seen

    try:
        read_topic(bootstrap, topic, done=done, timeout=timeout, kafka=kafka)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; {len(wanted - seen)} of {len(wanted)} triggering events not answered") from None
    return read
