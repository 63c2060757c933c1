"""The worker's shell: what both engines do around the pure core, once.

An engine (:mod:`streams.engine`, the batch engine; :mod:`streams.agents`, the Faust agent) only
says how it consumes, loops and recovers. The rest is here: deciding a batch with the served
model's live item side, writing the new states and sending the lists and dead letters
(:meth:`WorkerShell.emit`, through the engine's own ``send`` and ``write_state``), the worker's
statistics, and the periodic work (:meth:`WorkerShell.tick`): following the catalog, adopting a
newer model version, logging the statistics.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence

from streamrec.config import Settings
from streamrec.contract import encode_recommendation
from streamrec.core.batch import BatchResult, Message, PreparedBatch, dead_letter, prepare_batch
from streamrec.core.interest import InterestParams
from streamrec.core.items import LiveItems
from streamrec.core.state import UserState, encode_state
from streams.catalog import LiveCatalog
from streams.model import ModelHolder

logger = logging.getLogger(__name__)

#: ``send(topic, value, key)``: hand a message to the engine's producer.
Send = Callable[[str, bytes, "bytes | None"], None]
#: ``write_state(user_id, position, key, value)``: store a user's new state (``position`` is
#: the batch position of the event that made it, for engines that store by partition).
WriteState = Callable[[str, int, bytes, bytes], None]

#: How often the statistics are logged, in seconds.
STATS_EVERY_S = 30.0


class WorkerStats:
    """Counters the worker logs (and tests read): processed, recommended, rejected by reason."""

    def __init__(self) -> None:
        self.processed = 0
        self.recommended = 0
        self.batches = 0
        self.duplicates = 0
        self.rejected: Counter[str] = Counter()
        #: Seconds spent waiting for the broker to acknowledge a batch's output.
        self.waited_for_broker_s = 0.0

    def record(self, result: BatchResult, n_messages: int) -> None:
        """Count one processed micro-batch of ``n_messages`` (rejects counted by the caller)."""
        self.batches += 1
        self.duplicates += len(result.duplicates)
        self.processed += n_messages - len(result.rejected) - len(result.duplicates)
        self.recommended += len(result.recommendations)

    def as_dict(self) -> dict[str, object]:
        return {
            "processed": self.processed,
            "recommended": self.recommended,
            "batches": self.batches,
            "duplicates": self.duplicates,
            "rejected": dict(self.rejected),
            "waited_for_broker_s": round(self.waited_for_broker_s, 3),
        }


class WorkerShell:
    """The served model, its live item side, the catalog and the statistics of one worker."""

    def __init__(self, settings: Settings, params: InterestParams | None = None, *, model: ModelHolder | None = None) -> None:
        self.settings = settings
        self.params = params or InterestParams()
        self.model = model or ModelHolder.from_settings(settings)
        self.catalog = LiveCatalog.from_settings(settings)
        self.stats = WorkerStats()
        self.items: LiveItems | None = None
        now = time.monotonic()
        self._next_model_check = now + settings.worker.model_poll_s
        self._next_stats = now + STATS_EVERY_S

    def start(self) -> LiveItems:
        """Restore the catalog table and build the served model's live item side."""
        self.items = self.catalog.start(self.model.current)
        return self.items

    def prepare(self, messages: Sequence[Message], load: Callable[[str, int], UserState | None]) -> PreparedBatch:
        """Decide a batch up to its search, with the current model's live item side."""
        if self.items is None:
            self.start()
        return prepare_batch(messages, load, self.items, self.params)

    def emit(self, result: BatchResult, messages: Sequence[Message], *, source_topic: str, send: Send,
             write_state: WriteState) -> None:
        """Write the batch's new states, send its lists and dead-letter its rejects."""
        for user_id, (state, position) in result.states.items():
            write_state(user_id, position, user_id.encode(), encode_state(state))
        kafka = self.settings.kafka
        for rec in result.recommendations:
            send(kafka.recommendations_topic, encode_recommendation(rec), rec.user_id.encode())
        for rejected in result.rejected:
            message = messages[rejected.position]
            logger.warning("rejected %s[%d]@%d: %s (%s)", source_topic, message.partition, message.offset,
                           rejected.reason, rejected.detail)
            send(kafka.dlq_topic, dead_letter(rejected, message, source_topic), message.key)
            self.stats.rejected[rejected.reason] += 1

    def follow_catalog(self, owned: set[int], send: Send) -> None:
        """Apply new catalog records to the item side; dead-letter the bad ones this worker owns."""
        if self.items is None:
            self.start()
        self.catalog.poll()
        kafka = self.settings.kafka
        for key, letter in self.catalog.dead_letters(owned, kafka.partitions):
            send(kafka.dlq_topic, letter, key)
            self.stats.rejected["catalog"] += 1

    def adopt_newer_model(self) -> bool:
        """Swap in a newer model version, if there is one, with its own live item side. Batches
        under way finish with the version they were prepared with; users' vectors are rebuilt in
        the new version's space when next touched."""
        if not self.model.reload_if_newer():
            return False
        self.items = self.catalog.adopt(self.model.current)
        return True

    def tick(self, owned: set[int], send: Send) -> None:
        """The periodic work: the catalog every call, the model and the statistics when due."""
        self.follow_catalog(owned, send)
        now = time.monotonic()
        if now >= self._next_model_check:
            self.adopt_newer_model()
            self._next_model_check = now + self.settings.worker.model_poll_s
        if now >= self._next_stats:
            logger.info("worker stats: %s", self.stats.as_dict())
            self._next_stats = now + STATS_EVERY_S

    def close(self) -> None:
        self.catalog.close()
        logger.info("worker stopped: %s", self.stats.as_dict())
