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

The replica (:class:`Replica`) applies what is new on the HTTP server's own event loop, in
bounded steps between requests, so an answer sees one consistent state of the replica and no
second Python thread competes with the handlers for the GIL. Answers
are computed with the worker's own core functions: the user's vector (rebuilt with
:func:`streamrec.core.batch.rebuild_state` when its model version differs), the live item
side's search (:meth:`streamrec.core.items.LiveItems.view`) and the worker's finishing rules
(:func:`streamrec.core.batch.finish_batch`, :meth:`streamrec.core.items.LiveItems.finish_list`),
so a user's answer equals the worker's latest list for the same state.
"""

from __future__ import annotations

import gc
import hmac
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
    Message,
    decode_batch,
    rebuild_state,
    recommend_one,
    variant_query,
)
from streamrec.core.experiments import Experiment, assign
from streamrec.core.interest import InterestParams
from streams.shell import interest_params, running_experiment
from streamrec.core.repeat import REPEAT_EVENTS
from streamrec.core.items import ItemsModel, LiveItems
from streamrec.core.state import RecentEvent, StateDecodeError, UserState, decode_state
from streamrec.core.taste import query as taste_query
from streamrec.kafka.security import client_config

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
#: Most records one step of the replica reads and applies (bounds the time a request can wait for it).
STEP_RECORDS = 2_000
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
            experiment: Experiment | None = None, params: InterestParams | None = None) -> list[dict[str, Any]]:
    """Search and finish one list as :func:`finish_batch` does for the worker."""
    rec = recommend_one(items, user_id, query, trigger, list(recent), k=k,
                        excluded=excluded if only is None else _OutsideOr(only, excluded), search_excluded=excluded,
                        view=items.view(only), params=params, experiment=experiment)  # similar(): no params, no steps
    return [{"item_id": i.item_id, "score": float(i.score), "source": i.source} for i in rec.items]


def _rows(items: LiveItems, item_ids: Sequence[str]) -> set[int]:
    return {row for item_id in item_ids if (row := items.row_of.get(item_id)) is not None}


def recommend(items: LiveItems, user_id: str, state: UserState | None, *, k: int = DEFAULT_K,
              params: InterestParams | None = None, exclude: Sequence[str] = (),
              category: str | None = None, experiment: Experiment | None = None) -> dict[str, Any]:
    """A user's answer from their state (None: no state yet, trending items) with the worker's
    rules: unavailable and removed items never, purchased items excluded (except repeat-purchase
    categories), exactly ``k`` with trending backfill when k eligible items exist. ``category``
    keeps items whose category path holds that level (:class:`BadRequest` when none does);
    ``exclude`` removes those item ids. With an ``experiment``, the user's variant builds the
    answer as it builds the worker's lists, and the answer names it."""
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
        vector = taste_query(state.vector, state.taste, items.model.taste)
        excluded = items.exclusions(state.purchased)
        recent = state.recent[-REPEAT_EVENTS:]
    excluded |= _rows(items, exclude)
    variant = assign(experiment, user_id) if experiment is not None else None
    if variant is not None and variant.kind == "params" and variant.params is not None and state is not None:
        vector = variant_query(items, state.recent, variant.params)
    event_id = state.recent[-1].event_id if state is not None and state.recent else None
    trigger = _Trigger(event_id or "", (state.last_ts or 0.0) if state is not None else 0.0)
    answer = _answer(items, vector, k, excluded, recent, only, user_id, trigger, experiment, params)
    return {"user_id": user_id, "items": answer, "model_version": items.version, "state_event_id": event_id,
            "experiment": None if experiment is None else experiment.name,
            "variant": None if variant is None else variant.name}


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
    """The serve instance's copy of the user states, the catalog and the model, kept fresh by
    :meth:`follow` on the HTTP event loop. Read it under :attr:`lock` (held only briefly: the
    only other thread, the loop's pool, sets the first item side at start)."""

    def __init__(self, settings, params: InterestParams | None = None) -> None:  # noqa: ANN001 - Settings
        self.settings = settings
        self.params = params or interest_params(settings)
        #: The running experiment: answers follow the user's variant, as the worker's lists do.
        self.experiment = running_experiment(settings)
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
        #: Seconds from the worker writing a state to this replica applying it (after catch-up).
        self.delays: deque[float] = deque(maxlen=FRESHNESS_WINDOW)
        #: Recommendation requests: seconds waiting for the lock, and in the handler in all.
        self.lock_waits: deque[float] = deque(maxlen=FRESHNESS_WINDOW)
        self.request_times: deque[float] = deque(maxlen=FRESHNESS_WINDOW)
        #: How late the HTTP event loop woke up for a timer (seconds): time it could not answer.
        self.loop_lags: deque[float] = deque(maxlen=FRESHNESS_WINDOW)
        #: Python's garbage-collector pauses (seconds, every generation; the GIL is held meanwhile).
        self.gc_pauses: deque[float] = deque(maxlen=FRESHNESS_WINDOW)

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
    #
    # Everything that changes the replica runs on the HTTP server's event loop, between requests
    # (:meth:`follow`): reading is non-blocking (librdkafka fetches in its own C threads), and
    # each step applies a bounded number of records. With a second Python thread the handlers
    # would wait for the GIL whenever that thread was descheduled while holding it, which on a
    # busy machine cost hundreds of milliseconds at p99 (docs/serving.md, "Latency"). Only the
    # blocking parts (loading the model and restoring the catalog at start, topic metadata, loading
    # a newer model's files) run in the loop's thread pool, and no request reads what they build
    # until it is swapped in on the loop.

    async def follow(self) -> None:
        """Load, catch up and follow until cancelled; an error stops the following and is kept in
        :attr:`error` (``/readyz`` says why), the API keeps answering ``/healthz``."""
        import asyncio

        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self._load)
            # What is loaded now (the model, the catalog, the libraries) lives as long as the process:
            # keep it out of the garbage collector's full passes, which hold the GIL for as long as
            # they take (tens of ms with it, measured by streamrec_python_gc_pause_seconds).
            gc.freeze()
            worker = self.settings.worker
            next_check = 0.0
            next_model = time.monotonic() + worker.model_poll_s
            while True:
                now = time.monotonic()
                if now >= next_check and (self._ends is None or not self._events_assigned):
                    await loop.run_in_executor(None, self._assign_missing)
                    next_check = now + 1.0
                read = self.step()
                if now >= next_model:
                    if await loop.run_in_executor(None, self.model.reload_if_newer):
                        self._adopt_model()
                        gc.freeze()
                    next_model = time.monotonic() + worker.model_poll_s
                # A full step: more is waiting, go on at once (after the requests that queued
                # meanwhile). Otherwise apply at most every APPLY_EVERY_S.
                await asyncio.sleep(0 if read >= STEP_RECORDS else APPLY_EVERY_S)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("the replica stopped following")
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._close()

    def _load(self) -> None:
        """The model, the catalog restored from its topic, the consumer of changelog and events."""
        from confluent_kafka import Consumer

        from streamrec.kafka.admin import COMPACTED, ensure_topics
        from streamrec.kafka.clients import IDLE_FETCH_WAIT_MS
        from streams.catalog import LiveCatalog
        from streams.model import ModelHolder

        kafka = self.settings.kafka
        ensure_topics(kafka.bootstrap, {kafka.items_topic: kafka.partitions}, configs={kafka.items_topic: COMPACTED})
        self.model = ModelHolder.from_settings(self.settings)
        self.catalog = LiveCatalog.from_settings(self.settings)
        items = self.catalog.start(self.model.current)
        self._consumer = Consumer({
            **client_config(kafka.bootstrap, kafka),
            "group.id": f"serve-{uuid.uuid4().hex[:8]}",  # never joined: partitions are assigned
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": IDLE_FETCH_WAIT_MS,
            "log_level": 4,
        })
        with self.lock:
            self.items = items
            self.catalog_restored = True

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
            ends = {p: self._consumer.get_watermark_offsets(TopicPartition(self.changelog, p), timeout=10)[1]
                    for p in partitions}
            self._consumer.incremental_assign([TopicPartition(self.changelog, p, OFFSET_BEGINNING) for p in partitions])
            self._changelog_absent = False
            self._ends = ends
            logger.info("following changelog %s: %d partition(s), %d record(s) to catch up", self.changelog,
                        len(partitions), sum(ends.values()))
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

    def step(self) -> int:
        """Read what has arrived (without waiting, at most ``STEP_RECORDS`` records) and apply it;
        how many records were read."""
        from confluent_kafka import KafkaError, KafkaException

        if self._consumer is None or not (self._ends or self._events_assigned):
            return 0
        messages = self._consumer.consume(STEP_RECORDS, timeout=0)
        was_caught_up = self.changelog_caught_up
        events_topic = self.settings.kafka.events_topic
        events: list[Message] = []
        written: list[float] = []
        with self.lock:
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
                self._positions[message.partition()] = message.offset() + 1
                key = message.key()
                if key is None:
                    continue
                raw = message.value()
                if raw is None:
                    self.states.pop(key.decode(), None)
                else:
                    self.states[key.decode()] = raw
                if was_caught_up:
                    _, ms = message.timestamp()
                    if ms > 0:
                        written.append(ms / 1000.0)
            if events:
                self._observe(events)
            self.catalog.poll()
            self.catalog.drop_rejects()  # the workers send them to the dead-letter topic
        if written:
            applied = time.time()
            self.delays.extend(applied - ts for ts in written)
        return len(messages)

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

    def _adopt_model(self) -> None:
        """Swap in the model version :attr:`model` has just loaded, like the worker: the item side
        is built from the catalog as it is now."""
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


