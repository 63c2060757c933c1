"""Publish contract events to Kafka: keyed by ``user_id``, JSON values, no silent loss.

:class:`EventPublisher` wraps :class:`confluent_kafka.Producer` (idempotent, ``acks=all``
by default). Every message's fate is counted by the delivery callback; ``flush()`` and
``close()`` raise :class:`DeliveryError` when deliveries failed, and a full local queue
is waited out (polling the producer) for a bounded time before :class:`QueueFullError`.

The producer class is injectable (``producer_factory``) so tests run without a broker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from streamrec.contract import Event, encode_event
from streamrec.kafka.security import client_config

if TYPE_CHECKING:
    from streamrec.privacy import Pseudonymizer

logger = logging.getLogger(__name__)

#: How many failed deliveries are logged one by one (the rest are counted).
_LOGGED_FAILURES = 10


class ProducerLike(Protocol):
    """The part of :class:`confluent_kafka.Producer` the publisher uses."""

    def produce(self, topic: str, value: bytes | None = ..., key: bytes | None = ..., **kwargs: Any) -> None: ...
    def poll(self, timeout: float = ...) -> int: ...
    def flush(self, timeout: float = ...) -> int: ...
    def __len__(self) -> int: ...


class DeliveryError(RuntimeError):
    """Some messages were not delivered: failed (callback error) or still queued at close."""

    def __init__(self, *, topic: str, failed: int, delivered: int, undelivered: int, first_error: str | None) -> None:
        parts = []
        if failed:
            parts.append(f"{failed} message(s) failed")
        if undelivered:
            parts.append(f"{undelivered} message(s) were still undelivered")
        detail = f"; first error: {first_error}" if first_error else ""
        super().__init__(f"delivery to topic {topic!r} incomplete: {' and '.join(parts)} ({delivered} delivered){detail}")
        self.topic = topic
        self.failed = failed
        self.delivered = delivered
        self.undelivered = undelivered
        self.first_error = first_error


class QueueFullError(RuntimeError):
    """The producer's local queue stayed full for longer than the publisher may wait."""


def _default_producer_factory(config: dict[str, Any]) -> ProducerLike:
    from confluent_kafka import Producer

    return Producer(config)  # type: ignore[no-any-return]


