"""Recommendations on request: ``streamrec serve``, an HTTP JSON API over a read replica.

A serve instance is a **read replica** of everything the workers decide with (see
``docs/serving.md``): it follows

* the workers' compacted user-states changelog (``changelog_topic(app_id)``), every partition,
  assigned (no consumer group), into an in-memory dict of encoded states: any instance answers
  for any user, whichever worker owns the user's partition;
* the catalog (:class:`streams.catalog.LiveCatalog`, in its own RocksDB under the instance's data
  dir) and the model (:class:`streams.model.ModelHolder`, newer versions adopted as the worker
  adopts them);
* the events topic, only to count trending items (the backfill) as a worker does.

A background thread (:class:`Replica`) applies what is new under a lock; the aiohttp handlers
take the same lock to answer, so an answer sees one consistent state of the replica. Answers
are computed with the worker's own core functions: the user's vector (rebuilt with
:func:`streamrec.core.batch.rebuild_state` when its model version differs), the live item
side's search (:meth:`streamrec.core.items.LiveItems.view`) and the worker's finishing rules
(:func:`streamrec.core.batch.finish_batch`, :meth:`streamrec.core.items.LiveItems.finish_list`),
so a user's answer equals the worker's latest list for the same state.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from aiohttp import web

from streamrec.contract import MAX_STRING_LENGTH
from streamrec.core.batch import (
    BatchResult,
    Message,
    PreparedBatch,
    decode_batch,
    finish_batch,
    rebuild_state,
)
from streamrec.core.interest import InterestParams
from streams.shell import interest_params
from streamrec.core.diversity import POOL
from streamrec.core.repeat import REPEAT_EVENTS
from streamrec.core.items import ItemsModel, LiveItems
from streamrec.core.state import RecentEvent, StateDecodeError, UserState, decode_state

logger = logging.getLogger(__name__)

#: The bounds of ``k``.
MIN_K, MAX_K = 1, 100
DEFAULT_K = 10
#: Most item ids one ``exclude`` may name.
MAX_EXCLUDE = 1000
#: At start, trending counts are warmed up from at most this many of each events partition's newest events.
TRENDING_WARMUP_EVENTS = 50_000
#: Once caught up, the replica applies what it read at most this often (seconds).
APPLY_EVERY_S = 0.01
#: How many changelog delays the freshness percentiles are computed over.
FRESHNESS_WINDOW = 10_000


# --------------------------------------------------------------------------- requests


class BadRequest(Exception):
    """A request the API refuses: the HTTP status, a short error code and a sentence."""

    def __init__(self, error: str, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail
        self.status = status


def parse_k(raw: str | None) -> int:
    """``k`` of a query string: default 10, a whole number in 1..100.

    >>> parse_k(None), parse_k("25")
    (10, 25)
    >>> parse_k("0")
    Traceback (most recent call last):
    ...
    streams.serve.BadRequest: k must be between 1 and 100, got 0
    """
    if raw is None:
        return DEFAULT_K
    try:
        k = int(raw.strip())
    except ValueError:
        raise BadRequest("invalid_k", f"k must be a whole number between {MIN_K} and {MAX_K}, got {raw!r}") from None
    if not MIN_K <= k <= MAX_K:
        raise BadRequest("k_out_of_range", f"k must be between {MIN_K} and {MAX_K}, got {k}")
    return k


def parse_id(raw: str, what: str) -> str:
    """A user or item id: not empty or blank, at most ``MAX_STRING_LENGTH`` characters."""
    if not raw or not raw.strip():
        raise BadRequest(f"invalid_{what}", f"{what} must not be empty")
    if len(raw) > MAX_STRING_LENGTH:
        raise BadRequest(f"invalid_{what}", f"{what} has {len(raw)} characters, the limit is {MAX_STRING_LENGTH}")
    return raw


def parse_exclude(raw: str | None) -> list[str]:
    """``exclude=a,b``: item ids, comma-separated (empty parts ignored)."""
    if raw is None:
        return []
    ids = [part.strip() for part in raw.split(",") if part.strip()]
    if len(ids) > MAX_EXCLUDE:
        raise BadRequest("invalid_exclude", f"exclude names {len(ids)} items, the limit is {MAX_EXCLUDE}")
    return [parse_id(item_id, "exclude") for item_id in ids]


def parse_category(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not raw.strip() or len(raw) > MAX_STRING_LENGTH:
        raise BadRequest("invalid_category", f"category must be 1 to {MAX_STRING_LENGTH} characters, got {len(raw)}")
    return raw.strip()


# --------------------------------------------------------------------------- answers


class _Trigger(NamedTuple):
    """What :func:`finish_batch` reads of a list's triggering event."""

    event_id: str
    ts: float


