"""The batch engine: the worker's fast path, with librdkafka (confluent-kafka) at both ends.

Faust hands an agent one Python ``Event`` at a time, whatever the batching above it, and that
alone costs more CPU per event than the whole budget of a fast worker; librdkafka hands over
a thousand messages in one call (docs/performance.md, ``streamrec bench --floor``). So the
default engine keeps everything the worker *decides* in :func:`streamrec.core.batch.process_batch`
and does its own I/O, micro-batch by micro-batch:

1. take what the consumer has queued (up to ``batch_size``), waiting up to
   ``batch_within_s`` only while nothing is there, so a quiet shop gets its answer at once
   and a busy one gets large batches;
2. run the pure core up to the search (:func:`streamrec.core.batch.prepare_batch`), reading the
   touched users' states from the batches still under way or the partition's RocksDB;
3. settle the batch produced last time: wait until the broker has acknowledged its output
   (a failed delivery stops the worker before anything of it is committed: it is replayed
   after the restart), write its new states and the newest changelog offsets into RocksDB,
   one ``WriteBatch`` per partition, and commit its source offsets;
4. complete the batch searched since last time: one changelog record per touched user (to
   the event's partition, as Faust does), one recommendation per user and the dead letters,
   sent at once but not waited for;
5. start this batch's FAISS search in the search thread.

So three batches are under way at a time: one being prepared here, one being searched on
the other core (FAISS releases the GIL) and one travelling to the broker.

A crash anywhere replays at most the batches whose offsets were not committed; the state's
recorded source offsets and event ids make the replay change nothing (see
``docs/reliability.md``). The table is Faust's, on disk and in the changelog
(:mod:`streams.tables`), so the Faust agent (``--engine faust``) can take over the same data.
When a partition is assigned its RocksDB is brought up to date from the changelog first.
"""

from __future__ import annotations

import gc
import logging
import signal
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from streamrec.config import Settings
from streamrec.core.batch import BatchResult, Message, PreparedBatch, finish_batch
from streamrec.core.interest import InterestParams
from streamrec.core.search import search
from streamrec.kafka.admin import watermarks
from streamrec.kafka.clients import worker_client_configs
from streams.metrics import lag_of
from streams.model import ModelHolder
from streams.shell import WorkerShell, WorkerStats
from streams.tables import PartitionStore, changelog_topic, read_state

logger = logging.getLogger(__name__)


#: The cyclic garbage collector's thresholds in the worker (Python's default: 700, 10, 10).
GC_THRESHOLDS = (20_000, 50, 100)

#: Batches smaller than this are finished at once rather than pipelined (see ``process``).
KEEPING_UP_BELOW = 1000


class DeliveryFailed(RuntimeError):
    """The broker did not take a batch's output; nothing of the batch was committed."""


@dataclass
class _Pending:
    """A batch between its preparation and its completion."""

    messages: list[Message]
    prepared: PreparedBatch
    #: The consumer's messages (their Kafka timestamps give the lists' latencies).
    raw: Sequence[Any] = ()
    search: Future | None = None
    result: BatchResult | None = None
    #: New states per partition, written to RocksDB once the broker has them.
    writes: dict[int, list[tuple[bytes, bytes]]] = field(default_factory=lambda: defaultdict(list))


