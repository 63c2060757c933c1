"""Rate limiting (fake clock), replay, and the publisher over a fake producer (no Kafka)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import KafkaError

from producers.publisher import DeliveryError, EventPublisher, QueueFullError
from producers.replay import ReplayStats, TokenBucket, replay
from streamrec.contract import Event, decode_event


class FakeClock:
    """Time that moves only when someone sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_events(n: int) -> list[Event]:
    return [Event(f"e{i}", f"u{i % 3}", f"i{i}", "view", 1_700_000_000.0 + i) for i in range(n)]


# --------------------------------------------------------------------------- token bucket


def test_bucket_spends_its_burst_then_paces() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10.0, burst=3, clock=clock, sleep=clock.sleep)
    waits = [bucket.reserve() for _ in range(6)]
    assert waits == pytest.approx([0.0, 0.0, 0.0, 0.1, 0.2, 0.3])


def test_bucket_refills_with_time_up_to_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10.0, burst=2, clock=clock, sleep=clock.sleep)
    assert [bucket.reserve(), bucket.reserve()] == [0.0, 0.0]
    clock.now += 0.1  # one token back
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(0.1)
    clock.now += 60.0  # a long pause refills only up to the burst
    assert [bucket.reserve(), bucket.reserve()] == [0.0, 0.0]
    assert bucket.reserve() == pytest.approx(0.1)


def test_bucket_acquire_holds_the_average_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=250.0, clock=clock, sleep=clock.sleep)
    start = clock.now
    for _ in range(5_000):
        bucket.acquire()
    elapsed = clock.now - start
    # the initial burst (rate * 0.05 s = 12.5 tokens) comes free, the rest at 250/s
    assert elapsed == pytest.approx((5_000 - bucket.burst) / 250.0, rel=1e-6)


def test_bucket_catches_up_after_an_oversleep() -> None:
    clock = FakeClock()

    def lazy_sleep(seconds: float) -> None:  # every sleep overshoots by 5 ms
        clock.sleep(seconds + 0.005)

    bucket = TokenBucket(rate=1_000.0, burst=20, clock=clock, sleep=lazy_sleep)
    start = clock.now
    for _ in range(10_000):
        bucket.acquire()
    assert 10_000 / (clock.now - start) == pytest.approx(1_000.0, rel=0.01)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, None), (-1.0, None), (float("inf"), None), (10.0, 0.5)])
def test_bucket_rejects_bad_arguments(rate: float, burst: float | None) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)


# --------------------------------------------------------------------------- replay


@dataclass
class RecordingPublisher:
    published: list[Event] = field(default_factory=list)
    flushed: int = 0
    remaining: int = 0

    def publish(self, event: Event) -> None:
        self.published.append(event)

    def flush(self, timeout: float = 0.0) -> int:
        self.flushed += 1
        return self.remaining


def test_replay_flat_out_sends_everything_and_flushes() -> None:
    clock = FakeClock()
    publisher = RecordingPublisher()
    events = make_events(100)
    stats = replay(iter(events), publisher, clock=clock, sleep=clock.sleep)
    assert publisher.published == events and publisher.flushed == 1
    assert stats == ReplayStats(sent=100, elapsed_s=0.0, unflushed=0)
    assert clock.sleeps == []


def test_replay_at_a_rate_takes_the_expected_time() -> None:
    clock = FakeClock()
    stats = replay(make_events(1_001), RecordingPublisher(), rate=100.0, clock=clock, sleep=clock.sleep)
    # 1,001 events at 100/s: the first 5 (the burst) are free, the rest take 9.96 s
    assert stats.elapsed_s == pytest.approx((1_001 - 5) / 100.0)
    assert stats.events_per_s == pytest.approx(1_001 / stats.elapsed_s)
    assert "1,001 events in 9.96 s" in stats.summary()


def test_replay_reports_unflushed_and_shows_progress(capsys: pytest.CaptureFixture[str]) -> None:
    publisher = RecordingPublisher(remaining=3)
    stats = replay(make_events(1_000), publisher, progress=True, total=1_000)
    assert stats.sent == 1_000 and stats.unflushed == 3
    assert "1000/1000" in capsys.readouterr().err


def test_replay_stats_rate_edge_cases() -> None:
    assert ReplayStats(sent=0, elapsed_s=0.0).events_per_s == 0.0
    assert ReplayStats(sent=10, elapsed_s=2.0).events_per_s == 5.0


# --------------------------------------------------------------------------- publisher


class FakeMessage:
    def __init__(self, key: bytes | None) -> None:
        self._key = key

    def key(self) -> bytes | None:
        return self._key

    def partition(self) -> int:
        return 0