class _OutsideOr:
    """Rows excluded from a filtered answer: the excluded ones and every row outside ``only``."""

    def __init__(self, only: np.ndarray, excluded: Collection[int]) -> None:
        self.only = only
        self.excluded = excluded

    def __contains__(self, row: object) -> bool:
        return row in self.excluded or not (0 <= row < len(self.only) and self.only[row])  # type: ignore[operator]

    def __len__(self) -> int:
        return len(self.excluded)

    def __iter__(self):  # noqa: ANN204
        return iter(self.excluded)


def _answer(items: LiveItems, query: np.ndarray, k: int, excluded: set[int], recent: Sequence[RecentEvent],
            only: np.ndarray | None, user_id: str, trigger: _Trigger,
            params: InterestParams | None = None) -> list[dict[str, Any]]:
    """Search and finish one list as :func:`finish_batch` does for the worker."""
    view = items.view(only)
    queries = np.ascontiguousarray(query, np.float32).reshape(1, -1)
    diversity = 0.0 if params is None else params.diversity
    rows, scores = view.search(queries, k * POOL if diversity > 0 else k, [excluded])
    finish_excluded = excluded if only is None else _OutsideOr(only, excluded)
    repeat_weight = 0.0 if params is None else params.repeat_weight  # similar(): no repeats
    prepared = PreparedBatch(BatchResult(), [user_id], queries, [finish_excluded], [trigger],  # type: ignore[list-item]
                             items, k, [list(recent)], view, repeat_weight, diversity)
    (rec,) = finish_batch(prepared, rows, scores).recommendations
    return [{"item_id": i.item_id, "score": float(i.score), "source": i.source} for i in rec.items]


def _rows(items: LiveItems, item_ids: Sequence[str]) -> set[int]:
    return {row for item_id in item_ids if (row := items.row_of.get(item_id)) is not None}


def recommend(items: LiveItems, user_id: str, state: UserState | None, *, k: int = DEFAULT_K,
              params: InterestParams | None = None, exclude: Sequence[str] = (),
              category: str | None = None) -> dict[str, Any]:
    """A user's answer from their state (None: no state yet, trending items) with the worker's
    rules: unavailable and removed items never, purchased items excluded (except repeat-purchase
    categories), exactly ``k`` with trending backfill when k eligible items exist. ``category``
    keeps items whose category path holds that level (:class:`BadRequest` when none does);
    ``exclude`` removes those item ids."""
    params = params or InterestParams()
    only = None
    if category is not None:
        only = items.category_mask(category)
        if only is None:
            raise BadRequest("unknown_category", f"no item's category path holds {category!r}")
    if state is not None and state.model_version != items.version:
        state = rebuild_state(state, items, params)
    if state is None:
        vector = np.zeros(items.dim, np.float32)
        excluded: set[int] = set()
        recent: Sequence[RecentEvent] = ()
    else:
        vector = state.vector
        excluded = items.exclusions(state.purchased)
        recent = state.recent[-REPEAT_EVENTS:]
    excluded |= _rows(items, exclude)
    event_id = state.recent[-1].event_id if state is not None and state.recent else None
    trigger = _Trigger(event_id or "", (state.last_ts or 0.0) if state is not None else 0.0)
    answer = _answer(items, vector, k, excluded, recent, only, user_id, trigger, params)
    return {"user_id": user_id, "items": answer, "model_version": items.version, "state_event_id": event_id}


