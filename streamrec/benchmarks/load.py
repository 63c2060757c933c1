"""The benchmark's workload: a seeded synthetic shop, a model for it, and its events in Kafka.

:func:`prepare_workload` builds (or loads from the cache) a model and the live events as
ready-to-send ``(key, value)`` bytes, so encoding never competes with the side being
measured. Catalogs up to :data:`TRAIN_UP_TO` items get item vectors *trained* on the shop's
history (``indexing.train``); larger ones get :func:`shop_item_vectors` (vectors built from
the shop's category/cluster structure), because a rank-128 SVD of a 1M x 1M matrix does not
fit the benchmark machine's time. Either way the model is saved with
``indexing.artifact.save_artifact``, the index built by the same code the worker loads.

:func:`produce` sends events flat out (pre-producing a backlog, so throughput measures only
the consumer side) or paced at a steady rate by a :class:`Pacer`, and returns each event's
produce time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamrec.config import default_home

logger = logging.getLogger(__name__)

#: Where workloads are cached: under the home (STREAMREC_HOME, default the working
#: directory), ignored by git in the repository.
DEFAULT_CACHE_DIR = default_home() / "benchmarks" / "results" / "tmp" / "cache"
#: Catalogs up to this size get trained item vectors; larger ones structural ones.
TRAIN_UP_TO = 50_000
#: Events of history the model is trained on, per catalog item (at least MIN_HISTORY).
HISTORY_PER_ITEM = 20
MIN_HISTORY = 200_000
#: Mean events per second of *event time* in the shop when no rate is given: sessions of a
#: shop this busy overlap as they would in a real one at the benchmark's target rate.
DEFAULT_SHOP_RATE = 20_000.0
_CACHE_FORMAT = 1


@dataclass
class Workload:
    """A model folder and the live events to drive through it, in stream order."""

    items: int
    users: int
    seed: int
    model_dir: Path
    #: "trained" or "structural" (see the module docstring).
    item_vectors: str
    factory: str
    keys: list[bytes]
    values: list[bytes]
    event_ids: list[bytes]
    #: Integer code of each event's user (index into the shop's users).
    user_codes: np.ndarray
    meta: dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.values)

    def head(self, n: int) -> Workload:
        """The first ``n`` events (the same model)."""
        n = min(n, len(self))
        return Workload(self.items, self.users, self.seed, self.model_dir, self.item_vectors, self.factory,
                        self.keys[:n], self.values[:n], self.event_ids[:n], self.user_codes[:n], self.meta)

    def last_event_ids(self) -> set[bytes]:
        """The event id of each user's last event: every one must be answered by its own
        recommendation (the worker coalesces a user's events in a batch onto the last)."""
        last: dict[int, int] = {}
        for position, user in enumerate(self.user_codes.tolist()):
            last[user] = position
        return {self.event_ids[p] for p in last.values()}


# --------------------------------------------------------------------------- item vectors


def shop_item_vectors(
    item_category: np.ndarray, item_cluster: np.ndarray, popularity: np.ndarray, dim: int = 128, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Structural ``(context, target)`` item vectors for a catalog too large to train on here.

    Each vector is a category direction plus a cluster offset plus item noise, scaled by a
    damped popularity (trained vectors of popular items are longer), so that similar items
    share directions as in a trained model and approximate indexes meet realistic structure.
    The context vector is the target plus a little noise (the two halves of the SVD are
    correlated, not equal).
    """
    rng = np.random.default_rng([seed, 99])
    n_categories = int(item_category.max()) + 1
    n_clusters = int(item_cluster.max()) + 1
    categories = rng.standard_normal((n_categories, dim), dtype=np.float32)
    cluster_category = np.zeros(n_clusters, dtype=np.int64)
    cluster_category[item_cluster] = item_category
    clusters = categories[cluster_category] + 0.8 * rng.standard_normal((n_clusters, dim), dtype=np.float32)
    target = clusters[item_cluster]
    target += 0.6 * rng.standard_normal(target.shape, dtype=np.float32)
    target /= np.linalg.norm(target, axis=1, keepdims=True)
    scale = (popularity / popularity.max()) ** 0.15
    target *= scale.astype(np.float32)[:, None]
    context = target + 0.1 * rng.standard_normal(target.shape, dtype=np.float32) * scale.astype(np.float32)[:, None]
    return np.ascontiguousarray(context, np.float32), np.ascontiguousarray(target, np.float32)


def shop_user_vectors(shop, n_events: int, context: np.ndarray, *, rate: float = 50.0,  # noqa: ANN001
                      row_of_item: np.ndarray | None = None) -> np.ndarray:
    """The vectors of the users of a synthetic ``shop`` (a :class:`producers.synthetic.SyntheticShop`)
    after its first ``n_events`` events, folded by the worker's rule over ``context``, for the
    users with at least one event. ``row_of_item[i]``: the model row of the shop's item ``i``
    (-1: not in the model); by default item ``i`` is row ``i``."""
    from streamrec.core.interest import InterestParams, update_batch

    columns = list(shop.event_columns(n_events, rate=rate))
    users = np.concatenate([c.users for c in columns]).astype(np.int64)
    items = np.concatenate([c.items for c in columns]).astype(np.int64)
    types = np.concatenate([c.types for c in columns]).astype(np.int64)
    ts = np.concatenate([c.ts for c in columns])
    if row_of_item is not None:
        items = row_of_item[items]
        known = items >= 0
        users, items, types, ts = users[known], items[known], types[known], ts[known]
    n_users = int(users.max()) + 1 if len(users) else 0
    vectors = np.zeros((n_users, context.shape[1]), np.float32)
    last_ts = np.full(n_users, np.nan)
    update_batch(vectors, last_ts, users, items, types, ts, context, InterestParams())
    active = np.isfinite(last_ts) & (np.abs(vectors).sum(axis=1) > 0)
    return np.ascontiguousarray(vectors[active])


# --------------------------------------------------------------------------- the workload

#: Shop events folded into the user vectors an index is calibrated on / its recall reported on.
CALIBRATION_EVENTS = 60_000
#: User vectors the calibration uses (the rest measure the recall reported by the bench).
CALIBRATION_USERS = 1_000


def bench_user_vectors(items: int, users: int, seed: int, context: np.ndarray, shop_rate: float,
                       row_of_item: np.ndarray | None = None) -> np.ndarray:
    """The bench's own users' vectors: its shop's first :data:`CALIBRATION_EVENTS` events
    folded by the worker's rule (:func:`shop_user_vectors`)."""
    from producers.synthetic import SyntheticShop

    shop = SyntheticShop(items=items, users=users, seed=seed)
    return shop_user_vectors(shop, CALIBRATION_EVENTS, context, rate=shop_rate, row_of_item=row_of_item)


def calibration_users(items: int, users: int, seed: int, context: np.ndarray, shop_rate: float) -> np.ndarray:
    """The first :data:`CALIBRATION_USERS` of :func:`bench_user_vectors` (calibration)."""
    return bench_user_vectors(items, users, seed, context, shop_rate)[:CALIBRATION_USERS]


def index_recall(model_dir: Path, items: int, users: int, seed: int, shop_rate: float,
                 nprobe: int | None = None) -> dict[str, object]:
    """The served index's recall@10 against exact search, measured on the bench's user vectors
    that its calibration did not use (:func:`bench_user_vectors` after the first
    :data:`CALIBRATION_USERS`), at the effort the worker loads it with, and how it was calibrated."""
    from indexing.artifact import load_artifact
    from indexing.index import K, exact_top, recall_at_k
    from streamrec.core.search import inner_product_search
    from producers.synthetic import SyntheticShop

    model = load_artifact(model_dir, use_gpu=False, nprobe=nprobe)
    target = model.extras.get("target")
    search_meta = model.meta.get("search") or {}
    report: dict[str, object] = {"factory": model.meta.get("factory"), "effort_name": search_meta.get("effort_name"),
                                 "effort": nprobe or search_meta.get("effort"), "calibrated_effort": search_meta.get("effort"),
                                 "calibrated_recall_at_10": search_meta.get("recall_at_10"),
                                 "target_recall": search_meta.get("target_recall"), "calibration_queries": search_meta.get("queries")}
    if target is None:
        return {**report, "recall_at_10": None}
    shop = SyntheticShop(items=items, users=1, seed=seed)
    row_of_item = np.array([model.row_of.get(i, -1) for i in shop.item_ids], dtype=np.int64)
    vectors = bench_user_vectors(items, users, seed, model.context, shop_rate, row_of_item)[CALIBRATION_USERS:][:5_000]
    _, found = inner_product_search(model.index, np.ascontiguousarray(vectors), K)
    recall = recall_at_k(found, exact_top(target, vectors, K))
    return {**report, "recall_at_10": round(recall, 4), "recall_queries": len(vectors)}



def _key(**parts: object) -> str:
    text = json.dumps({"format": _CACHE_FORMAT, **parts}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


#: How approximate indexes are built (part of the cache key: a change rebuilds cached models).
#: 2: on the Euclidean reduction of inner-product search (streamrec.core.search.euclidean_items).
INDEX_BUILD = 2
#: How trained models are built (part of the cache key): 2: with the neighbour step's neighbours.
TRAIN_BUILD = 2


def prepare_workload(
    items: int,
    users: int,
    events: int,
    *,
    seed: int = 0,
    factory: str = "auto",
    shop_rate: float = DEFAULT_SHOP_RATE,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    dim: int = 128,
    refine_epochs: int = 0,
    log: Callable[[str], None] = logger.info,
) -> Workload:
    """Build, or load from ``cache_dir``, the model and ``events`` live events of a shop;
    ``refine_epochs``: passes of the softmax refinement of trained vectors (indexing/refine.py;
    the served default's 5 add minutes to an uncached workload and change only the vectors' values)."""
    from indexing.artifact import latest_version, load_artifact, save_artifact
    from producers.synthetic import DEFAULT_START_TS, SyntheticShop

    from indexing.index import choose_factory
    from indexing.train import TrainParams
    from streamrec.config import get_settings
    from streamrec.core.factors import fits_factors
    from streamrec.core.interest import InterestParams

    trained = items <= TRAIN_UP_TO
    history = max(MIN_HISTORY, HISTORY_PER_ITEM * items) if trained else 0
    # The key names the index the factory resolves to (``auto`` changes with the rule) and the
    # recall an approximate one is calibrated to.
    target_recall = get_settings().index.target_recall
    resolved = choose_factory(items) if factory == "auto" else factory
    # With the factor step on (rules.factor_weight), the trained model carries its item factors.
    factor_weight = get_settings().rules.factor_weight
    factors = trained and fits_factors(factor_weight)
    model_key = _key(items=items, users=users, seed=seed, factory=resolved, rate=shop_rate, dim=dim, history=history,
                     **({} if resolved == "Flat" else {"target_recall": target_recall, "index_build": INDEX_BUILD}),
                     **({"train_build": TRAIN_BUILD} if trained else {}),
                     **({"refine_epochs": refine_epochs} if trained and refine_epochs else {}),
                     **({"factors": TrainParams().factors} if factors else {}))
    events_key = _key(model=model_key, events=events)
    models_dir = cache_dir / f"model-{items}-{model_key}"
    events_file = cache_dir / f"events-{items}-{events}-{events_key}.pkl"
    if latest_version(models_dir) is not None and events_file.is_file():
        with events_file.open("rb") as handle:
            cached = pickle.load(handle)
        log(f"workload from cache: {models_dir.name}, {events_file.name}")
        return Workload(model_dir=models_dir, **cached)

    cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    shop = SyntheticShop(items=items, users=users, seed=seed)
    # Event time starts in 2023, so no event is rejected as coming from the future.
    stream = shop.events(history + events, start_ts=DEFAULT_START_TS, rate=shop_rate)
    if latest_version(models_dir) is None:
        if trained:
            from indexing.train import interactions_from_events, train_model

            log(f"training item vectors on {history} events of history ({items} items)")
            past = [next(stream) for _ in range(history)]
            trained_model = train_model(interactions_from_events(past),
                                        TrainParams(dim=dim, seed=seed, refine_epochs=refine_epochs),
                                        InterestParams(factor_weight=factor_weight))
            log(f"building the index ({factory}) and saving the model")
            trained_model.save(models_dir, factory=factory, target_recall=target_recall,
                               source=f"bench synthetic(items={items}, users={users}, seed={seed}, history={history})")
        else:
            log(f"structural item vectors for {items} items (catalog too large to train here)")
            context, target = shop_item_vectors(shop.item_category, shop.item_cluster, shop.item_popularity, dim, seed)
            item_ids = list(shop.item_ids)
            queries = calibration_users(items, users, seed, context, shop_rate)
            log(f"building the index ({factory}), calibrating it on {len(queries):,} of the bench's user vectors, "
                "and saving the model")
            save_artifact(models_dir, item_ids, context, target, factory=factory, target_recall=target_recall,
                          queries=queries, training={"source": f"bench structural(items={items}, seed={seed})"})
    else:
        for _ in range(history):
            next(stream)
    model_items = set(load_artifact(models_dir, use_gpu=False).row_of)
    from streamrec.contract import encode_event

    user_code = {user_id: code for code, user_id in enumerate(shop.user_ids)}
    keys: list[bytes] = []
    values: list[bytes] = []
    event_ids: list[bytes] = []
    codes: list[int] = []
    dropped = 0
    for event in stream:
        if event.item_id not in model_items:  # never seen in the history: the worker would reject it
            dropped += 1
            continue
        keys.append(event.user_id.encode())
        values.append(encode_event(event))
        event_ids.append(event.event_id.encode())
        codes.append(user_code[event.user_id])
    meta = {"history_events": history, "dropped_unknown_items": dropped, "shop_rate": shop_rate,
            "build_s": round(time.perf_counter() - started, 1)}
    cached = {"items": items, "users": users, "seed": seed, "item_vectors": "trained" if trained else "structural",
              "factory": factory, "keys": keys, "values": values, "event_ids": event_ids,
              "user_codes": np.array(codes, dtype=np.int64), "meta": meta}
    partial = events_file.with_suffix(".partial")
    with partial.open("wb") as handle:
        pickle.dump(cached, handle, protocol=pickle.HIGHEST_PROTOCOL)
    partial.replace(events_file)
    log(f"workload ready in {meta['build_s']} s: {len(values)} live events ({dropped} on unseen items dropped)")
    return Workload(model_dir=models_dir, **cached)


# --------------------------------------------------------------------------- producing


class Pacer:
    """Paces event ``n`` to leave at ``start + n / rate``; a late producer catches up
    without sleeping (no drift), an early one sleeps until the event is due, unless it is due
    within ``slack`` seconds: then it leaves at once. At 5,000 events/s a sleep per event was
    5,000 wake-ups a second of the bench's own process on the two cores it shares with the
    worker and the broker; with 1 ms of slack events leave in groups of a millisecond's worth
    (each event's produce time is stamped when it leaves, so its latency is measured from then).

    >>> clock = iter([0.0, 0.0, 0.0, 0.6]).__next__
    >>> slept = []
    >>> pacer = Pacer(2.0, clock=clock, sleep=slept.append)
    >>> pacer.wait(0); pacer.wait(1); pacer.wait(2)
    >>> slept
    [0.5, 0.4]
    """

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep, slack: float = 0.001) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a finite number of events per second > 0, got {rate}")
        self.rate = rate
        self.slack = slack
        self._clock = clock
        self._sleep = sleep
        self.start = clock()

    def due(self, n: int) -> float:
        """When event ``n`` (0-based) is due, on the pacer's clock."""
        return self.start + n / self.rate

    def wait(self, n: int) -> None:
        delay = self.due(n) - self._clock()
        if delay > self.slack:
            self._sleep(delay)


def produce(
    bootstrap: str,
    topic: str,
    keys: list[bytes],
    values: list[bytes],
    *,
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Send the events in order, flat out or at ``rate`` events/s; return each one's produce
    time (Unix seconds, the moment it was handed to the producer, = its CreateTime)."""
    from producers.publisher import EventPublisher

    produced_at = np.empty(len(values), dtype=np.float64)
    now = time.time
    with EventPublisher(bootstrap, topic, queue_buffering_max_messages=500_000) as publisher:
        send = publisher.publish_raw
        if rate is None:
            for n, (key, value) in enumerate(zip(keys, values, strict=True)):
                produced_at[n] = now()
                send(key, value)
                if progress is not None and n % 10_000 == 0:
                    progress(n)
        else:
            # Connect and get the idempotent producer's id before the clock starts: the first
            # events would otherwise wait a few hundred ms in the bench's own producer and count
            # against the side. A message to a scratch topic does it without touching ``topic``.
            publisher._producer.produce(f"{topic}-bench-warmup", b"warm-up")
            publisher._producer.flush(30)
            pacer = Pacer(rate)
            for n, (key, value) in enumerate(zip(keys, values, strict=True)):
                pacer.wait(n)
                produced_at[n] = now()
                send(key, value)
                if progress is not None and n % 1_000 == 0:
                    progress(n)
        publisher.flush(60)
    return produced_at


def fill_workload(base: Workload, *, seed: int = 0, log: Callable[[str], None] = logger.info) -> Workload:
    """One view by each of the shop's ``base.users`` users, in random order, of an item drawn
    by popularity: after it, every user has a state. For measuring state per user and the
    worker's memory with that many users (``streamrec bench --fill-users``)."""
    from indexing.artifact import load_artifact
    from producers.synthetic import DEFAULT_START_TS, SyntheticShop
    from streamrec.contract import Event, encode_event

    started = time.perf_counter()
    shop = SyntheticShop(items=base.items, users=base.users, seed=base.seed)
    model_rows = load_artifact(base.model_dir, use_gpu=False).row_of
    known = np.array([item in model_rows for item in shop.item_ids])
    popularity = np.where(known, shop.item_popularity, 0.0)
    rng = np.random.default_rng([seed, 7])
    users = rng.permutation(base.users)
    items = rng.choice(base.items, size=base.users, p=popularity / popularity.sum())
    keys, values, event_ids = [], [], []
    for n, (user, item) in enumerate(zip(users.tolist(), items.tolist(), strict=True)):
        event = Event(f"fill-{seed}-{n}", shop.user_ids[user], shop.item_ids[item], "view", DEFAULT_START_TS + n * 0.01)
        keys.append(event.user_id.encode())
        values.append(encode_event(event))
        event_ids.append(event.event_id.encode())
    log(f"fill workload: {len(values)} events, one per user, in {time.perf_counter() - started:.1f} s")
    return Workload(base.items, base.users, base.seed, base.model_dir, base.item_vectors, base.factory,
                    keys, values, event_ids, users.astype(np.int64), {"fill": True})