@dataclass
class _Deliveries:
    """What the producer's delivery reports said since the last :meth:`reset`."""

    changelog: str
    offsets: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def __call__(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self.errors.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")
        elif msg.topic() == self.changelog:
            partition, offset = msg.partition(), msg.offset()
            if offset > self.offsets.get(partition, -1):
                self.offsets[partition] = offset

    def reset(self) -> None:
        self.offsets = {}
        self.errors = []


def _produced_at(message: Any) -> float | None:
    """A consumed message's Kafka timestamp in epoch seconds (None when it has none)."""
    kind, millis = message.timestamp()
    return millis / 1000.0 if kind != TIMESTAMP_NOT_AVAILABLE else None


class BatchEngine:
    """One worker process's consume → decide → produce loop (see the module docstring)."""

    def __init__(self, settings: Settings, params: InterestParams | None = None, *, model: ModelHolder | None = None) -> None:
        self.settings = settings
        #: The served model, its live item side, the catalog and the statistics.
        self.shell = WorkerShell(settings, params, model=model)
        self.model = self.shell.model
        self.stats = self.shell.stats
        self.events_topic = settings.kafka.events_topic
        self.changelog = changelog_topic(settings.worker.app_id)
        self.store = PartitionStore(settings.worker.data_dir)
        self._deliveries = _Deliveries(self.changelog)
        consumer_config, producer_config = worker_client_configs(settings)
        self._consumer_config = consumer_config
        self.consumer = Consumer(consumer_config)
        self.producer = Producer({**producer_config, "on_delivery": self._deliveries})
        self._committed: dict[int, int] = {}  # settled offsets per owned partition
        self._uncommitted: dict[int, int] = {}  # settled since the last commit
        self._last_commit = time.monotonic()
        self._stopping = False
        self._pending: _Pending | None = None  # being searched
        self._delivering: _Pending | None = None  # produced, not yet acknowledged
        # FAISS releases the GIL: a batch's search runs here while the next batch is prepared.
        self._searcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="search")

    # -- partitions come and go ------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        reader = Consumer({**self._consumer_config, "group.id": f"{self.settings.worker.app_id}-recovery",
                           "enable.partition.eof": True})
        try:
            for tp in partitions:
                self.store.open(tp.partition)
                started = time.monotonic()
                applied = self.recover(reader, tp.partition)
                logger.info("partition %d assigned: %d changelog record(s) applied in %.2f s",
                            tp.partition, applied, time.monotonic() - started)
        finally:
            reader.close()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.drain()  # the batches under way may hold events of these partitions
        offsets = [TopicPartition(self.events_topic, tp.partition, self._committed[tp.partition])
                   for tp in partitions if tp.partition in self._committed]
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                logger.warning("could not commit revoked partitions' offsets (they will be replayed): %s", exc)
        self._release(partitions)
        logger.info("partitions %s revoked", [tp.partition for tp in partitions])

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            self.drain()  # their outputs are still right; their commits may be refused
        except Exception:  # noqa: BLE001 - the partitions are gone either way
            logger.exception("could not finish the batches under way of lost partitions")
        self._release(partitions)
        logger.warning("partitions %s lost (another worker owns them now)", [tp.partition for tp in partitions])

    def _release(self, partitions: list[TopicPartition]) -> None:
        """Forget revoked or lost partitions' offsets and close their RocksDB."""
        for tp in partitions:
            self._committed.pop(tp.partition, None)
            self._uncommitted.pop(tp.partition, None)
            self.store.close(tp.partition)

    def recover(self, reader: Consumer, partition: int, *, timeout: float = 60.0) -> int:
        """Apply the changelog records newer than the partition's RocksDB, read with ``reader``
        (a consumer outside the group, with partition EOF events); returns how many."""
        low, high = watermarks(reader, self.changelog, partition, deadline=time.monotonic() + timeout)
        persisted = self.store.persisted_offset(partition)
        start = max(low, persisted + 1) if persisted is not None else low
        if start >= high:
            return 0
        reader.assign([TopicPartition(self.changelog, partition, start if start > 0 else OFFSET_BEGINNING)])
        applied, last = 0, start - 1
        deadline = time.monotonic() + timeout
        try:
            while last < high - 1:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"changelog {self.changelog}[{partition}] not read up to {high} within {timeout:g} s")
                items = []
                for message in reader.consume(10_000, timeout=1.0):
                    if message.error() is not None:
                        if message.error().code() == KafkaError._PARTITION_EOF:
                            last = max(last, high - 1)
                            continue
                        raise KafkaException(message.error())
                    items.append((message.key(), message.value()))
                    last = message.offset()
                if items:
                    self.store.write(partition, items, last)
                    applied += len(items)
            return applied
        finally:
            reader.unassign()

    # -- the loop ------------------------------------------------------------------------------

    def take(self) -> list[Any]:
        """The next micro-batch: whatever is queued, waiting only while nothing is."""
        size = self.settings.worker.batch_size
        messages = self.consumer.consume(size, timeout=0)
        if not messages:
            # Nothing new: finish the batches under way before waiting, so that a quiet
            # stream's last events are answered now rather than when the next one comes.
            self.drain()
            first = self.consumer.poll(self.settings.worker.batch_within_s)
            if first is None:
                return []
            messages = [first, *self.consumer.consume(size - 1, timeout=0)]
        good = []
        for message in messages:
            error = message.error()
            if error is None:
                good.append(message)
            elif error.code() != KafkaError._PARTITION_EOF:
                logger.warning("consumer: %s", error)
        return good

    def prepare(self, raw: Sequence[Any]) -> _Pending:
        """Decide a batch up to its search (which :meth:`submit` starts).

        A user's state comes from the batch being searched, else from the batch being
        delivered (neither is in RocksDB yet), else from the partition's RocksDB.
        """
        messages = [Message(m.key(), m.value(), m.partition(), m.offset()) for m in raw]
        store = self.store
        # Newest first; a user erased in a batch under way has no state, whatever RocksDB says yet.
        under_way = [pending.prepared.result for pending in (self._pending, self._delivering) if pending is not None]

        def load(user_id: str, position: int):  # noqa: ANN202
            for result in under_way:
                found = result.states.get(user_id)
                if found is not None:
                    return found[0]
                if user_id in result.erased:
                    return None
            return read_state(store.db(messages[position].partition), user_id)

        return _Pending(messages, self.shell.prepare(messages, load), raw)

    def submit(self, pending: _Pending) -> None:
        """Start the batch's search in the search thread; it becomes the batch being searched."""
        pending.search = self._searcher.submit(self.shell.search, pending.prepared)
        self._pending = pending

    def complete(self) -> None:
        """Finish the batch being searched and produce its output; it becomes the batch being
        delivered (:meth:`settle` waits for the broker, writes RocksDB and commits)."""
        self.settle()  # one batch is delivered at a time: its delivery reports are its own
        pending, self._pending = self._pending, None
        if pending is None:
            return
        messages = pending.messages
        rows, scores = pending.search.result()
        self.shell.catalog.poll()  # the newest availability applies to the lists finished now
        result = finish_batch(pending.prepared, rows, scores)
        self._deliveries.reset()

        def write_state(user_id: str, position: int, key: bytes, value: bytes | None) -> None:
            partition = messages[position].partition  # None: a delete and a changelog tombstone
            pending.writes[partition].append((key, value))
            self._produce(self.changelog, value, key, partition)

        self.shell.emit(result, messages, source_topic=self.events_topic, send=self._produce, write_state=write_state)
        pending.result = result
        self._delivering = pending

    def settle(self) -> None:
        """Wait for the broker to take the delivered batch's output, then write its states
        (with the newest changelog offsets) to RocksDB and commit its source offsets."""
        pending, self._delivering = self._delivering, None
        if pending is None:
            return
        try:
            self._flush()
        except DeliveryFailed:
            # The batch being searched was prepared from this one's states and follows it
            # on the partitions: settling it (as stopping would, in drain) would commit
            # offsets past the refused batch. Nothing after a refused batch is settled.
            self._pending = None
            raise
        for partition, items in pending.writes.items():
            self.store.write(partition, items, self._deliveries.offsets.get(partition))
        ends: dict[int, int] = {}
        for message in pending.messages:
            ends[message.partition] = max(ends.get(message.partition, 0), message.offset + 1)
        self._committed.update(ends)
        self._uncommitted.update(ends)
        raw = pending.raw
        self.shell.record(pending.result, len(pending.messages), lambda position: _produced_at(raw[position]))
        self.commit(force=False)

    def commit(self, *, force: bool = True) -> None:
        """Commit the settled batches' source offsets, at most every ``commit_interval_s``
        unless forced: a commit costs the broker CPU, and committing every small batch of a
        quiet stream took a large share of a core (docs/performance.md); a crash replays what
        was not committed, which changes nothing (the states know their offsets)."""
        now = time.monotonic()
        if not self._uncommitted or (not force and now - self._last_commit < self.settings.worker.commit_interval_s):
            return
        offsets = [TopicPartition(self.events_topic, p, o) for p, o in self._uncommitted.items()]
        self._uncommitted = {}
        self._last_commit = now
        self.consumer.commit(offsets=offsets, asynchronous=True)

    def drain(self) -> None:
        """Complete and settle every batch under way."""
        self.complete()
        self.settle()

    def process(self, raw: Sequence[Any]) -> None:
        """One more batch through the pipeline.

        While this batch is prepared here, the previous one is searched in the search thread
        and the one before is on its way to the broker; then that one is settled, the previous
        one completed, and this one's search started.
        """
        pending = self.prepare(raw)
        self.complete()
        self.submit(pending)
        if len(raw) < KEEPING_UP_BELOW:
            # A small batch means the worker is keeping up with the stream: answer it now
            # (flushing sends at once) instead of when the next batch comes. Under a backlog
            # batches are full and stay pipelined.
            self.drain()

    def _produce(self, topic: str, value: bytes | None, key: bytes | None, partition: int = -1) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, partition)
                return
            except BufferError:  # the local queue is full: let librdkafka send some first
                self.producer.poll(0.05)

    def _flush(self) -> None:
        """Wait until every produced message is acknowledged; raise if any was refused."""
        started = time.perf_counter()
        try:
            self._wait_for_deliveries()
        finally:
            waited = time.perf_counter() - started
            self.stats.waited_for_broker_s += waited
            self.shell.metrics.broker_wait.inc(waited)

    def _wait_for_deliveries(self) -> None:
        while self.producer.flush(1.0) > 0:
            if self._deliveries.errors:
                break
            logger.warning("waiting for the broker to take %d message(s)", len(self.producer))
        if self._deliveries.errors:
            raise DeliveryFailed(f"{len(self._deliveries.errors)} message(s) not delivered, first: {self._deliveries.errors[0]}")

    def consumer_lag(self) -> dict[int, int]:
        """Per owned partition: the end offset librdkafka last heard of (no request) minus the
        next offset to settle (or, before the first batch, the consumer's position)."""
        owned = list(self.store.partitions)
        if not owned:
            return {}
        ends = {p: self.consumer.get_watermark_offsets(TopicPartition(self.events_topic, p), cached=True)[1]
                for p in owned}
        positions = {tp.partition: tp.offset for tp in self.consumer.position(
            [TopicPartition(self.events_topic, p) for p in owned])}
        settled = self._committed

        def processed(partition: int) -> int | None:
            if partition in settled:
                return settled[partition]
            position = positions.get(partition, -1)
            return position if position >= 0 else None

        return lag_of(ends, processed)

    def warm_up(self) -> None:
        """Search once at each batch shape before the first event, so that the first real
        batch does not pay for FAISS's and BLAS's first calls (hundreds of milliseconds), and
        fetch the output topics' metadata."""
        # The output topics' metadata (partitions, leaders) before the first list, so that the
        # first batch's messages leave at once rather than after a metadata round trip.
        kafka = self.settings.kafka
        for topic in (kafka.recommendations_topic, self.changelog, kafka.dlq_topic):
            try:
                self.producer.list_topics(topic, timeout=5.0)
            except KafkaException as exc:
                logger.warning("no metadata for %s yet (%s); the first messages to it will wait for it", topic, exc)
        model = self.model.current
        rng = np.random.default_rng(0)
        for n in (1, 64):
            queries = rng.standard_normal((n, model.dim)).astype(np.float32)
            search(model.index, queries, self.shell.params.k, [set()] * n)
        # A batch allocates hundreds of thousands of short-lived objects that reference
        # counting frees; the cyclic collector kept scanning them and the model's long-lived
        # objects. Long-lived objects are frozen out of its scans and the youngest generation
        # is collected every 20,000 allocations rather than 700 (docs/performance.md).
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)

    def run(self, *, max_seconds: float | None = None) -> WorkerStats:
        """Consume until SIGTERM/SIGINT (or ``max_seconds``); then commit, close and return the counters."""
        self.shell.lag_source = self.consumer_lag
        self.shell.start()
        self.warm_up()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._request_stop)
        self.consumer.subscribe([self.events_topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        started = time.monotonic()
        try:
            while not self._stopping:
                self.shell.tick(set(self.store.partitions), self._produce)
                batch = self.take()
                if batch:
                    self.process(batch)
                else:
                    self.drain()
                    self.commit(force=False)
                    self.producer.poll(0)
                if max_seconds is not None and time.monotonic() - started > max_seconds:
                    break
        finally:
            self.close()
        return self.stats

    def _request_stop(self, signum: int, frame: object) -> None:
        logger.info("signal %d: stopping after the current batch", signum)
        self._stopping = True

    def close(self) -> None:
        try:
            self.drain()
        finally:
            self._searcher.shutdown(wait=True)
        try:
            self.consumer.close()  # revokes (and commits) what this worker owns
        except RuntimeError:
            pass  # closed already
        self.producer.flush(10.0)
        self.store.close_all()
        self.shell.close()
