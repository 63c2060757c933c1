"""Reading a topic from the beginning until a condition holds (demo, tests, evaluation)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError


def read_topic(
    bootstrap: str,
    topic: str,
    *,
    done: Callable[[list[tuple[bytes | None, bytes]]], bool],
    timeout: float = 120.0,
) -> list[tuple[bytes | None, bytes]]:
    """Read ``topic`` from the beginning until ``done(messages)`` or ``timeout`` seconds."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages: list[tuple[bytes | None, bytes]] = []
    deadline = time.monotonic() + timeout
    try:
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