#: Routes answered without a token: a liveness probe must not need a secret.
OPEN_PATHS = frozenset({"/healthz"})


def bearer_auth(token: str):  # noqa: ANN201 - an aiohttp middleware
    """A middleware that asks every request but :data:`OPEN_PATHS` for ``Authorization: Bearer
    <token>``: 401 (``unauthorized``) without one or with a malformed header, 403 (``forbidden``)
    with a wrong one; JSON error bodies as the API's others. The token is compared in constant
    time and never echoed."""
    expected = token.encode("utf-8")

    @web.middleware
    async def _bearer(request: web.Request, handler):  # noqa: ANN001, ANN202
        if request.path in OPEN_PATHS:
            return await handler(request)
        header = request.headers.get("Authorization")
        scheme, _, given = (header or "").strip().partition(" ")
        if header is None or scheme.lower() != "bearer" or not given.strip():
            response = _error(401, "unauthorized",
                              "this API needs an 'Authorization: Bearer <token>' header (the serve.token setting)")
            response.headers["WWW-Authenticate"] = 'Bearer realm="streamrec"'
            return response
        if not hmac.compare_digest(given.strip().encode("utf-8"), expected):
            return _error(403, "forbidden", "the bearer token is not the one this server accepts")
        return await handler(request)

    return _bearer


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
        self.loop_lag = Histogram("streamrec_serve_event_loop_lag_seconds",
                                  "How late the HTTP event loop woke for a 10 ms timer (time it could not answer).",
                                  registry=registry,
                                  buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
        self.gc_pause = Histogram("streamrec_python_gc_pause_seconds",
                                  "Pauses of Python's garbage collector by generation (no thread runs Python meanwhile).",
                                  ["generation"], registry=registry,
                                  buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
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
                           category=category, experiment=replica.experiment)
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
            "lock_wait_ms": _percentiles(list(replica.lock_waits)),
            "loop_lag_ms": _percentiles(list(replica.loop_lags)),
            "gc_pause_ms": _percentiles(list(replica.gc_pauses))}
    if not status.ready:
        body["detail"] = _not_ready_detail(status)
    return web.json_response(body, status=200 if status.ready else 503)


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS_KEY].text(),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