class FakeProducer:
    """Queues messages; ``flush``/``poll`` deliver them (failing the keys in ``fail_keys``)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.queue: list[tuple[str, bytes | None, bytes | None, Any]] = []
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []
        self.fail_keys: set[bytes] = set()
        self.buffer_errors = 0  # how many produce() calls raise BufferError first
        self.stuck = False  # flush delivers nothing
        self.polls: list[float] = []
        self.closed = False
        self.purged = False

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, on_delivery: Any = None) -> None:
        if self.buffer_errors:
            self.buffer_errors -= 1
            raise BufferError("Local: Queue full")
        self.queue.append((topic, key, value, on_delivery))

    def _deliver(self) -> int:
        if self.stuck:
            return 0
        count = len(self.queue)
        for topic, key, value, callback in self.queue:
            if key in self.fail_keys:
                callback(KafkaError(KafkaError._MSG_TIMED_OUT), FakeMessage(key))
            else:
                self.sent.append((topic, key, value))
                callback(None, FakeMessage(key))
        self.queue.clear()
        return count

    def poll(self, timeout: float = 0.0) -> int:
        self.polls.append(timeout)
        return self._deliver() if timeout > 0 else 0

    def flush(self, timeout: float = 0.0) -> int:
        self._deliver()
        return len(self.queue)

    def purge(self) -> None:
        self.purged = True
        for _, key, _, callback in self.queue:
            callback(KafkaError(KafkaError._PURGE_QUEUE), FakeMessage(key))
        self.queue.clear()

    def close(self) -> None:
        self.closed = True

    def __len__(self) -> int:
        return len(self.queue)


def make_publisher(**kwargs: Any) -> tuple[EventPublisher, FakeProducer]:
    made: list[FakeProducer] = []

    def factory(config: dict[str, Any]) -> FakeProducer:
        made.append(FakeProducer(config))
        return made[0]

    publisher = EventPublisher("broker:9092", "events", producer_factory=factory, **kwargs)
    return publisher, made[0]


def test_publisher_config_keys_and_values() -> None:
    publisher, producer = make_publisher(linger_ms=7, config={"compression.type": "lz4"})
    assert producer.config["bootstrap.servers"] == "broker:9092"
    assert producer.config["linger.ms"] == 7
    assert producer.config["acks"] == "all" and producer.config["enable.idempotence"] is True
    assert producer.config["compression.type"] == "lz4"
    events = make_events(3)
    for event in events:
        publisher.publish(event)
    publisher.publish_raw(None, b"\xff garbage")
    assert publisher.flush() == 0
    assert [(key, decode_event(value)) for _, key, value in producer.sent[:3]] == [
        (e.user_id.encode(), e) for e in events
    ]
    assert producer.sent[3] == ("events", None, b"\xff garbage")
    assert (publisher.delivered, publisher.failed, publisher.pending) == (4, 0, 0)
    publisher.close()
    assert producer.closed


def test_idempotence_needs_acks_all() -> None:
    with pytest.raises(ValueError, match="idempotent producer needs acks='all'"):
        make_publisher(acks=1)
    publisher, producer = make_publisher(acks=1, enable_idempotence=False)
    assert producer.config["acks"] == "1"


def test_failed_deliveries_raise_on_flush_once(caplog: pytest.LogCaptureFixture) -> None:
    publisher, producer = make_publisher()
    producer.fail_keys = {b"u1"}
    with caplog.at_level(logging.ERROR, logger="producers.publisher"):
        for event in make_events(6):
            publisher.publish(event)
        with pytest.raises(DeliveryError) as info:
            publisher.flush()
    error = info.value
    assert (error.failed, error.delivered, error.undelivered) == (2, 4, 0)
    assert "2 message(s) failed (4 delivered)" in str(error)
    assert "Message timed out" in str(error) and "key b'u1'" in str(error)
    assert "delivery failed" in caplog.text
    assert (publisher.delivered, publisher.failed) == (4, 2)
    publisher.close()  # already reported: no second error


def test_close_reports_messages_still_undelivered() -> None:
    publisher, producer = make_publisher()
    producer.stuck = True
    for event in make_events(3):
        publisher.publish(event)
    with pytest.raises(DeliveryError, match="3 message\\(s\\) failed.*Purged in queue"):
        publisher.close(timeout=0.01)
    assert producer.purged and producer.closed
    with pytest.raises(RuntimeError, match="closed"):
        publisher.publish(make_events(1)[0])


def test_close_without_purge_counts_undelivered() -> None:
    publisher, producer = make_publisher()
    producer.stuck = True
    producer.purge = None  # type: ignore[assignment,method-assign]
    publisher.publish(make_events(1)[0])
    with pytest.raises(DeliveryError, match="1 message\\(s\\) were still undelivered"):
        publisher.close(timeout=0.01)


def test_full_local_queue_is_waited_out() -> None:
    publisher, producer = make_publisher()
    producer.buffer_errors = 3
    publisher.publish(make_events(1)[0])
    assert producer.polls[:3] == [0.05, 0.05, 0.05]
    assert publisher.flush() == 0 and publisher.delivered == 1


def test_full_local_queue_gives_up_after_the_timeout() -> None:
    clock = FakeClock()
    publisher, producer = make_publisher(queue_full_timeout_s=2.0, clock=clock)
    producer.buffer_errors = 10**9
    original_poll = producer.poll

    def poll(timeout: float = 0.0) -> int:
        clock.now += timeout
        return original_poll(0)

    producer.poll = poll  # type: ignore[method-assign]
    with pytest.raises(QueueFullError, match="stayed full for 2 s .* is the Kafka broker at broker:9092 reachable"):
        publisher.publish(make_events(1)[0])
    assert 2.0 <= clock.now - 1000.0 < 2.2


def test_context_manager_closes_and_does_not_hide_errors(caplog: pytest.LogCaptureFixture) -> None:
    publisher, producer = make_publisher()
    with publisher:
        publisher.publish(make_events(1)[0])
    assert producer.closed and publisher.delivered == 1

    publisher, producer = make_publisher()
    producer.fail_keys = {b"u0"}
    with pytest.raises(KeyError), caplog.at_level(logging.ERROR, logger="producers.publisher"), publisher:
        publisher.publish(make_events(1)[0])
        raise KeyError("boom")
    assert "while handling KeyError" in caplog.text

    publisher, producer = make_publisher()
    producer.fail_keys = {b"u0"}
    with pytest.raises(DeliveryError), publisher:
        publisher.publish(make_events(1)[0])


def test_replay_through_the_publisher() -> None:
    publisher, producer = make_publisher()
    with publisher:
        stats = replay(make_events(500), publisher)
    assert stats.sent == 500 and len(producer.sent) == 500 and publisher.delivered == 500
