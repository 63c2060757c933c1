"""``streamrec trainer``: retrain from the event stream, gate, publish and promote.

The trainer reads the events topic itself (every partition assigned; its own consumer
group only records how far it has read), keeps the newest ``window_events`` events as
compact numpy arrays (:class:`EventWindow`, 17 bytes an event), and every ``every_events``
new events or ``every_minutes`` minutes, whichever comes first, runs one cycle:

1. hold out the newest ``holdout`` fraction of the window by time; train a candidate on the rest;
2. score the candidate and the serving model on the held-out events (next-item HR@10,
   :mod:`indexing.gate`; with ``TrainerParams.score``, as ``streamrec trainer`` runs, on the lists
   the worker would publish, every step after the search included:
   :func:`streamrec.evaluation.gate.served_hits`);
3. save the candidate as a new version with ``meta["gate"]`` (both scores, the decision);
4. publish it to the models topic whatever the decision (``streamrec model list`` shows
   rejected ones), and promote it only when the gate passed.

At start the window is refilled from the tail of the events topic (so the topic's retention
must cover the window) and, before that, optionally from an archive file
(``bootstrap_dataset``) for shops whose history is longer than the topic keeps.

Erasure requests (``streamrec forget``, docs/security.md): one read on the events topic drops
every event of the user before it from the window (events after it are kept: the user's fresh
profile); the archive's events are checked against the compacted erasures topic, and a user's
events up to the request's time are left out. Every later training run trains on the window,
so no later model learns from them.

Its Prometheus metrics (:class:`TrainerMetrics`, served by ``streamrec trainer --metrics-port``)
are listed in docs/operations.md.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from indexing.artifact import load_artifact, newest_number
from indexing.distribute import ModelPublisher, topic_partition
from indexing.feed import ModelFeed
from indexing.gate import decide, gate_cases, model_rows, next_item_hits, paired_standard_error, split_holdout
from indexing.index import DEFAULT_TARGET_RECALL, build_served_index
from indexing.train import Interactions, TrainedModel, TrainParams, interactions_from_arrays, train_model
from streamrec.core.interest import InterestParams
from streamrec.contract import EVENT_TYPE_CODES, Event, InvalidEvent, decode_erasure, decode_event
from streamrec.kafka.security import client_config

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainerParams:
    window_events: int = 5_000_000
    every_events: int = 500_000
    every_minutes: float = 60.0
    holdout: float = 0.1
    #: Publish when candidate HR@10 >= serving HR@10 - margin (absolute). See docs/lifecycle.md.
    margin: float = 0.005
    gate_cases: int = 20_000
    min_events: int = 1_000
    k: int = 10
    factory: str = "auto"
    #: recall@10 an approximate index is calibrated to (setting ``index.target_recall``).
    target_recall: float = DEFAULT_TARGET_RECALL
    train: TrainParams = field(default_factory=TrainParams)
    #: The worker's update parameters the targets are fitted for (its taste decay: the taste map).
    interest: InterestParams = field(default_factory=InterestParams)
    #: With ``interest.factor_weight = "auto"``: writes the factor step's weight, chosen on the
    #: window's held-out events, into a trained version (``streamrec trainer`` passes
    #: :func:`streamrec.evaluation.choose.choose_for`; None: such versions keep weight 0).
    choose: Callable[[TrainedModel, Interactions, TrainParams, InterestParams], object] | None = None
    #: Scores a version on the gate's cases: ``score(trained, window, holdout_rows, cases, k)`` -> a
    #: hit per case. ``streamrec trainer`` passes :func:`streamrec.evaluation.gate.served_hits`,
    #: the lists the worker would publish (every step after the search); None: the search alone
    #: (:func:`indexing.gate.next_item_hits`).
    score: Callable[[TrainedModel, WindowArrays, np.ndarray, np.ndarray, int], np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.window_events < 1 or self.every_events < 1 or self.gate_cases < 1:
            raise ValueError("window_events, every_events and gate_cases must be >= 1")
        if not 0.0 < self.holdout < 1.0:
            raise ValueError(f"holdout must be in (0, 1), got {self.holdout}")
        if self.every_minutes <= 0 or self.margin < 0:
            raise ValueError("every_minutes must be > 0 and margin >= 0")


@dataclass
class WindowArrays:
    """A window's events in arrival order: integer codes plus the keys they stand for."""

    users: np.ndarray
    items: np.ndarray
    types: np.ndarray
    ts: np.ndarray
    item_keys: np.ndarray


