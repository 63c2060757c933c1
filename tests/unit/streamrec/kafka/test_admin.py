"""Topic administration over a fake admin client (no Kafka)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from streamrec.kafka.admin import ensure_topics


@dataclass
class FakeTopicMeta:
    partitions: dict[int, object]
    error: object = None


class FakeFuture:
    def __init__(self, error: KafkaError | None = None) -> None:
        self.error = error

    def result(self, timeout: float | None = None) -> None:
        if self.error is not None:
            raise KafkaException(self.error)


class FakeAdmin:
    def __init__(self, topics: dict[str, int], *, unreachable: bool = False, create_error: KafkaError | None = None) -> None:
        self.topics = dict(topics)
        self.unreachable = unreachable
        self.create_error = create_error
        self.created: list[tuple[str, int, int]] = []
        self.config: dict[str, Any] = {}

    def __call__(self, config: dict[str, Any]) -> FakeAdmin:
        self.config = config
        return self

    def list_topics(self, timeout: float | None = None) -> Any:
        if self.unreachable:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        topics = {name: FakeTopicMeta({p: None for p in range(n)}) for name, n in self.topics.items()}
        return type("Metadata", (), {"topics": topics})()

    def create_topics(self, new_topics: list[Any], **kwargs: Any) -> dict[str, FakeFuture]:
        futures = {}
        for topic in new_topics:
            self.created.append((topic.topic, topic.num_partitions, topic.replication_factor))
            if self.create_error is None:
                self.topics[topic.topic] = topic.num_partitions
            futures[topic.topic] = FakeFuture(self.create_error)
        return futures


def test_ensure_topics_creates_only_what_is_missing(caplog: pytest.LogCaptureFixture) -> None:
    admin = FakeAdmin({"events": 2})
    with caplog.at_level(logging.WARNING, logger="streamrec.kafka.admin"):
        created = ensure_topics("b:9092", {"events": 4, "recommendations": 4}, admin_factory=admin)
    assert created == ["recommendations"]
    assert admin.created == [("recommendations", 4, 1)]
    assert admin.config["bootstrap.servers"] == "b:9092"
    assert "exists with 2 partition(s), fewer than the 4 asked" in caplog.text
    assert ensure_topics("b:9092", {"events": 2, "recommendations": 4}, admin_factory=admin) == []


def test_ensure_topics_tolerates_a_concurrent_creation() -> None:
    admin = FakeAdmin({}, create_error=KafkaError(KafkaError.TOPIC_ALREADY_EXISTS))
    original = admin.list_topics
    calls = []

    def list_topics(timeout: float | None = None) -> Any:
        calls.append(timeout)
        if len(calls) > 1:
            admin.topics["events"] = 4  # someone else made it
        return original(timeout)

    admin.list_topics = list_topics  # type: ignore[method-assign]
    assert ensure_topics("b:9092", {"events": 4}, admin_factory=admin) == []


def test_ensure_topics_errors_are_readable() -> None:
    with pytest.raises(RuntimeError, match="could not reach Kafka at b:9092 within 1 s"):
        ensure_topics("b:9092", {"events": 1}, timeout=1.0, admin_factory=FakeAdmin({}, unreachable=True))
    with pytest.raises(RuntimeError, match="could not create topic 'events' on Kafka at b:9092"):
        ensure_topics("b:9092", {"events": 1}, admin_factory=FakeAdmin({}, create_error=KafkaError(KafkaError.POLICY_VIOLATION)))
    with pytest.raises(ValueError, match="at least 1 partition"):
        ensure_topics("b:9092", {"events": 0}, admin_factory=FakeAdmin({}))
