"""What the benchmark measures, and how: latencies, throughput, CPU, RSS and consumer lag.

The pure functions (:func:`percentiles`, :func:`answer_times`, :func:`sustained_rate`,
:func:`consumer_lag`, :func:`interpolate`, :func:`rate_series`) carry the arithmetic and are
unit-tested; the samplers are small threads around psutil and the Kafka admin API, and the
:class:`RecommendationCollector` reads the recommendations topic while a side runs.

Latency of an event = arrival of *its* recommendation at the bench's consumer - the event's
produce time (the wall time the bench handed it to the producer, which is also the message's
CreateTime). The worker coalesces a user's several events in one micro-batch into one
recommendation triggered by the last of them; the earlier events are answered by that same
recommendation, so they are counted with their own (longer) latency, not dropped.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamrec.kafka.security import client_config

logger = logging.getLogger(__name__)

#: Percentiles reported for every latency distribution.
PERCENTILES = (50, 95, 99)
_EVENT_ID_FIELD = b'"event_id":"'


# --------------------------------------------------------------------------- pure arithmetic


def percentiles(values: Sequence[float] | np.ndarray) -> dict[str, float | int | None]:
    """``{"p50", "p95", "p99", "mean", "max", "count"}`` of ``values`` (NaNs ignored).

    >>> percentiles([1.0, 2.0, 3.0, 4.0, 100.0])["p50"]
    3.0
    >>> percentiles([])["p99"] is None
    True
    """
    array = np.asarray(values, dtype=np.float64)
    array = array[~np.isnan(array)]
    if array.size == 0:
        return {f"p{p}": None for p in PERCENTILES} | {"mean": None, "max": None, "count": 0}
    out: dict[str, float | int | None] = {
        f"p{p}": float(v) for p, v in zip(PERCENTILES, np.percentile(array, PERCENTILES), strict=True)
    }
    out["mean"] = float(array.mean())
    out["max"] = float(array.max())
    out["count"] = int(array.size)
    return out


def answer_times(
    event_users: np.ndarray,
    rec_users: np.ndarray,
    rec_positions: np.ndarray,
    rec_arrivals: np.ndarray,
) -> np.ndarray:
    """When each event was answered: the arrival of the first recommendation of the event's
    user whose trigger event is at or after the event in the stream; NaN if none came.

    ``event_users[i]`` is the user (an integer code) of event ``i`` (events in stream order);
    a recommendation ``r`` is for user ``rec_users[r]``, triggered by event ``rec_positions[r]``,
    and arrived at ``rec_arrivals[r]``. A recommendation answers its trigger and that user's
    earlier, not yet answered events (those it coalesced).

    >>> answer_times(np.array([0, 1, 0, 0]), np.array([0, 1, 0]), np.array([2, 1, 3]), np.array([5.0, 6.0, 7.0])).tolist()
    [5.0, 6.0, 5.0, 7.0]
    """
    event_users = np.asarray(event_users, dtype=np.int64)
    answered = np.full(len(event_users), np.nan)
    if len(event_users) == 0 or len(rec_users) == 0:
        return answered
    stride = len(event_users) + 1
    rec_keys = np.asarray(rec_users, dtype=np.int64) * stride + np.asarray(rec_positions, dtype=np.int64)
    arrivals = np.asarray(rec_arrivals, dtype=np.float64)
    order = np.lexsort((arrivals, rec_keys))  # by key, duplicates (a re-sent trigger) earliest first
    rec_keys, arrivals = rec_keys[order], arrivals[order]
    sorted_users = rec_keys // stride
    event_keys = event_users * stride + np.arange(len(event_users))
    index = np.searchsorted(rec_keys, event_keys, side="left")
    found = index < len(rec_keys)
    found[found] &= sorted_users[index[found]] == event_users[found]
    answered[found] = arrivals[index[found]]
    return answered


def sustained_rate(answered_at: np.ndarray) -> tuple[float | None, float | None, float | None]:
    """``(events_per_s, t_first, t_last)`` from the times events were answered.

    The window runs from the first to the last answer; events answered at the first instant
    (the first batch, whose start we do not see) are left out of the count, so a slow start
    or a single batch does not inflate the rate.

    >>> sustained_rate(np.array([1.0, 1.0, 2.0, 3.0, np.nan]))
    (1.0, 1.0, 3.0)
    """
    times = np.asarray(answered_at, dtype=np.float64)
    times = times[~np.isnan(times)]
    if times.size < 2:
        return None, None, None
    t_first, t_last = float(times.min()), float(times.max())
    if t_last <= t_first:
        return None, t_first, t_last
    return float(np.count_nonzero(times > t_first) / (t_last - t_first)), t_first, t_last


def rate_series(times: np.ndarray, start: float, bin_s: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Events per second in bins of ``bin_s`` from ``start``: ``(bin_ends_s, rates)``."""
    times = np.asarray(times, dtype=np.float64)
    times = times[~np.isnan(times)] - start
    if times.size == 0:
        return np.zeros(0), np.zeros(0)
    n_bins = max(1, int(np.ceil(times.max() / bin_s)))
    counts, edges = np.histogram(times, bins=n_bins, range=(0.0, n_bins * bin_s))
    return edges[1:], counts / bin_s