class EventWindow:
    """The newest ``capacity`` events as parallel numpy arrays (a ring), ids interned."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.users = np.zeros(capacity, np.int32)
        self.items = np.zeros(capacity, np.int32)
        self.types = np.zeros(capacity, np.int8)
        self.ts = np.zeros(capacity, np.float64)
        self._next = 0
        self._size = 0
        self._user_codes: dict[str, int] = {}
        self._item_codes: dict[str, int] = {}
        self._item_keys: list[str] = []

    def __len__(self) -> int:
        return self._size

    def append(self, event: Event) -> None:
        if event.type not in EVENT_TYPE_CODES:  # an impression: what a page showed, not an action
            return
        user = self._user_codes.setdefault(event.user_id, len(self._user_codes))
        item = self._item_codes.get(event.item_id)
        if item is None:
            item = self._item_codes[event.item_id] = len(self._item_keys)
            self._item_keys.append(event.item_id)
        at = self._next
        self.users[at], self.items[at], self.types[at], self.ts[at] = user, item, EVENT_TYPE_CODES[event.type], event.ts
        self._next = (at + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)
        if len(self._user_codes) > 2 * self.capacity + 1024 or len(self._item_keys) > 2 * self.capacity + 1024:
            self._compact()

    def extend(self, events: Iterable[Event]) -> int:
        n = 0
        for event in events:
            self.append(event)
            n += 1
        return n

    def forget(self, user_id: str) -> int:
        """Drop every event of ``user_id`` from the window (an erasure request); returns how many.
        The user's later events get a new code, as a new user's do."""
        code = self._user_codes.get(user_id)
        if code is None:
            return 0
        order = self._order()
        keep = order[self.users[order] != code]
        removed = len(order) - len(keep)
        for array in (self.users, self.items, self.types, self.ts):
            array[: len(keep)] = array[keep]
        self._size = len(keep)
        self._next = self._size % self.capacity
        self._compact()  # renumbers the codes live events use: the user's is gone
        return removed

    def _order(self) -> np.ndarray:
        if self._size < self.capacity:
            return np.arange(self._size)
        return np.r_[np.arange(self._next, self.capacity), np.arange(self._next)]

    def _compact(self) -> None:
        """Forget ids no event in the window uses any more (they pile up in a long run)."""
        live = self._order()
        user_keys = np.array(list(self._user_codes), dtype=object)
        used_users, self.users[live] = np.unique(self.users[live], return_inverse=True)
        self._user_codes = {str(key): code for code, key in enumerate(user_keys[used_users])}
        used_items, self.items[live] = np.unique(self.items[live], return_inverse=True)
        self._item_keys = [self._item_keys[i] for i in used_items]
        self._item_codes = {key: code for code, key in enumerate(self._item_keys)}

    def snapshot(self) -> WindowArrays:
        order = self._order()
        return WindowArrays(self.users[order].copy(), self.items[order].copy(), self.types[order].copy(),
                            self.ts[order].copy(), np.array(self._item_keys, dtype=object))


def train_candidate(window: WindowArrays, rows: np.ndarray, params: TrainerParams,
                    item_features: Mapping[str, tuple[Hashable, ...]] | None = None) -> dict[str, Any]:
    """Item vectors and an index from the window's events ``rows`` (in memory, not saved);
    ``item_features``: the catalog's (``Interactions.item_features``)."""
    data = interactions_from_arrays(window.users[rows], window.item_keys[window.items[rows]].astype(str),
                                    window.types[rows], window.ts[rows], item_features)
    trained = train_model(data, params.train, params.interest)
    if params.choose is not None:
        params.choose(trained, data, params.train, params.interest)
    users = window_user_vectors(window, rows, data.item_ids, trained.context)
    index, calibration = build_served_index(trained.target, params.factory, target_recall=params.target_recall,
                                            context=trained.context, queries=users if len(users) else None)
    return {"item_ids": data.item_ids, "context": trained.context, "target": trained.target, "summary": trained.summary,
            "index": index, "factory": calibration.factory, "calibration": calibration, "trained": trained,
            "users": users}


