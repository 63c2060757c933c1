"""The worker's shell: what both engines do around the pure core, once.

An engine (:mod:`streams.engine`, the batch engine; :mod:`streams.agents`, the Faust agent) only
says how it consumes, loops and recovers. The rest is here: deciding a batch with the served
model's live item side, writing the new states and sending the lists and dead letters
(:meth:`WorkerShell.emit`, through the engine's own ``send`` and ``write_state``), the worker's
statistics, and the periodic work (:meth:`WorkerShell.tick`): following the catalog, adopting a
newer model version, logging the statistics; and the worker's Prometheus metrics
(:mod:`streams.metrics`: counted once per batch in :meth:`WorkerShell.record`, gauged once a
second in :meth:`WorkerShell.tick`, served by :meth:`WorkerShell.serve_metrics`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from streamrec.config import Settings
from streamrec.contract import decode_dead_letter, encode_recommendation
from streamrec.core.batch import BatchResult, Message, PreparedBatch, dead_letter, prepare_batch
from streamrec.core.experiments import Experiment, experiment_from_dict
from streamrec.core.interest import InterestParams
from streamrec.core.items import LiveItems
from streamrec.core.state import UserState, encode_state
from streams.catalog import LiveCatalog
from streams.metrics import WorkerMetrics, serve
from streams.model import ModelHolder
from streams.tables import TABLE_DIR

logger = logging.getLogger(__name__)

#: ``send(topic, value, key)``: hand a message to the engine's producer.
Send = Callable[[str, bytes, "bytes | None"], None]
#: ``write_state(user_id, position, key, value)``: store a user's new state (``position`` is
#: the batch position of the event that made it, for engines that store by partition); a None
#: ``value`` deletes the user's state (an erasure request) and writes the changelog tombstone.
WriteState = Callable[[str, int, bytes, "bytes | None"], None]

#: ``event_time(position)``: the produce time (Kafka timestamp, epoch seconds) of the batch's
#: message at ``position``, or None when the message has none.
EventTime = Callable[[int], "float | None"]

#: How often the statistics are logged, in seconds.
STATS_EVERY_S = 30.0
#: How often the gauges (model, catalog, consumer lag) are refreshed, in seconds.
GAUGES_EVERY_S = 1.0
#: How often the catalog's unavailable items are counted (a pass over the catalog), in seconds.
CATALOG_COUNT_EVERY_S = 5.0



def interest_params(settings: Settings) -> InterestParams:
    """The worker's ``InterestParams``: the defaults with the list rules' repeat, diversity, taste,
    neighbour and factor settings."""
    rules = settings.rules
    return InterestParams(repeat_weight=rules.repeat_weight, diversity=rules.diversity, taste_decay=rules.taste_decay,
                          knn_weight=rules.knn_weight, pop_weight=rules.pop_weight, factor_weight=rules.factor_weight,
                          factor_repeats=rules.factor_repeats, factor_depth=rules.factor_depth)


def running_experiment(settings: Settings) -> Experiment | None:
    """The experiment the lists follow (the first configured; at most one runs), or None."""
    return experiment_from_dict(settings.experiments[0].model_dump()) if settings.experiments else None

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
        self.params = params or interest_params(settings)
        #: The running experiment (its variant is stamped on every list), or None.
        self.experiment = running_experiment(settings)
        self.model = model or ModelHolder.from_settings(settings)
        self.catalog = LiveCatalog.from_settings(settings)
        self.stats = WorkerStats()
        self.metrics = WorkerMetrics(Path(settings.worker.data_dir) / TABLE_DIR)
        #: The engine's consumer lag per owned partition (set by the engine; read once a second).
        self.lag_source: Callable[[], Mapping[int, int]] | None = None
        self.items: LiveItems | None = None
        now = time.monotonic()
        self._next_model_check = now + settings.worker.model_poll_s
        self._next_stats = now + STATS_EVERY_S
        self._next_gauges = now
        self._next_catalog_count = now
        current = self.model.current
        self.metrics.set_model(current.version, current.meta.get("created_at"), search=current.meta.get("search"))  # before the first tick

    def start(self) -> LiveItems:
        """Restore the catalog table and build the served model's live item side."""
        self.items = self.catalog.start(self.model.current)
        self.refresh_gauges()
        return self.items

    def serve_metrics(self) -> int | None:
        """Serve ``/metrics`` on ``worker.metrics_port`` (0: not at all); the port or None."""
        return serve(self.metrics.registry, self.settings.worker.metrics_port, what=f"worker {self.settings.worker.app_id}")

    def search(self, prepared: PreparedBatch) -> tuple[np.ndarray, np.ndarray]:
        """The batch's FAISS search, timed (``streamrec_search_seconds``)."""
        started = time.perf_counter()
        found = prepared.search()
        self.metrics.search.observe(time.perf_counter() - started)
        return found

    def record(self, result: BatchResult, n_messages: int, event_time: EventTime | None = None,
               now: float | None = None) -> None:
        """Count a batch whose output is out (statistics and metrics, once per batch). The
        latency of each list runs from its triggering event's produce time (``event_time``) to
        ``now`` (default: the wall clock now)."""
        self.stats.record(result, n_messages)
        latencies = None
        if event_time is not None and result.recommendations:
            states = result.states
            times = [event_time(states[rec.user_id][1]) if rec.user_id in states else None
                     for rec in result.recommendations]
            produced = np.array([t for t in times if t is not None], dtype=np.float64)
            latencies = np.maximum((time.time() if now is None else now) - produced, 0.0)
        self.metrics.record_batch(n_messages, len(result.recommendations), len(result.duplicates),
                                  result.event_types, latencies)

    def prepare(self, messages: Sequence[Message], load: Callable[[str, int], UserState | None]) -> PreparedBatch:
        """Decide a batch up to its search, with the current model's live item side."""
        if self.items is None:
            self.start()
        return prepare_batch(messages, load, self.items, self.params, experiment=self.experiment)

    def emit(self, result: BatchResult, messages: Sequence[Message], *, source_topic: str, send: Send,
             write_state: WriteState) -> None:
        """Write the batch's new states, delete the erased users' states, send its lists and
        dead-letter its rejects."""
        for user_id, (state, position) in result.states.items():
            write_state(user_id, position, user_id.encode(), encode_state(state))
        for user_id, position in result.erased.items():
            write_state(user_id, position, user_id.encode(), None)
            self.metrics.erasures.inc()
            logger.info("erased the state of a user (erasure request at %s[%d]@%d)", source_topic,
                        messages[position].partition, messages[position].offset)
        kafka = self.settings.kafka
        for rec in result.recommendations:
            send(kafka.recommendations_topic, encode_recommendation(rec), rec.user_id.encode())
        for rejected in result.rejected:
            message = messages[rejected.position]
            logger.warning("rejected %s[%d]@%d: %s (%s)", source_topic, message.partition, message.offset,
                           rejected.reason, rejected.detail)
            send(kafka.dlq_topic, dead_letter(rejected, message, source_topic), message.key)
            self.stats.rejected[rejected.reason] += 1
            self.metrics.dead_letters.labels(rejected.reason).inc()

    def follow_catalog(self, owned: set[int], send: Send) -> None:
        """Apply new catalog records to the item side; dead-letter the bad ones this worker owns."""
        if self.items is None:
            self.start()
        self.catalog.poll()
        kafka = self.settings.kafka
        for key, letter in self.catalog.dead_letters(owned, kafka.partitions):
            send(kafka.dlq_topic, letter, key)
            self.stats.rejected["catalog"] += 1
            self.metrics.dead_letters.labels(decode_dead_letter(letter)["reason"]).inc()

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
        if now >= self._next_gauges:
            self.refresh_gauges(now)

    def refresh_gauges(self, now: float | None = None) -> None:
        """Model version and age, catalog sizes and consumer lag (``tick`` does it once a second)."""
        now = time.monotonic() if now is None else now
        self._next_gauges = now + GAUGES_EVERY_S
        metrics = self.metrics
        model = self.model.current
        metrics.set_model(model.version, model.meta.get("created_at"), search=model.meta.get("search"))
        catalog = self.catalog.table.items
        metrics.catalog_items.set(len(catalog))
        if now >= self._next_catalog_count:
            self._next_catalog_count = now + CATALOG_COUNT_EVERY_S
            try:
                metrics.unavailable_items.set(sum(not item.available for item in list(catalog.values())))
            except RuntimeError:  # changed while counted: next time
                pass
        if self.lag_source is not None:
            try:
                metrics.set_lag(self.lag_source())
            except Exception as exc:  # noqa: BLE001 - a gauge must never stop the worker
                logger.debug("consumer lag not measured: %s", exc)

    def close(self) -> None:
        self.catalog.close()
        logger.info("worker stopped: %s", self.stats.as_dict())
