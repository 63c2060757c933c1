"""Prometheus metrics of a worker (both engines) and of the trainer; see docs/operations.md.

Each :class:`WorkerMetrics` has its own registry (a test may run several workers in one
process) and is served on ``/metrics`` by :func:`serve` (a daemon thread, stdlib HTTP server).

The hot path stays cheap: the shell counts once per *batch* (counter increments of a batch's
totals, one observation per histogram), and the event-to-list latencies of a batch's lists go
into :class:`BulkHistogram` in one numpy call. What is not a count (model version and age,
table sizes on disk, catalog sizes, consumer lag) is gauged at most once a second by the
shell's ``tick`` or computed when Prometheus scrapes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from streamrec.contract import EVENT_TYPES

logger = logging.getLogger(__name__)

#: Bucket bounds (seconds) of the event-to-list latency: produce time of the event message to
#: the moment its list is with the broker (batch engine) or handed to the producer (Faust).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Bucket bounds of the events per micro-batch.
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 20_000, 50_000)
#: Bucket bounds (seconds) of one batch's FAISS search.
SEARCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class BulkHistogram(Collector):
    """A histogram fed a whole array at a time (``observe_many``): one ``searchsorted`` and one
    ``bincount`` per batch instead of a Python call per value. Exposed like any histogram."""

    def __init__(self, name: str, documentation: str, buckets: Iterable[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = np.asarray(sorted(buckets), dtype=np.float64)
        self._counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # the last one: above every bound
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: np.ndarray) -> None:
        if not len(values):
            return
        # side="left": a value equal to a bound belongs to that bound's bucket (le is <=).
        counts = np.bincount(np.searchsorted(self.bounds, values, side="left"), minlength=len(self._counts))
        total = float(values.sum())
        with self._lock:
            self._counts += counts
            self._sum += total

    def collect(self) -> Iterable[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self._counts)
            total = self._sum
        buckets = [(repr(float(b)), int(c)) for b, c in zip(self.bounds, cumulative[:-1], strict=True)]
        buckets.append(("+Inf", int(cumulative[-1])))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], buckets, total)
        yield family


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (0 when it does not exist); files vanishing while
    RocksDB compacts are skipped."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


class TableSizes(Collector):
    """``streamrec_table_bytes{table}``, measured on disk when scraped: the users' states
    (every ``user-states-<partition>.db`` of the worker) and the catalog table."""

    def __init__(self, tables_dir: Path) -> None:
        self.tables_dir = Path(tables_dir)

    def sizes(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        if self.tables_dir.is_dir():
            for entry in self.tables_dir.iterdir():
                if entry.name.endswith(".db"):
                    table = "catalog" if entry.name == "catalog.db" else entry.name.rsplit("-", 1)[0]
                    sizes[table] = sizes.get(table, 0) + folder_bytes(entry)
        return sizes

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily("streamrec_table_bytes", "Bytes on disk of a worker's RocksDB table (all its partitions).",
                                   labels=["table"])
        for table, size in sorted(self.sizes().items()):
            family.add_metric([table], size)
        yield family


class WorkerMetrics:
    """Every metric of one worker; the shell feeds it (see :class:`streams.shell.WorkerShell`)."""

    def __init__(self, tables_dir: Path | None = None) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.events = Counter("streamrec_events", "Events applied to users' vectors, by event type.", ["type"],
                              registry=registry)
        self._events_by_code = [self.events.labels(t) for t in EVENT_TYPES]
        self.dead_letters = Counter("streamrec_dead_letters", "Messages sent to the dead-letter topic, by reason.",
                                    ["reason"], registry=registry)
        self.lists = Counter("streamrec_lists", "Recommendation lists sent.", registry=registry)
        self.duplicates = Counter("streamrec_duplicates_skipped",
                                  "Events skipped as already applied (replayed or re-sent).", registry=registry)
        self.batches = Counter("streamrec_batches", "Micro-batches processed.", registry=registry)
        self.erasures = Counter("streamrec_erasures", "Users' states deleted by an erasure request.",
                                registry=registry)
        self.batch_size = Histogram("streamrec_batch_size_events", "Messages per micro-batch.",
                                    buckets=BATCH_SIZE_BUCKETS, registry=registry)
        self.search = Histogram("streamrec_search_seconds", "Seconds of one micro-batch's FAISS search.",
                                buckets=SEARCH_BUCKETS, registry=registry)
        self.latency = BulkHistogram(
            "streamrec_event_to_list_seconds",
            "Seconds from the produce time (Kafka timestamp) of the event that triggered a list to the list being "
            "with the broker (batch engine) or handed to the producer (faust engine).",
            LATENCY_BUCKETS,
        )
        registry.register(self.latency)
        self.model_info = Gauge("streamrec_model_info", "1 for the model version this worker serves.", ["version"],
                                registry=registry)
        self.model_age = Gauge("streamrec_model_age_seconds", "Seconds since the served model version was trained.",
                               registry=registry)
        self.index_recall = Gauge("streamrec_index_recall_at_10", "recall@10 against exact search of the served index, "
                                  "measured when the model was built (1 for an exact index).", registry=registry)
        self.index_effort = Gauge("streamrec_index_search_effort", "The served index's calibrated IVF nprobe / HNSW "
                                  "efSearch (0: exact index).", registry=registry)
        self.catalog_items = Gauge("streamrec_catalog_items", "Items in the catalog table.", registry=registry)
        self.unavailable_items = Gauge("streamrec_catalog_unavailable_items",
                                       "Catalog items marked unavailable (never recommended).", registry=registry)
        self.lag = Gauge("streamrec_consumer_lag", "Events of an owned events partition not yet processed "
                         "(end offset minus processed offset).", ["partition"], registry=registry)
        self.broker_wait = Counter("streamrec_broker_wait_seconds",
                                   "Seconds spent waiting for the broker to acknowledge output (batch engine).",
                                   registry=registry)
        if tables_dir is not None:
            registry.register(TableSizes(tables_dir))
        self._model_version: str | None = None
        self._lag_partitions: set[int] = set()

    # -- per batch ----------------------------------------------------------------------------

    def record_batch(self, n_messages: int, n_lists: int, n_duplicates: int, type_counts: np.ndarray | None,
                     latencies: np.ndarray | None) -> None:
        self.batches.inc()
        self.batch_size.observe(n_messages)
        if n_lists:
            self.lists.inc(n_lists)
        if n_duplicates:
            self.duplicates.inc(n_duplicates)
        if type_counts is not None:
            for child, count in zip(self._events_by_code, type_counts.tolist(), strict=False):
                if count:
                    child.inc(count)
        if latencies is not None:
            self.latency.observe_many(latencies)

    # -- gauges, at most once a second --------------------------------------------------------

    def set_model(self, version: str, created_at: float | None, now: float | None = None,
                  search: Mapping[str, object] | None = None) -> None:
        """The served model's version and age, and (``search``: meta.json's calibration of its
        index) the index's measured recall@10 and search effort."""
        if search:
            self.index_recall.set(float(search.get("recall_at_10") or 0.0))  # type: ignore[arg-type]
            self.index_effort.set(float(search.get("effort") or 0))  # type: ignore[arg-type]
        if version != self._model_version:
            if self._model_version is not None:
                self.model_info.remove(self._model_version)
            self.model_info.labels(version).set(1)
            self._model_version = version
        if created_at is not None:
            self.model_age.set(max(0.0, (time.time() if now is None else now) - created_at))

    def set_lag(self, lag: Mapping[int, int]) -> None:
        for gone in self._lag_partitions - set(lag):
            self.lag.remove(str(gone))
        for partition, value in lag.items():
            self.lag.labels(str(partition)).set(max(0, value))
        self._lag_partitions = set(lag)


def serve(registry: CollectorRegistry, port: int, *, what: str = "metrics", addr: str = "0.0.0.0") -> int | None:
    """Serve ``registry`` on ``http://addr:port/metrics`` in a daemon thread; returns the port,
    or None when ``port`` is 0 (disabled) or taken (logged: metrics must not stop the service)."""
    if not port:
        return None
    try:
        start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        logger.warning("%s: cannot listen on port %d (%s); no /metrics", what, port, exc)
        return None
    logger.info("%s on http://%s:%d/metrics", what, addr, port)
    return port


def lag_of(ends: Mapping[int, int], processed: Callable[[int], int | None]) -> dict[int, int]:
    """Lag per partition: end offset minus the next offset to process (``processed(p)``;
    None: nothing known, the partition is skipped). Negative values (an end read before the
    last batch) are 0.

    >>> lag_of({0: 10, 1: 5, 2: 7}, {0: 4, 1: 5}.get)
    {0: 6, 1: 0}
    """
    lag = {}
    for partition, end in ends.items():
        position = processed(partition)
        if position is not None and end >= 0:
            lag[partition] = max(0, end - position)
    return lag
