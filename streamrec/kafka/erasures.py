"""Read the compacted erasures topic: who asked to be forgotten, and when (docs/security.md)."""

from __future__ import annotations

import logging
import time

from streamrec.contract import ErasureRequest, InvalidEvent, decode_erasure
from streamrec.kafka.admin import watermarks
from streamrec.kafka.security import client_config

logger = logging.getLogger(__name__)


def read_erasures(bootstrap: str, topic: str, *, timeout: float = 30.0) -> dict[str, ErasureRequest]:
    """Every erasure request on ``topic``, read from the beginning to its end offsets now, by user
    id (the newest per user). A topic that does not exist holds none. A record that is not a valid
    request is logged (topic, partition, offset) and skipped. Raises :class:`TimeoutError` when the
    topic is not read to its end within ``timeout`` seconds."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer({**client_config(bootstrap), "group.id": "streamrec-erasures-reader",
                         "enable.auto.commit": False, "enable.partition.eof": True, "log_level": 0})
    deadline = time.monotonic() + timeout
    found: dict[str, ErasureRequest] = {}
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            return found
        ends = {}
        for partition in sorted(metadata.partitions):
            low, high = watermarks(consumer, topic, partition, deadline=deadline)
            if high > low:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        while ends:
            if time.monotonic() > deadline:
                raise TimeoutError(f"erasures topic {topic} not read to its end within {timeout:g} s")
            for message in consumer.consume(1000, timeout=0.5):
                partition, offset = message.partition(), message.offset()
                if message.error() is not None:
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        ends.pop(partition, None)
                    continue
                if partition in ends and offset >= ends[partition] - 1:
                    del ends[partition]
                key = message.key()
                if key is None:
                    continue
                user_id = key.decode("utf-8", errors="replace")
                if message.value() is None:
                    found.pop(user_id, None)
                    continue
                try:
                    request = decode_erasure(message.value())
                except InvalidEvent as exc:
                    request = None
                    logger.warning("%s[%d]@%d: not an erasure request: %s", topic, partition, offset, exc.detail)
                if request is not None and request.user_id == user_id:
                    found[user_id] = request
                elif request is not None:
                    logger.warning("%s[%d]@%d: key %r is not the request's user id", topic, partition, offset, key)
    finally:
        consumer.close()
    return found
