"""The worker's agents: the thin I/O shell around :func:`streams.processor.process_batch`.

``recommend`` takes micro-batches of raw events, reads the touched users' states from the
table, lets the pure core decide, then writes states, sends one recommendation per user and
dead-letters what was rejected. Between batches (and every 0.2 s) new catalog records are
applied to the live item side (:class:`streams.catalog.LiveCatalog`). Nothing here computes.
"""

from __future__ import annotations

import logging
import weakref
from contextlib import contextmanager
from collections.abc import Iterator
from typing import TYPE_CHECKING

from faust.streams import _current_event
from faust.types import EventT

from streamrec.contract import encode_recommendation
from streams.catalog import LiveCatalog
from streams.items import LiveItems
from streams.processor import Message, WorkerStats, dead_letter, process_batch
from streams.state import UserState, encode_state
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
    stats = WorkerStats()
    bundle.stats = stats  # type: ignore[attr-defined]
    catalog = LiveCatalog.from_settings(bundle.settings)
    live: dict[str, LiveItems] = {}  # "items": the served model's live item side, once restored

    def items() -> LiveItems:
        if "items" not in live:
            live["items"] = catalog.start(bundle.model.current)
        return live["items"]

    def follow_catalog() -> None:
        """Apply new catalog records to the item side, and dead-letter the bad ones."""
        items()
        catalog.poll()
        owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == kafka.events_topic}
        for key, letter in catalog.dead_letters(owned, kafka.partitions):
            bundle.dlq_topic.send_soon(key=key, value=letter)
            stats.rejected["catalog"] += 1

    def load_state_for(batch: list[EventT]):
        def load(user_id: str, position: int) -> UserState | None:
            with acting_for(batch[position]):
                return read_state(table, user_id)

        return load

    @app.agent(bundle.events_topic, name="recommend")
    async def recommend(stream):  # noqa: ANN001 - Faust passes its own stream type
        async for batch in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            follow_catalog()
            messages = [Message(m.key, m.value, m.partition, m.offset) for m in (e.message for e in batch)]
            result = process_batch(messages, load_state_for(batch), items(), bundle.params)
            for user_id, (state, position) in result.states.items():
                with acting_for(batch[position]):
                    table[user_id.encode()] = encode_state(state)
            send_recommendation = bundle.recommendations_topic.send_soon
            for rec in result.recommendations:
                send_recommendation(key=rec.user_id.encode(), value=encode_recommendation(rec))
            for rejected in result.rejected:
                message, topic = messages[rejected.position], batch[rejected.position].message.topic
                logger.warning(
                    "rejected %s[%d]@%d: %s (%s)", topic, message.partition, message.offset, rejected.reason, rejected.detail
                )
                bundle.dlq_topic.send_soon(key=message.key, value=dead_letter(rejected, message, topic))
                stats.rejected[rejected.reason] += 1
            stats.record(result, len(batch))

    @app.timer(interval=settings.model_poll_s)
    async def poll_model() -> None:
        if bundle.model.reload_if_newer():
            live["items"] = catalog.adopt(bundle.model.current)

    @app.timer(interval=0.2)
    async def poll_catalog() -> None:
        follow_catalog()

    @app.timer(interval=30.0)
    async def log_stats() -> None:
        logger.info("worker stats: %s", stats.as_dict())
