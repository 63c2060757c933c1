"""The Faust engine: an agent around the pure core (:mod:`streamrec.core.batch`).

``recommend`` takes micro-batches of raw events, reads the touched users' states from the
table, lets the pure core decide, then writes states, sends one recommendation per user and
dead-letters what was rejected, all through the worker's shell (:mod:`streams.shell`); a timer
ticks the shell every 0.2 s (the catalog, newer models, the statistics). Nothing here computes.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from faust.streams import _current_event
from faust.types import EventT

from streamrec.core.batch import Message, finish_batch
from streamrec.core.state import UserState
from streams.metrics import lag_of
from streams.shell import WorkerShell
from streams.tables import read_state

if TYPE_CHECKING:
    from streams.app import StreamrecApp

logger = logging.getLogger(__name__)


@contextmanager
def acting_for(event: EventT) -> Iterator[None]:
    """Make ``event`` Faust's current event while touching the table.

    Faust picks the RocksDB partition and the changelog partition of a table key from the
    *current* event. In a micro-batch that is the batch's last event, which may sit on another
    partition than the user being written, so each user's reads and writes run under one of
    that user's own events.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def register_agents(bundle: StreamrecApp) -> None:
    app = bundle.app
    settings = bundle.settings.worker
    kafka = bundle.settings.kafka
    table = bundle.user_states
    shell = WorkerShell(bundle.settings, bundle.params, model=bundle.model)
    bundle.shell = shell  # type: ignore[attr-defined]
    topics = {kafka.recommendations_topic: bundle.recommendations_topic, kafka.dlq_topic: bundle.dlq_topic}

    def send(topic: str, value: bytes, key: bytes | None) -> None:
        topics[topic].send_soon(key=key, value=value)

    def owned() -> set[int]:
        return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == kafka.events_topic}

    @app.agent(bundle.events_topic, name="recommend")
    async def recommend(stream):  # noqa: ANN001 - Faust passes its own stream type
        async for batch in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            shell.follow_catalog(owned(), send)
            messages = [Message(m.key, m.value, m.partition, m.offset) for m in (e.message for e in batch)]

            def load(user_id: str, position: int) -> UserState | None:
                with acting_for(batch[position]):
                    return read_state(table, user_id)

            def write_state(user_id: str, position: int, key: bytes, value: bytes | None) -> None:
                with acting_for(batch[position]):
                    if value is not None:
                        table[key] = value
                    else:  # an erasure request: Faust deletes the key and writes the changelog tombstone
                        try:
                            del table[key]
                        except KeyError:
                            pass

            prepared = shell.prepare(messages, load)
            result = finish_batch(prepared, *shell.search(prepared))
            shell.emit(result, messages, source_topic=kafka.events_topic, send=send, write_state=write_state)
            # Faust's timestamp is the message's Kafka timestamp in seconds; the lists are
            # handed to the producer now (send_soon), not yet acknowledged.
            shell.record(result, len(batch), lambda position: batch[position].message.timestamp, time.time())

    def consumer_lag() -> dict[int, int]:
        consumer = app.consumer
        owned_tps = [tp for tp in app.assignor.assigned_actives() if tp.topic == kafka.events_topic]
        ends = {tp.partition: consumer.highwater(tp) for tp in owned_tps}
        read = consumer._read_offset  # noqa: SLF001 - offset of the last message read per partition
        acked = getattr(consumer, "_committed_offset", {})

        def processed(partition: int) -> int | None:
            tp = next(tp for tp in owned_tps if tp.partition == partition)
            committed = acked.get(tp)
            last_read = read.get(tp)
            if last_read is not None:
                return max(last_read + 1, committed or 0)
            return committed

        return lag_of({p: e for p, e in ends.items() if e is not None}, processed)

    shell.lag_source = consumer_lag

    @app.timer(interval=0.2)
    async def tick() -> None:
        shell.tick(owned(), send)