def similar(items: LiveItems, item_id: str, *, k: int = DEFAULT_K) -> dict[str, Any] | None:
    """Item-to-item neighbours: the search with the item's context vector as the query, the item
    itself excluded, finished with the worker's rules (its category's trending items fill a
    short list). None for an item the replica does not know."""
    row = items.row_of.get(item_id)
    if row is None:
        return None
    query = items.context[row].copy()
    answer = _answer(items, query, k, {row}, [row], None, item_id, _Trigger("", 0.0))
    return {"item_id": item_id, "items": answer, "model_version": items.version}


# --------------------------------------------------------------------------- the replica


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not len(values):
        return {"p50": None, "p95": None, "p99": None, "max": None}
    array = np.asarray(values) * 1000.0
    return {name: round(float(np.percentile(array, q)), 1) for name, q in (("p50", 50), ("p95", 95), ("p99", 99))} | {
        "max": round(float(array.max()), 1)}


@dataclass
class ReplicaStatus:
    ready: bool
    model_loaded: bool
    catalog_restored: bool
    changelog_caught_up: bool
    model_version: str | None
    users: int
    changelog_behind: int
    error: str | None


class Replica:
    """The serve instance's copy of the user states, the catalog and the model, kept fresh by a
    background thread. Read it under :attr:`lock`."""

    def __init__(self, settings, params: InterestParams | None = None) -> None:  # noqa: ANN001 - Settings
        self.settings = settings
        self.params = params or interest_params(settings)
        self.changelog = _changelog_topic(settings)
        self.lock = threading.Lock()
        self.states: dict[str, bytes] = {}
        self.items: LiveItems | None = None
        self.model = None
        self.catalog = None
        self.catalog_restored = False
        self.error: str | None = None
        self._ends: dict[int, int] | None = None  # changelog end offsets when it was first assigned
        self._positions: dict[int, int] = {}  # next changelog offset per partition
        self._events_assigned = False
        self._changelog_absent = False  # no worker has created the changelog yet: nothing to catch up
        self._consumer = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Seconds from the worker writing a state to this replica applying it (after catch-up).
        self.delays: deque[float] = deque(maxlen=FRESHNESS_WINDOW)
        #: Recommendation requests: seconds waiting for the lock, and in the handler in all.
        self.lock_waits: deque[float] = deque(maxlen=FRESHNESS_WINDOW)
        self.request_times: deque[float] = deque(maxlen=FRESHNESS_WINDOW)

    # -- status --------------------------------------------------------------------------------

    @property
    def changelog_caught_up(self) -> bool:
        if self._ends is None:
            return self._changelog_absent
        return all(self._positions.get(p, 0) >= end for p, end in self._ends.items())

    def status(self) -> ReplicaStatus:
        behind = 0 if self._ends is None else sum(max(0, end - self._positions.get(p, 0)) for p, end in self._ends.items())
        model_loaded = self.items is not None
        caught_up = self.changelog_caught_up
        return ReplicaStatus(model_loaded and self.catalog_restored and caught_up and self.error is None, model_loaded,
                             self.catalog_restored, caught_up, self.items.version if self.items else None, len(self.states),
                             behind, self.error)

    def freshness(self) -> dict[str, float | None]:
        """Percentiles (ms) of the changelog's delay: a state's write by the worker to its
        application here."""
        return _percentiles(list(self.delays))

    def record_request(self, lock_wait_s: float, total_s: float) -> None:
        """One recommendation request's time waiting for the lock and in all (inside the handler)."""
        self.lock_waits.append(lock_wait_s)
        self.request_times.append(total_s)

    def state(self, user_id: str) -> UserState | None:
        raw = self.states.get(user_id)
        if raw is None:
            return None
        try:
            return decode_state(raw)
        except StateDecodeError:
            logger.exception("unreadable state for user %r; answered as a new user", user_id)
            return None

    # -- following -------------------------------------------------------------------------------

    def start(self) -> Replica:
        self._thread = threading.Thread(target=self._run, name="replica", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        try:
            self._load()
            self._follow()
        except Exception as exc:  # the API keeps answering /healthz and says why it is not ready
            logger.exception("the replica stopped following")
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._close()

    def _load(self) -> None:
        """The model, the catalog restored from its topic, the consumer of changelog and events."""
        import faiss
        from confluent_kafka import Consumer

        from streamrec.kafka.admin import COMPACTED, ensure_topics
        from streams.catalog import LiveCatalog
        from streams.model import ModelHolder

        faiss.omp_set_num_threads(self.settings.index.search_threads)
        kafka = self.settings.kafka
        ensure_topics(kafka.bootstrap, {kafka.items_topic: kafka.partitions}, configs={kafka.items_topic: COMPACTED})
        self.model = ModelHolder.from_settings(self.settings)
        self.catalog = LiveCatalog.from_settings(self.settings)
        items = self.catalog.start(self.model.current)
        with self.lock:
            self.items = items
            self.catalog_restored = True
        self._consumer = Consumer({
            "bootstrap.servers": kafka.bootstrap,
            "group.id": f"serve-{uuid.uuid4().hex[:8]}",  # never joined: partitions are assigned
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
            "log_level": 4,
        })

    def _partitions(self, topic: str) -> list[int] | None:
        metadata = self._consumer.list_topics(topic, timeout=5).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            return None
        return sorted(metadata.partitions)

    def _assign_missing(self) -> None:
        """Assign the changelog (from the beginning) and the events topic (its newest events,
        for trending) once they exist; a changelog no worker has created yet counts as empty."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        if self._ends is None:
            partitions = self._partitions(self.changelog)
            if partitions is None:
                self._changelog_absent = True
                return
            self._changelog_absent = False
            self._ends = {p: self._consumer.get_watermark_offsets(TopicPartition(self.changelog, p), timeout=10)[1]
                          for p in partitions}
            self._consumer.incremental_assign([TopicPartition(self.changelog, p, OFFSET_BEGINNING) for p in partitions])
            logger.info("following changelog %s: %d partition(s), %d record(s) to catch up", self.changelog,
                        len(partitions), sum(self._ends.values()))
        if not self._events_assigned:
            topic = self.settings.kafka.events_topic
            partitions = self._partitions(topic)
            if partitions is None:
                return
            starts = []
            for p in partitions:
                low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                starts.append(TopicPartition(topic, p, max(low, high - TRENDING_WARMUP_EVENTS)))
            self._consumer.incremental_assign(starts)
            self._events_assigned = True

    def _follow(self) -> None:
        from confluent_kafka import KafkaError, KafkaException

        worker = self.settings.worker
        next_check = 0.0
        next_model = time.monotonic() + worker.model_poll_s
        events_topic = self.settings.kafka.events_topic
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_check and (self._ends is None or not self._events_assigned):
                self._assign_missing()
                next_check = now + 1.0
            messages = self._consumer.consume(10_000, timeout=0.05) if (self._ends or self._events_assigned) else []
            if not messages and self._ends is None:
                time.sleep(0.05)
            was_caught_up = self.changelog_caught_up
            states: dict[str, bytes | None] = {}
            events: list[Message] = []
            written: list[float] = []
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        if message.topic() == self.changelog:
                            p = message.partition()
                            self._positions[p] = max(self._positions.get(p, 0), message.offset())
                        continue
                    raise KafkaException(error)
                if message.topic() == events_topic:
                    events.append(Message(message.key(), message.value(), message.partition(), message.offset()))
                    continue
                key = message.key()
                if key is None:
                    continue
                states[key.decode()] = message.value()
                self._positions[message.partition()] = message.offset() + 1
                kind, ms = message.timestamp()
                if ms > 0:
                    written.append(ms / 1000.0)
            with self.lock:
                for user_id, raw in states.items():
                    if raw is None:
                        self.states.pop(user_id, None)
                    else:
                        self.states[user_id] = raw
                if events:
                    self._observe(events)
                self.catalog.poll()
            if was_caught_up and written:
                applied = time.time()
                self.delays.extend(applied - ts for ts in written)
            if now >= next_model:
                self._adopt_newer_model()
                next_model = time.monotonic() + worker.model_poll_s
            if messages and was_caught_up:
                # Coalesce: apply at most every APPLY_EVERY_S, so that a steady trickle of states
                # does not take the lock (and the GIL) hundreds of times a second from the handlers.
                self._stop.wait(APPLY_EVERY_S)

    def _observe(self, messages: list[Message]) -> None:
        """Count events in the trending counts, as the worker's item side does."""
        from streamrec.contract import EVENT_TYPE_CODES

        accepted, _ = decode_batch(messages)
        if not accepted:
            return
        events = [event for _, event in accepted]
        rows = self.items.rows_for(events)
        codes = np.fromiter((EVENT_TYPE_CODES[e.type] for e in events), np.int64, count=len(events))
        ts = np.fromiter((e.ts for e in events), np.float64, count=len(events))
        self.items.observe(rows, codes, ts)

    def _adopt_newer_model(self) -> None:
        """Swap in a newer model version like the worker: its item side is built beside the
        served one and swapped in under the lock."""
        if not self.model.reload_if_newer():
            return
        catalog = self.catalog
        items = LiveItems(ItemsModel.from_artifact(self.model.current), catalog.rules, catalog.table.items)
        with self.lock:
            catalog.items = items
            self.items = items
        logger.info("serving model %s", items.version)

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            except RuntimeError:
                pass
        if self.catalog is not None:
            self.catalog.close()


def _changelog_topic(settings) -> str:  # noqa: ANN001
    from streams.tables import changelog_topic

    return changelog_topic(settings.worker.app_id)


# --------------------------------------------------------------------------- the HTTP API


def _error(status: int, error: str, detail: str) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status)