def window_user_vectors(window: WindowArrays, rows: np.ndarray, item_ids: list[str], context: np.ndarray,
                        n_users: int = 1_000, seed: int = 0) -> np.ndarray:
    """The vectors of up to ``n_users`` random users of the window's events ``rows``: each
    user's events folded in order by the worker's rule over ``context`` (rows ``item_ids``),
    the real user vectors an approximate index is calibrated on."""
    from streamrec.core.interest import InterestParams, update_batch

    codes = window.users[rows]
    chosen = np.unique(codes)
    if len(chosen) > n_users:
        chosen = np.sort(np.random.default_rng(seed).choice(chosen, n_users, replace=False))
    mine = rows[np.isin(codes, chosen)]
    row_of = {item: row for row, item in enumerate(item_ids)}
    model_row = np.array([row_of.get(str(key), -1) for key in window.item_keys], dtype=np.int64)[window.items[mine]]
    known = model_row >= 0
    mine, model_row = mine[known], model_row[known]
    users = np.searchsorted(chosen, window.users[mine]).astype(np.int64)
    vectors = np.zeros((len(chosen), context.shape[1]), np.float32)
    last_ts = np.full(len(chosen), np.nan)
    update_batch(vectors, last_ts, users, model_row, window.types[mine].astype(np.int64), window.ts[mine].astype(np.float64),
                 context, InterestParams())
    active = np.isfinite(last_ts) & (np.abs(vectors).sum(axis=1) > 0)
    return np.ascontiguousarray(vectors[active])


def score(context: np.ndarray, index: Any, row_of: dict[str, int], window: WindowArrays, cases: np.ndarray, k: int) -> np.ndarray:
    rows = model_rows(window.item_keys, row_of)[window.items]
    return next_item_hits(context, index, rows, window.users, window.types, window.ts, cases, k=k)