def consumer_lag(
    end_offsets: Mapping[int, int], committed: Mapping[int, int | None], start_offsets: Mapping[int, int] | None = None
) -> int:
    """Messages not yet committed by a group, summed over partitions.

    A partition without a commit (``None`` or negative, Kafka's "no offset") counts from its
    start offset (0 unless given).

    >>> consumer_lag({0: 10, 1: 5}, {0: 7, 1: None})
    8
    """
    lag = 0
    for partition, end in end_offsets.items():
        done = committed.get(partition)
        if done is None or done < 0:
            done = (start_offsets or {}).get(partition, 0)
        lag += max(0, end - done)
    return lag


def interpolate(series: Sequence[tuple[float, float]], at: float) -> float | None:
    """Linear interpolation of a ``(t, value)`` series at time ``at`` (clamped to its ends).

    >>> interpolate([(0.0, 0.0), (2.0, 4.0)], 1.0)
    2.0
    """
    if not series:
        return None
    times = np.array([t for t, _ in series])
    values = np.array([v for _, v in series])
    return float(np.interp(at, times, values))


def extract_event_id(value: bytes) -> bytes | None:
    """The ``event_id`` of an encoded recommendation, without decoding the whole JSON.

    >>> extract_event_id(b'{"user_id":"u","items":[],"model_version":"v1","event_id":"e-7","event_ts":1.0}')
    b'e-7'
    """
    start = value.find(_EVENT_ID_FIELD)
    if start < 0:
        return None
    start += len(_EVENT_ID_FIELD)
    end = value.find(b'"', start)
    return value[start:end] if end > start else None


# --------------------------------------------------------------------------- process CPU and RSS


def peak_rss_bytes(pid: int) -> int | None:
    """The kernel's high-water mark of a process's resident memory (``VmHWM``), if readable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class ProcessSampler:
    """Samples a process's CPU seconds (user + system) and RSS every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        import psutil

        self.pid = pid
        self.interval = interval
        self._process = psutil.Process(pid)
        self.samples: list[tuple[float, float, int]] = []  # (wall time, cpu s, rss bytes)
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sample-{pid}", daemon=True)

    def start(self) -> ProcessSampler:
        self._thread.start()
        return self

    def sample(self) -> None:
        import psutil

        try:
            with self._process.oneshot():
                cpu = self._process.cpu_times()
                rss = self._process.memory_info().rss
        except psutil.Error:
            return
        self.samples.append((time.time(), cpu.user + cpu.system, rss))
        hwm = peak_rss_bytes(self.pid)
        self.peak_rss = max(self.peak_rss, rss, hwm or 0)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        """Take a last sample (call before the process exits) and stop."""
        self.sample()
        self._stop.set()
        self._thread.join(5)

    def cpu_between(self, t0: float, t1: float) -> float | None:
        series = [(t, cpu) for t, cpu, _ in self.samples]
        start, end = interpolate(series, t0), interpolate(series, t1)
        return None if start is None or end is None else end - start

    @property
    def cpu_total(self) -> float | None:
        return self.samples[-1][1] if self.samples else None


# --------------------------------------------------------------------------- consumer lag