@web.middleware
async def _errors(request: web.Request, handler):  # noqa: ANN001, ANN202
    """Every error is a JSON body ``{"error", "detail"}``."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return _error(exc.status, exc.error, exc.detail)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        names = {404: "not_found", 405: "method_not_allowed"}
        return _error(exc.status, names.get(exc.status, "http_error"),
                      f"{request.method} {request.path}: {exc.reason}")
    except Exception:  # noqa: BLE001 - a bug must not look like an empty answer
        logger.exception("error answering %s %s", request.method, request.path_qs)
        return _error(500, "internal_error", "the server failed to answer; see its log")


REPLICA_KEY = web.AppKey("replica", Replica)
METRICS_KEY = web.AppKey("metrics", object)


class ServeMetrics:
    """``streamrec serve``'s Prometheus metrics (docs/operations.md): requests and their latency
    by route and status, and the replica's state, read when Prometheus scrapes."""

    def __init__(self, replica: Replica) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("streamrec_http_requests", "HTTP requests answered, by route, method and status.",
                                ["route", "method", "status"], registry=registry)
        self.latency = Histogram("streamrec_http_request_duration_seconds", "Time to answer an HTTP request.",
                                 ["route"], registry=registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
        Gauge("streamrec_replica_users", "Users whose state the replica holds.", registry=registry
              ).set_function(lambda: len(replica.states))
        Gauge("streamrec_replica_changelog_behind", "Changelog records the replica has not read yet.",
              registry=registry).set_function(lambda: replica.status().changelog_behind or 0)
        Gauge("streamrec_replica_ready", "1 when the replica answers (model loaded, caught up).",
              registry=registry).set_function(lambda: 1.0 if replica.status().ready else 0.0)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


@web.middleware
async def _measured(request: web.Request, handler):  # noqa: ANN001, ANN202
    """Count every request and time it, by route (the pattern, not the ids) and status."""
    started = time.perf_counter()
    response = await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    metrics = request.app[METRICS_KEY]
    metrics.requests.labels(route, request.method, str(response.status)).inc()
    metrics.latency.labels(route).observe(time.perf_counter() - started)
    return response


def _ready_items(replica: Replica) -> LiveItems:
    status = replica.status()
    if not status.ready:
        raise BadRequest("not_ready", _not_ready_detail(status), status=503)
    return replica.items  # type: ignore[return-value]


def _not_ready_detail(status: ReplicaStatus) -> str:
    if status.error:
        return f"the replica stopped following its topics: {status.error}"
    if not status.model_loaded:
        return "the model is not loaded yet"
    if not status.catalog_restored:
        return "the catalog is still being restored"
    return f"the replica is still catching up with the changelog ({status.changelog_behind} record(s) behind)"


async def recommendations(request: web.Request) -> web.Response:
    replica = request.app[REPLICA_KEY]
    user_id = parse_id(request.match_info["user_id"], "user_id")
    k = parse_k(request.query.get("k"))
    exclude = parse_exclude(request.query.get("exclude"))
    category = parse_category(request.query.get("category"))
    started = time.perf_counter()
    with replica.lock:
        locked = time.perf_counter()
        items = _ready_items(replica)
        answer = recommend(items, user_id, replica.state(user_id), k=k, params=replica.params, exclude=exclude,
                           category=category)
    replica.record_request(locked - started, time.perf_counter() - started)
    return web.json_response(answer)


async def similar_items(request: web.Request) -> web.Response:
    replica = request.app[REPLICA_KEY]
    item_id = parse_id(request.match_info["item_id"], "item_id")
    k = parse_k(request.query.get("k"))
    with replica.lock:
        answer = similar(_ready_items(replica), item_id, k=k)
    if answer is None:
        raise BadRequest("unknown_item", f"item {item_id!r} is neither in the model nor in the catalog", status=404)
    return web.json_response(answer)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    replica = request.app[REPLICA_KEY]
    status = replica.status()
    body = {"ready": status.ready, "model_loaded": status.model_loaded, "model_version": status.model_version,
            "catalog_restored": status.catalog_restored, "changelog_caught_up": status.changelog_caught_up,
            "changelog_behind": status.changelog_behind, "users": status.users,
            "changelog_delay_ms": replica.freshness(),
            "handler_ms": _percentiles(list(replica.request_times)),
            "lock_wait_ms": _percentiles(list(replica.lock_waits))}
    if not status.ready:
        body["detail"] = _not_ready_detail(status)
    return web.json_response(body, status=200 if status.ready else 503)


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS_KEY].text(),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def make_app(replica: Replica) -> web.Application:
    app = web.Application(middlewares=[_measured, _errors])
    app[REPLICA_KEY] = replica
    app[METRICS_KEY] = ServeMetrics(replica)
    app.router.add_get("/v1/users/{user_id}/recommendations", recommendations)
    app.router.add_get("/v1/items/{item_id}/similar", similar_items)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/metrics", metrics)
    return app


