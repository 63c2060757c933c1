"""``streamrec simulate``: the closed-loop shop against the real pipeline.

Round after round, every simulated shopper browses (a view, published to the events topic); the
worker answers each with a list on the recommendations topic; the loop waits until every
shopper's newest event has its list, shows each shopper that list, and publishes what they do
about it (:meth:`producers.simulator.Shoppers.react`) in the next round, with their next browsing.
The shoppers' ground truth accumulates in ``shoppers.truth``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, TopicPartition

from producers.publisher import EventPublisher
from producers.simulator import Shoppers
from streamrec.contract import Event, Recommendation, decode_recommendation
from streamrec.kafka.admin import ensure_topics, watermarks
from streamrec.kafka.security import client_config

logger = logging.getLogger(__name__)


@dataclass
class LoopStats:
    rounds: int = 0
    events: int = 0
    lists_read: int = 0
    reactions: int = 0


class _ListReader:
    """The recommendations topic from its end as of now."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.consumer = Consumer({**client_config(bootstrap), "group.id": f"simulate-{uuid.uuid4().hex[:8]}",
                                  "enable.auto.commit": False, "log_level": 4})
        meta = self.consumer.list_topics(topic, timeout=10).topics[topic]
        deadline = time.monotonic() + 30.0
        self.consumer.assign([TopicPartition(topic, p, watermarks(self.consumer, topic, p, deadline=deadline)[1])
                              for p in sorted(meta.partitions)])

    def until(self, awaited: dict[str, str], timeout: float) -> tuple[dict[str, Recommendation], int]:
        """Read until each user in ``awaited`` has the list triggered by ``awaited[user]`` (an
        event id); those lists and how many lists were read in all."""
        found: dict[str, Recommendation] = {}
        read = 0
        deadline = time.monotonic() + timeout
        while len(found) < len(awaited):
            if time.monotonic() > deadline:
                missing = len(awaited) - len(found)
                raise TimeoutError(f"{missing} of {len(awaited)} shoppers got no list within {timeout:.0f} s "
                                   f"on {self.topic}: is a worker running on this events topic?")
            for message in self.consumer.consume(1000, timeout=0.2):
                if message.error():
                    if message.error().code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"{self.topic}: {message.error()}")
                    continue
                rec = decode_recommendation(message.value())
                read += 1
                if awaited.get(rec.user_id) == rec.event_id:
                    found[rec.user_id] = rec
        return found, read

    def close(self) -> None:
        self.consumer.close()


def run_closed_loop(bootstrap: str, events_topic: str, recommendations_topic: str, shoppers: Shoppers,
                    users: Sequence[str], *, rounds: int, partitions: int = 4, timeout: float = 120.0,
                    progress: Callable[[int], None] | None = None) -> LoopStats:
    """Run ``rounds`` rounds for ``users``; the last round's reactions are published too."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    unknown = [u for u in users if u not in shoppers.user_index]
    if unknown:
        raise ValueError(f"{len(unknown)} user(s) are not shoppers of the simulated shop, e.g. {unknown[0]!r}")
    ensure_topics(bootstrap, {events_topic: partitions, recommendations_topic: partitions})
    stats = LoopStats()
    reader = _ListReader(bootstrap, recommendations_topic)
    reactions: dict[str, list[Event]] = {}
    try:
        with EventPublisher(bootstrap, events_topic, linger_ms=10) as publisher:
            for number in range(rounds + 1):
                now = time.time()
                awaited: dict[str, str] = {}
                for user_id in users:
                    batch = reactions.pop(user_id, [])
                    if number < rounds:
                        batch += shoppers.browse(user_id, max(now, batch[-1].ts + 0.001 if batch else now))
                    for event in batch:
                        publisher.publish(event)
                        stats.events += 1
                    actions = [e for e in batch if e.type != "impression"]  # the worker answers actions only
                    if actions:
                        awaited[user_id] = actions[-1].event_id
                publisher.flush()
                if number == rounds:
                    break
                lists, read = reader.until(awaited, timeout)
                stats.lists_read += read
                shown_at = time.time()
                for user_id, rec in lists.items():
                    reactions[user_id] = shoppers.react(rec, max(shown_at, rec.event_ts + 0.001))
                    stats.reactions += len(reactions[user_id])
                stats.rounds += 1
                if progress is not None:
                    progress(number + 1)
    finally:
        reader.close()
    return stats