class LagSampler:
    """Samples a consumer group's lag on one topic (committed offsets vs end offsets)."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int, interval: float = 0.5) -> None:
        from confluent_kafka.admin import AdminClient

        self.group = group
        self.topic = topic
        self.partitions = partitions
        self.interval = interval
        self._admin = AdminClient({**client_config(bootstrap), "log_level": 0})
        self.samples: list[tuple[float, int]] = []  # (wall time, lag)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lag-{group}", daemon=True)

    def start(self) -> LagSampler:
        self._thread.start()
        return self

    def measure(self) -> int:
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
        from confluent_kafka.admin import OffsetSpec

        parts = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        ends = self._admin.list_offsets({tp: OffsetSpec.latest() for tp in parts}, request_timeout=5)
        end_offsets = {tp.partition: future.result().offset for tp, future in ends.items()}
        request = [ConsumerGroupTopicPartitions(self.group, parts)]
        result = self._admin.list_consumer_group_offsets(request, request_timeout=5)[self.group].result()
        committed = {tp.partition: tp.offset for tp in result.topic_partitions if tp.error is None}
        return consumer_lag(end_offsets, committed)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.time(), self.measure()))
            except Exception as exc:  # noqa: BLE001 - a missed sample is not a failed run
                logger.debug("lag sample of %s failed: %s", self.group, exc)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


# --------------------------------------------------------------------------- recommendations


@dataclass
class Arrivals:
    """What the collector saw: per recommendation, its trigger's event id and when it came."""

    event_ids: list[bytes] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    #: Kafka timestamp (ms) of each recommendation message (CreateTime: when the worker sent it).
    timestamps_ms: list[int] = field(default_factory=list)
    #: Raw values of the recommendations triggered by the events in ``keep``.
    kept: dict[bytes, bytes] = field(default_factory=dict)


class RecommendationCollector:
    """Reads a recommendations topic from the start in a thread until every expected trigger
    (each user's last event) has been answered, or :meth:`stop`.

    Each message is stamped with the wall time the consumer handed it over; only the event id
    is parsed during the run (:func:`extract_event_id`), the rest is decoded afterwards, so
    the instrument takes little CPU from the process it measures.
    """

    def __init__(
        self, bootstrap: str, topic: str, partitions: int, expected: Iterable[bytes], *, keep: Iterable[bytes] = ()
    ) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.topic = topic
        self._consumer = Consumer(
            {
                **client_config(bootstrap),
                "group.id": f"bench-collector-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                # Like the worker: a fetch waits up to 10 ms for 64 kB rather than returning each
                # trickle (every fetch costs the broker on the same two cores ~0.5 ms of CPU).
                "fetch.wait.max.ms": 5,
                "fetch.min.bytes": 64 * 1024,
                "log_level": 0,
            }
        )
        # Partitions assigned, not subscribed: no group coordination (librdkafka 2.16 can crash
        # in its group code while a fresh broker is still loading its coordinator).
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        self._waiting = set(expected)
        self._keep = set(keep)
        self.expected = len(self._waiting)
        self.data = Arrivals()
        self.done = threading.Event()
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"collect-{topic}", daemon=True)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def start(self) -> RecommendationCollector:
        self._thread.start()
        return self

    def _run(self) -> None:
        from confluent_kafka import KafkaError

        data, waiting, keep = self.data, self._waiting, self._keep
        try:
            while not self._stop.is_set():
                batch = self._consumer.consume(2000, timeout=0.005)
                if not batch:
                    continue
                now = time.time()
                for message in batch:
                    if message.error():
                        if message.error().code() not in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                            logger.warning("collector on %s: %s", self.topic, message.error())
                        continue
                    value = message.value()
                    event_id = extract_event_id(value)
                    if event_id is None:
                        continue
                    data.event_ids.append(event_id)
                    data.arrivals.append(now)
                    data.timestamps_ms.append(message.timestamp()[1])
                    if event_id in keep:
                        data.kept[event_id] = value
                    if waiting:
                        waiting.discard(event_id)
                        if not waiting:
                            self.done.set()
        except BaseException as exc:  # noqa: BLE001 - reported by the runner
            self.error = exc
            self.done.set()
        finally:
            self._consumer.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


# --------------------------------------------------------------------------- state per user


def table_footprint(data_dir: Path) -> dict[str, float | int | None]:
    """Users in a stopped worker's ``user-states`` table, the mean size of one encoded state,
    and the table's RocksDB files on disk per user (compression and SST overhead included)."""
    from rocksdict import AccessType, Options, Rdict

    from streams.tables import FAUST_RESERVED_PREFIX, table_partitions

    users = 0
    state_bytes = 0
    disk_bytes = 0
    for path in table_partitions(data_dir):
        disk_bytes += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            for key, value in db.items():
                if value is not None and not key.startswith(FAUST_RESERVED_PREFIX):
                    users += 1
                    state_bytes += len(value)
        finally:
            db.close()
    return {
        "users": users,
        "state_bytes_per_user": round(state_bytes / users, 1) if users else None,
        "disk_bytes_per_user": round(disk_bytes / users, 1) if users else None,
        "disk_mb": round(disk_bytes / 2**20, 1),
    }