#: How often the event-loop probe asks to be woken (seconds).
LOOP_PROBE_EVERY_S = 0.01


async def _probe_loop(app: web.Application) -> Any:
    """While the app runs, a timer every ``LOOP_PROBE_EVERY_S`` records how late the event loop
    woke for it: a request arriving meanwhile waited at least that long before its handler ran."""
    import asyncio

    replica, metrics = app[REPLICA_KEY], app[METRICS_KEY]

    async def probe() -> None:
        while True:
            due = time.perf_counter() + LOOP_PROBE_EVERY_S
            await asyncio.sleep(LOOP_PROBE_EVERY_S)
            lag = max(0.0, time.perf_counter() - due)
            replica.loop_lags.append(lag)
            metrics.loop_lag.observe(lag)

    started: list[float] = []

    def gc_timer(phase: str, info: dict) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            pause = time.perf_counter() - started[0]
            replica.gc_pauses.append(pause)
            metrics.gc_pause.labels(str(info.get("generation"))).observe(pause)

    gc.callbacks.append(gc_timer)
    task = asyncio.get_running_loop().create_task(probe())
    yield
    task.cancel()
    gc.callbacks.remove(gc_timer)


async def _follow(app: web.Application) -> Any:
    """While the app runs, its replica follows its topics on the app's event loop."""
    import asyncio

    task = asyncio.get_running_loop().create_task(app[REPLICA_KEY].follow())
    yield
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def make_app(replica: Replica, *, token: str | None = None, follow: bool = False) -> web.Application:
    """The HTTP API over ``replica``; with a ``token`` every route but ``/healthz`` needs it
    (:func:`bearer_auth`); with ``follow`` the replica loads and follows its topics while the app
    runs (else it is used as it is, e.g. prepared by a test)."""
    middlewares = [_measured, _errors] + ([bearer_auth(token)] if token else [])
    app = web.Application(middlewares=middlewares)
    app[REPLICA_KEY] = replica
    app[METRICS_KEY] = ServeMetrics(replica)
    app.cleanup_ctx.append(_probe_loop)
    if follow:
        app.cleanup_ctx.append(_follow)
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
    token = settings.serve.token.get_secret_value() if settings.serve.token is not None else None
    if token is not None and not token.strip():
        raise ValueError("serve.token (STREAMREC_SERVE__TOKEN) is set but empty: set a token or unset it")
    web.run_app(make_app(Replica(settings), token=token, follow=True), host=host, port=port, print=None,
                handle_signals=True, access_log=None)


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
        "/healthz": {"get": {"summary": "The process is alive (never needs the token).", "security": [],
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
    # With serve.token set, every other route answers 401 (unauthorized) without a bearer token
    # and 403 (forbidden) with a wrong one (docs/security.md).
    "security": [{"bearer": []}],
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                  "description": "Only when serve.token is set."}},
                   "schemas": {
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
                                                             "for a user without state."},
                           "experiment": {"type": "string", "nullable": True,
                                          "description": "The running experiment; null when none."},
                           "variant": {"type": "string", "nullable": True,
                                       "description": "The user's variant, which built the answer (docs/business.md)."}}},
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
            "loop_lag_ms": {"type": "object", "description": "Percentiles of how late the HTTP event loop woke "
                                                             "for a 10 ms timer (the last 10,000)."},
            "users": {"type": "integer"},
            "changelog_delay_ms": {"type": "object", "description": "Percentiles of the delay from a worker writing "
                                                                    "a state to this replica applying it."},
            "detail": {"type": "string"}}},
        "Error": {"type": "object", "required": ["error", "detail"], "properties": {
            "error": {"type": "string"}, "detail": {"type": "string"}}},
    }},
}