class TrainerMetrics:
    """The trainer's metrics, in their own registry (see docs/operations.md)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.events = Counter("streamrec_trainer_events", "Events read into the training window.", registry=registry)
        self.skipped = Counter("streamrec_trainer_skipped_events", "Messages of the events topic that are not valid events.",
                               registry=registry)
        self.window = Gauge("streamrec_trainer_window_events", "Events in the training window.", registry=registry)
        self.cycles = Counter("streamrec_trainer_cycles", "Training cycles by gate decision (publish, reject).",
                              ["decision"], registry=registry)
        self.cycle_seconds = Histogram("streamrec_trainer_cycle_seconds", "Seconds of one cycle: train, gate, save, publish.",
                                       buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600), registry=registry)
        self.hit_rate = Gauge("streamrec_trainer_hit_rate", "Held-out next-item hit rate at k of the last cycle, by model.",
                              ["model"], registry=registry)
        self.last_version = Gauge("streamrec_trainer_last_version_info", "1 for the version the last cycle saved.",
                                  ["version", "decision"], registry=registry)
        self.last_cycle = Gauge("streamrec_trainer_last_cycle_timestamp_seconds", "When the last cycle ended (epoch seconds).",
                                registry=registry)


class Trainer:
    """The service: events topic in, gated model versions out to the models topic."""

    def __init__(self, *, bootstrap: str, events_topic: str, models_topic: str, models_dir: Path, group: str,
                 params: TrainerParams, erasures_topic: str | None = None, items_topic: str | None = None) -> None:
        self.bootstrap, self.events_topic, self.models_dir, self.group = bootstrap, events_topic, Path(models_dir), group
        self.params = params
        self.erasures_topic = erasures_topic
        #: The catalog topic, read whole before each training (its features: TrainParams.refine_features).
        self.items_topic = items_topic
        self.window = EventWindow(params.window_events)
        self.feed = ModelFeed(bootstrap, models_topic, self.models_dir)
        self.publisher = ModelPublisher(bootstrap, models_topic)
        self.skipped = 0
        self.metrics = TrainerMetrics()
        self._consumer: Any = None
        self._stop = False

    # ----------------------------------------------------------------- events in

    def seed_from(self, events: Iterable[Event]) -> int:
        """Fill the window from an archive, leaving out the events of users who asked to be
        forgotten (on the erasures topic) up to the time of their request."""
        if self.erasures_topic is not None:
            from streamrec.kafka.erasures import read_erasures

            erased = {user_id: request.requested_at for user_id, request in
                      read_erasures(self.bootstrap, self.erasures_topic).items()}
            if erased:
                events = (e for e in events if e.ts > erased.get(e.user_id, -math.inf))
        n = self.window.extend(events)
        logger.info("window seeded with %d events from the archive (%d kept)", n, len(self.window))
        return n

    def _assign_tail(self) -> tuple[dict[int, int], dict[int, int]]:
        """Assign every events partition from where the window's share of its tail begins;
        returns each partition's start offset and its end offset at start."""
        from confluent_kafka import Consumer

        self._consumer = Consumer({**client_config(self.bootstrap), "group.id": self.group,
                                   "enable.auto.commit": False, "log_level": 0})
        metadata = self._consumer.list_topics(self.events_topic, timeout=30).topics.get(self.events_topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise RuntimeError(f"events topic {self.events_topic} does not exist on {self.bootstrap}")
        partitions = sorted(metadata.partitions)
        share = math.ceil(self.params.window_events / len(partitions))
        assignment, starts, ends = [], {}, {}
        for p in partitions:
            tp = topic_partition(self.events_topic, p)
            low, high = self._consumer.get_watermark_offsets(tp, timeout=30)
            tp.offset = starts[p] = max(low, high - share)
            assignment.append(tp)
            ends[p] = high
        self._consumer.assign(assignment)
        logger.info("reading %s from offsets %s (ends now %s)", self.events_topic, starts, ends)
        return starts, ends

    def _read(self, max_messages: int = 10_000, timeout: float = 1.0) -> tuple[int, dict[int, int]]:
        """Read a batch into the window; returns (events added, next offset per partition)."""
        added, positions, skipped = 0, {}, self.skipped
        for message in self._consumer.consume(max_messages, timeout=timeout):
            if message.error():
                continue
            positions[message.partition()] = message.offset() + 1
            try:
                self.window.append(decode_event(message.value()))
                added += 1
            except InvalidEvent:
                try:
                    erasure = decode_erasure(message.value())
                except InvalidEvent:
                    erasure = None
                if erasure is None:
                    self.skipped += 1
                else:
                    self.window.forget(erasure.user_id)
        self.metrics.events.inc(added)
        self.metrics.skipped.inc(self.skipped - skipped)
        self.metrics.window.set(len(self.window))
        return added, positions

    # ----------------------------------------------------------------- one cycle

    def cycle(self) -> dict[str, Any] | None:
        """Train, gate, save, publish (and promote when the gate passes). None if too few events."""
        params = self.params
        if len(self.window) < params.min_events:
            logger.info("only %d events in the window (< %d): no training", len(self.window), params.min_events)
            return None
        started = time.perf_counter()
        window = self.window.snapshot()
        train_rows, holdout_rows = split_holdout(window.ts, params.holdout)
        catalog = self._catalog_features()
        candidate = train_candidate(window, np.sort(train_rows), params, catalog)
        cases = gate_cases(window.users, window.items, window.ts, holdout_rows, max_cases=params.gate_cases)
        row_of = {item: row for row, item in enumerate(candidate["item_ids"])}
        if params.score is not None:
            candidate_hits = params.score(candidate["trained"], window, holdout_rows, cases, params.k)
        else:
            candidate_hits = score(candidate["context"], candidate["index"], row_of, window, cases, params.k)
        self.feed.catch_up(30.0)
        serving_version = self.feed.serving
        serving_hits = None
        if serving_version is not None:
            folder = self.feed.usable(serving_version)
            if folder is None:
                logger.warning("cannot score serving model %s: %s", serving_version, self.feed.problem(serving_version))
            else:
                serving = load_artifact(folder, use_gpu=False)
                if params.score is not None:
                    serving_hits = params.score(TrainedModel.from_artifact(serving), window, holdout_rows, cases,
                                                params.k)
                else:
                    serving_hits = score(serving.context, serving.index, serving.row_of, window, cases, params.k)
        candidate_score = float(candidate_hits.mean()) if len(cases) else 0.0
        serving_score = float(serving_hits.mean()) if serving_hits is not None and len(cases) else None
        decision = decide(candidate_score, serving_score, params.margin)
        gate = {
            "metric": f"HR@{params.k}", "lists": "served" if params.score is not None else "search",
            "candidate": round(candidate_score, 4),
            "serving": None if serving_score is None else round(serving_score, 4),
            "serving_version": serving_version if serving_hits is not None else None, "margin": params.margin,
            "cases": int(len(cases)), "holdout_events": int(len(holdout_rows)),
            "holdout_from_ts": float(window.ts[holdout_rows].min()) if len(holdout_rows) else None,
            "paired_se": None if serving_hits is None else round(paired_standard_error(candidate_hits, serving_hits), 4),
            "decision": "publish" if decision.publish else "reject", "reason": decision.reason,
        }
        number = max(newest_number(self.models_dir), self.feed.state.newest_number()) + 1
        summary = {**candidate["summary"], "source": f"trainer: window of {len(window.ts)} events on {self.events_topic}",
                   "window_events": int(len(window.ts)), "catalog_items": len(catalog or ())}
        trained = candidate["trained"]
        trained.summary = summary
        folder = trained.save(self.models_dir, factory=candidate["factory"], number=number, extra_meta={"gate": gate},
                             target_recall=self.params.target_recall, queries=candidate["users"])
        self.publisher.publish_version(folder)
        if decision.publish:
            self.feed.catch_up(30.0)
            self.publisher.promote(folder.name, reason="trainer", state=self.feed.state)
        seconds = time.perf_counter() - started
        logger.warning("model %s: %s (%s) in %.1f s", folder.name, gate["decision"], decision.reason, seconds)
        metrics = self.metrics
        metrics.cycles.labels(gate["decision"]).inc()
        metrics.cycle_seconds.observe(seconds)
        metrics.hit_rate.labels("candidate").set(candidate_score)
        if serving_score is not None:
            metrics.hit_rate.labels("serving").set(serving_score)
        metrics.last_version.clear()
        metrics.last_version.labels(folder.name, gate["decision"]).set(1)
        metrics.last_cycle.set(time.time())
        return {"version": folder.name, "gate": gate, "seconds": round(time.perf_counter() - started, 2)}

    def _catalog_features(self) -> dict[str, tuple[Hashable, ...]] | None:
        """The features of the catalog on the items topic now (None: no topic, no records, or it
        could not be read, which is logged: the version is then trained on the events alone)."""
        if self.items_topic is None or not self.params.train.refine_features:
            return None
        from streamrec.core.items import catalog_features
        from streamrec.kafka.catalog import read_catalog_topic

        try:
            catalog = read_catalog_topic(self.bootstrap, self.items_topic)
        except Exception as exc:  # noqa: BLE001 - a cycle trains without the catalog rather than not at all
            logger.warning("cannot read the catalog on %s (%s): training on the events alone", self.items_topic, exc)
            return None
        return catalog_features(catalog) or None

    # ----------------------------------------------------------------- the loop

    def run(self, *, once: bool = False, on_cycle: Any = None) -> None:
        """Refill the window from the topic's tail, then retrain on schedule (``once``: read to
        the end offsets seen at start, run one cycle, return)."""
        self.feed.catch_up(30.0)
        starts, ends = self._assign_tail()
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, self._on_term)}
        since, last_cycle = 0, time.monotonic()
        reached = dict(starts)
        try:
            while not self._stop:
                added, positions = self._read()
                since += added
                reached.update(positions)
                if once:
                    if all(reached[p] >= end for p, end in ends.items()):
                        result = self.cycle()
                        if on_cycle is not None:
                            on_cycle(result)
                        self._commit()
                        return
                    continue
                due = since >= self.params.every_events or time.monotonic() - last_cycle >= 60 * self.params.every_minutes
                if due and since > 0:
                    result = self.cycle()
                    if on_cycle is not None:
                        on_cycle(result)
                    self._commit()
                    since, last_cycle = 0, time.monotonic()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.close()

    def _on_term(self, *_: object) -> None:
        self._stop = True

    def _commit(self) -> None:
        try:
            self._consumer.commit(asynchronous=False)
        except Exception as exc:  # noqa: BLE001 - the committed offset is only a progress marker
            logger.info("could not commit the trainer's offsets: %s", exc)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        self.feed.close()
        self.publisher.close()

