"""Read a topic from its beginning to the end it has now: the one loop behind the readers of
small topics (the erasures, the attribution, the models topic, the report's events)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from streamrec.kafka.admin import watermarks
from streamrec.kafka.security import client_config


class NoSuchTopic(LookupError):
    """The topic does not exist on the broker (or has no partitions)."""


def read_to_end(bootstrap: str, topic: str, *, timeout: float = 30.0, group: str = "streamrec-reader",
                config: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """Each record of ``topic``, from the beginning of every partition up to the end offsets the
    partitions had when reading started, as confluent-kafka messages (in offset order within a
    partition). The consumer is assigned the partitions, never joins ``group`` (a unique suffix
    is added) and commits nothing; ``config`` adds consumer settings (e.g.
    ``fetch.message.max.bytes``).

    Raises :class:`NoSuchTopic` when the topic does not exist, :class:`TimeoutError` when
    ``timeout`` seconds pass without a record, and ``KafkaException`` when the broker cannot be
    reached or reports an error on a partition.
    """
    from confluent_kafka import (
        OFFSET_BEGINNING,
        Consumer,
        KafkaError,
        KafkaException,
        TopicPartition,
    )

    consumer = Consumer({**client_config(bootstrap), "group.id": f"{group}-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "enable.partition.eof": True, "log_level": 0,
                         **(config or {})})
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise NoSuchTopic(f"topic {topic!r} does not exist on Kafka at {bootstrap}")
        deadline = time.monotonic() + timeout
        ends: dict[int, int] = {}
        for partition in sorted(metadata.partitions):
            low, high = watermarks(consumer, topic, partition, deadline=deadline)
            if high > low:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        while ends:
            batch = consumer.consume(5_000, timeout=0.2)
            if batch:
                deadline = time.monotonic() + timeout
            elif time.monotonic() > deadline:
                raise TimeoutError(f"no progress reading {topic!r} to its end for {timeout:g} s")
            for message in batch:
                partition = message.partition()
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(error)
                    ends.pop(partition, None)  # its end: records past the start offsets were compacted away
                    continue
                if partition not in ends:
                    continue  # written after reading started
                if message.offset() >= ends[partition] - 1:
                    del ends[partition]
                yield message
    finally:
        consumer.close()