class EventPublisher:
    """Send events (or raw bytes) to one topic; use as a context manager or call :meth:`close`.

    ``queue_full_timeout_s`` bounds how long :meth:`publish` waits for room in the local
    queue (``queue.buffering.max.messages``) before raising :class:`QueueFullError`;
    ``config`` adds or overrides librdkafka settings. With a ``pseudonymizer``
    (:class:`streamrec.privacy.Pseudonymizer`) every event's ``user_id`` is replaced by its
    pseudonym before it is encoded, so the raw id never reaches Kafka.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        linger_ms: int = 5,
        acks: str | int = "all",
        enable_idempotence: bool = True,
        delivery_timeout_ms: int = 120_000,
        queue_buffering_max_messages: int = 100_000,
        queue_full_timeout_s: float = 30.0,
        config: Mapping[str, Any] | None = None,
        producer_factory: Callable[[dict[str, Any]], ProducerLike] = _default_producer_factory,
        clock: Callable[[], float] = time.monotonic,
        pseudonymizer: Pseudonymizer | None = None,
    ) -> None:
        if not topic:
            raise ValueError("topic must not be empty")
        if enable_idempotence and str(acks) not in ("all", "-1"):
            raise ValueError(f"an idempotent producer needs acks='all', got acks={acks!r}; pass enable_idempotence=False")
        if queue_full_timeout_s < 0:
            raise ValueError(f"queue_full_timeout_s must be >= 0, got {queue_full_timeout_s}")
        self.bootstrap = bootstrap
        self.topic = topic
        self.config: dict[str, Any] = {
            **client_config(bootstrap),
            "linger.ms": linger_ms,
            "acks": str(acks),
            "enable.idempotence": enable_idempotence,
            "delivery.timeout.ms": delivery_timeout_ms,
            "queue.buffering.max.messages": queue_buffering_max_messages,
            # librdkafka's own log lines go through Python logging, not straight to stderr.
            "logger": logging.getLogger(f"{__name__}.librdkafka"),
            **(config or {}),
        }
        self._producer = producer_factory(self.config)
        self._pseudonymizer = pseudonymizer
        self._queue_full_timeout_s = queue_full_timeout_s
        self._clock = clock
        self._closed = False
        self._delivered = 0
        self._failed = 0
        self._reported_failed = 0
        self._first_error: str | None = None

    # ----------------------------------------------------------------------- counters

    @property
    def delivered(self) -> int:
        """Messages the broker acknowledged."""
        return self._delivered

    @property
    def failed(self) -> int:
        """Messages whose delivery failed."""
        return self._failed

    @property
    def pending(self) -> int:
        """Messages queued or in flight, waiting for their delivery report."""
        return len(self._producer)

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is None:
            self._delivered += 1
            return
        self._failed += 1
        where = f"topic {self.topic!r}"
        partition = msg.partition() if msg is not None else None
        if partition is not None and partition >= 0:
            where += f", partition {partition}"
        if msg is not None:
            where += f", key {msg.key()!r}"
        if self._first_error is None:
            self._first_error = f"{err} ({where})"
        if self._failed <= _LOGGED_FAILURES:
            logger.error("delivery failed: %s (%s)", err, where)

    # ----------------------------------------------------------------------- sending

    def publish(self, event: Event) -> None:
        """Queue one event: key ``user_id`` (UTF-8), value :func:`encode_event` (with the
        pseudonym as ``user_id`` when the publisher has a pseudonymizer)."""
        if self._pseudonymizer is not None:
            event = self._pseudonymizer.event(event)
        self._produce(event.user_id.encode("utf-8"), encode_event(event))

    def publish_raw(self, key: bytes | None, value: bytes | None) -> None:
        """Queue arbitrary bytes (for tests that send garbage to the dead-letter path)."""
        self._produce(key, value)

    def _produce(self, key: bytes | None, value: bytes | None) -> None:
        if self._closed:
            raise RuntimeError("the publisher is closed")
        deadline: float | None = None
        while True:
            try:
                self._producer.produce(self.topic, value=value, key=key, on_delivery=self._on_delivery)
                break
            except BufferError:
                now = self._clock()
                if deadline is None:
                    deadline = now + self._queue_full_timeout_s
                    logger.debug("local producer queue full (%d messages); waiting", len(self._producer))
                elif now >= deadline:
                    raise QueueFullError(
                        f"the local producer queue stayed full for {self._queue_full_timeout_s:g} s "
                        f"({len(self._producer)} messages waiting for topic {self.topic!r}); "
                        f"is the Kafka broker at {self.bootstrap} reachable?"
                    ) from None
                self._producer.poll(0.05)
        self._producer.poll(0)

    # ----------------------------------------------------------------------- finishing

    def _raise_if_failed(self, undelivered: int = 0) -> None:
        new_failures = self._failed - self._reported_failed
        if new_failures or undelivered:
            self._reported_failed = self._failed
            raise DeliveryError(
                topic=self.topic,
                failed=new_failures,
                delivered=self._delivered,
                undelivered=undelivered,
                first_error=self._first_error,
            )

    def flush(self, timeout: float = 30.0) -> int:
        """Wait up to ``timeout`` s for outstanding deliveries; return how many remain.

        Raises :class:`DeliveryError` if deliveries failed since the last report.
        """
        remaining = self._producer.flush(timeout)
        self._raise_if_failed()
        return remaining

    def close(self, timeout: float = 30.0) -> None:
        """Flush, then shut the producer down. Messages still queued after ``timeout`` are
        purged and reported: :class:`DeliveryError` names failed and undelivered counts.
        """
        if self._closed:
            return
        self._closed = True
        remaining = self._producer.flush(timeout)
        if remaining:
            logger.error("%d message(s) for topic %r still undelivered after %g s; giving up on them",
                         remaining, self.topic, timeout)
            purge = getattr(self._producer, "purge", None)
            if purge is not None:
                purge()  # purged messages get failed delivery reports: counted as failed
                self._producer.flush(0)
                remaining = len(self._producer)
        close = getattr(self._producer, "close", None)
        if close is not None and not remaining:
            close()
        self._raise_if_failed(undelivered=remaining)

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # don't hide the error that is already propagating
            self.close()
        except DeliveryError as delivery_error:
            logger.error("while handling %s: %s", exc_type.__name__, delivery_error)