def serve(settings, *, host: str = "127.0.0.1", port: int = 8080) -> None:  # noqa: ANN001 - Settings
    """Start the replica and answer HTTP until interrupted."""
    import faiss

    # OpenMP's thread count is per thread: set it in the thread that searches (the handlers'). On a
    # busy machine FAISS's default team (every core, spin-waiting) costs far more than it gives.
    faiss.omp_set_num_threads(settings.index.search_threads)
    replica = Replica(settings).start()
    try:
        web.run_app(make_app(replica), host=host, port=port, print=None, handle_signals=True, access_log=None)
    finally:
        replica.stop()


# --------------------------------------------------------------------------- OpenAPI


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


_K_PARAM = {"name": "k", "in": "query", "required": False, "description": "How many items (1..100).",
            "schema": {"type": "integer", "minimum": MIN_K, "maximum": MAX_K, "default": DEFAULT_K}}
_ID = {"type": "string", "minLength": 1, "maxLength": MAX_STRING_LENGTH}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "streamrec serve", "version": "1",
             "description": "Recommendations on request from a read replica of the workers' user states, catalog and "
                            "model (docs/serving.md)."},
    "paths": {
        "/v1/users/{user_id}/recommendations": {"get": {
            "summary": "A user's top k items from their current state, with the worker's rules.",
            "parameters": [
                {"name": "user_id", "in": "path", "required": True, "schema": _ID},
                _K_PARAM,
                {"name": "category", "in": "query", "required": False, "schema": _ID,
                 "description": "Only items whose catalog category path holds this level (case-insensitive)."},
                {"name": "exclude", "in": "query", "required": False, "schema": {"type": "string"},
                 "description": f"Item ids never to return, comma-separated (at most {MAX_EXCLUDE})."},
            ],
            "responses": {
                "200": {"description": "The list (a user without state gets trending items).",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/UserAnswer"}}}},
                "400": _error_response("Bad k, id, exclude or category (error: invalid_k, k_out_of_range, "
                                       "invalid_user_id, invalid_exclude, invalid_category, unknown_category)."),
                "503": _error_response("The replica is not ready (error: not_ready)."),
            }}},
        "/v1/items/{item_id}/similar": {"get": {
            "summary": "Item-to-item neighbours: the item's context vector as the query, the item itself excluded.",
            "parameters": [{"name": "item_id", "in": "path", "required": True, "schema": _ID}, _K_PARAM],
            "responses": {
                "200": {"description": "The neighbours.",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ItemAnswer"}}}},
                "400": _error_response("Bad k or id."),
                "404": _error_response("Unknown item (error: unknown_item)."),
                "503": _error_response("The replica is not ready (error: not_ready)."),
            }}},
        "/healthz": {"get": {"summary": "The process is alive.",
                             "responses": {"200": {"description": "Alive.", "content": {"application/json": {
                                 "schema": {"type": "object", "properties": {"status": {"type": "string"}}}}}}}}},
        "/readyz": {"get": {
            "summary": "Ready: the model is loaded and the replica has caught up with the changelog and the catalog.",
            "responses": {
                "200": {"description": "Ready.",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Readiness"}}}},
                "503": {"description": "Not ready yet (detail says why).",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Readiness"}}}},
            }}},
        "/openapi.json": {"get": {"summary": "This document.",
                                  "responses": {"200": {"description": "OpenAPI 3 document.",
                                                        "content": {"application/json": {"schema": {"type": "object"}}}}}}},
    },
    "components": {"schemas": {
        "Item": {"type": "object", "required": ["item_id", "score", "source"], "properties": {
            "item_id": {"type": "string"}, "score": {"type": "number"},
            "source": {"type": "string", "enum": ["model", "category_trending", "trending"],
                       "description": "model: the search; *trending: the backfill."}}},
        "UserAnswer": {"type": "object", "required": ["user_id", "items", "model_version", "state_event_id"],
                       "properties": {
                           "user_id": {"type": "string"},
                           "items": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}},
                           "model_version": {"type": "string"},
                           "state_event_id": {"type": "string", "nullable": True,
                                              "description": "The newest event the user's state reflects; null "
                                                             "for a user without state."}}},
        "ItemAnswer": {"type": "object", "required": ["item_id", "items", "model_version"], "properties": {
            "item_id": {"type": "string"},
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}},
            "model_version": {"type": "string"}}},
        "Readiness": {"type": "object", "properties": {
            "ready": {"type": "boolean"}, "model_loaded": {"type": "boolean"},
            "model_version": {"type": "string", "nullable": True}, "catalog_restored": {"type": "boolean"},
            "changelog_caught_up": {"type": "boolean"}, "changelog_behind": {"type": "integer"},
            "handler_ms": {"type": "object", "description": "Percentiles of the time recommendation requests "
                                                            "spent in their handler (the last 10,000)."},
            "lock_wait_ms": {"type": "object", "description": "Percentiles of the part of it spent waiting for "
                                                              "the replica's lock."},
            "users": {"type": "integer"},
            "changelog_delay_ms": {"type": "object", "description": "Percentiles of the delay from a worker writing "
                                                                    "a state to this replica applying it."},
            "detail": {"type": "string"}}},
        "Error": {"type": "object", "required": ["error", "detail"], "properties": {
            "error": {"type": "string"}, "detail": {"type": "string"}}},
    }},
}

