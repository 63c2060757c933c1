"""A topic followed in a background thread, for the operations page (the dead-letter tail in
:mod:`streams.dashboard`, the business panels' readers in :mod:`streams.panels`)."""

from __future__ import annotations

import threading
from typing import Any

from streamrec.kafka.security import client_config


class TopicFollower:
    """Reads one topic in a daemon thread: waits until it exists (``error`` says so meanwhile),
    assigns every partition at :meth:`start_offsets`, and hands what it reads to
    :meth:`handle_batch` (by default each message to :meth:`handle`) under ``lock``."""

    name = "follower"
    #: Most messages one read hands over.
    batch_size = 1000

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.error: str | None = f"waiting for topic {topic}"
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-{topic}", daemon=True)

    def start(self) -> TopicFollower:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def start_offsets(self, consumer: Any, partitions: list[int]) -> list[Any]:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        return [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions]

    def handle(self, key: bytes | None, value: bytes | None) -> None:
        raise NotImplementedError

    def handle_batch(self, messages: list[Any]) -> None:
        for message in messages:
            self.handle(message.key(), message.value())

    def _assign(self, consumer: Any) -> bool:
        try:
            metadata = consumer.list_topics(self.topic, timeout=5).topics.get(self.topic)
            if metadata is None or metadata.error is not None or not metadata.partitions:
                self.error = f"topic {self.topic} does not exist (yet)"
                return False
            consumer.assign(self.start_offsets(consumer, sorted(metadata.partitions)))
            self.error = None
            return True
        except Exception as exc:  # noqa: BLE001 - shown on the page; retried
            self.error = f"{type(exc).__name__}: {exc}"
            return False

    def _run(self) -> None:
        from confluent_kafka import Consumer

        consumer = Consumer({**client_config(self.bootstrap), "group.id": f"streamrec-dashboard-{self.name}",
                             "enable.auto.commit": False, "log_level": 0})
        try:
            while not self._stop.is_set() and not self._assign(consumer):
                self._stop.wait(2.0)
            while not self._stop.is_set():
                messages = [m for m in consumer.consume(self.batch_size, timeout=0.5) if m.error() is None]
                if messages:
                    with self.lock:
                        self.handle_batch(messages)
        finally:
            consumer.close()
