"""New items: how soon, and how well, the worker recommends products its model has never seen.

The protocol (``streamrec evaluate --protocol new-items``), pure and in process:

1. The log (time order, :class:`~streamrec.evaluation.data.EventLog`) is cut at ``train_fraction`` of
   its events; a model is trained (:func:`indexing.train.train_model`) on the events before
   the cut only. An item whose first event comes after the cut is a **new item**.
2. The whole log up to ``end_fraction`` is replayed, in micro-batches of ``batch_size``
   events, through the worker's own core, :func:`streamrec.core.batch.process_batch`, with one
   :class:`streamrec.core.items.LiveItems` per variant. The events before the cut only warm up the
   users' states and lists (and the trending counts); they are not scored.
3. **Prequential scoring** after the cut: before each batch, an event ``(u, i)`` is a hit if
   ``i`` is in ``u``'s latest published list (the last recommendation for ``u``). Events of
   users with no event in an earlier batch are not scored (nothing personal to test), so
   every variant scores the same events; a user without a list (``frozen`` dropped all their
   events) scores misses. HR@10 is reported over the events on new items
   and over all events.
4. **Delay**: for every new item with an event after the cut, the number of stream events
   and the event-time seconds from its first event until the end of the first batch whose
   lists contain it (in any user's list, model or trending source), 0 if it was listed
   before its first event (a catalog prior makes that possible); median and p90 over the
   new items ever listed, and the share of new items ever listed.

The variants (:data:`VARIANTS`):

``frozen``
    events on items the model does not know are dropped before the worker sees them (as the
    worker did before new items existed): it can never recommend them (their events still
    count, as misses).
``fold-in``
    every event goes in; a new item gets a vector from the users who act on it (fold-in),
    no catalog.
``catalog``
    as ``fold-in``, and the catalog record of every item (``catalog``: model items and items
    that appear later alike) is given to the live item side before the replay: a new item
    starts from its catalog prior, refined by fold-in.
``prior-only``
    as ``catalog`` with ``new_item_prior_events`` huge: the prior never yields to fold-in
    (an item whose catalog features no model item shares has no prior and still folds in).

The catalog records the evaluation needs are built here (:func:`online_retail_catalog`,
:func:`amazon_catalog`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

import numpy as np

from indexing.index import build_index
from indexing.train import TrainParams, interactions_from_arrays, train_model
from streamrec.contract import EVENT_TYPES, CatalogItem, Event, encode_event
from streamrec.core.batch import Message, process_batch
from streamrec.core.interest import InterestParams
from streamrec.core.items import ItemRules, ItemsModel, LiveItems, catalog_features
from streamrec.core.state import UserState
from streamrec.evaluation.data import EventLog

VARIANTS: tuple[str, ...] = ("frozen", "fold-in", "catalog", "prior-only")
#: ``new_item_prior_events`` of the ``prior-only`` variant.
PRIOR_ONLY_EVENTS = 1e12

Progress = Callable[[str], None]


@dataclass
class VariantResult:
    """What one variant scored."""

    name: str
    hits_new: int = 0
    scored_new: int = 0
    hits_all: int = 0
    scored_all: int = 0
    #: Events after the cut whose user had no list yet (not scored).
    unscored: int = 0
    #: Events the worker never saw (``frozen``: events on unknown items).
    dropped: int = 0
    #: New items with an event after the cut, and how many of them were ever listed.
    new_items: int = 0
    listed: int = 0
    listed_before_first_event: int = 0
    delay_events: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    delay_seconds: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    seconds: float = 0.0

    @property
    def hr_new(self) -> float:
        return self.hits_new / self.scored_new if self.scored_new else 0.0

    @property
    def hr_all(self) -> float:
        return self.hits_all / self.scored_all if self.scored_all else 0.0

    def as_dict(self) -> dict[str, Any]:
        def q(values: np.ndarray, p: float) -> float | None:
            return round(float(np.percentile(values, p)), 1) if len(values) else None

        return {
            "variant": self.name,
            "HR@10_new_items": round(self.hr_new, 4),
            "HR@10_all": round(self.hr_all, 4),
            "scored_new_item_events": self.scored_new,
            "scored_events": self.scored_all,
            "unscored_events": self.unscored,
            "dropped_events": self.dropped,
            "new_items": self.new_items,
            "share_listed": round(self.listed / self.new_items, 4) if self.new_items else 0.0,
            "listed_before_first_event": self.listed_before_first_event,
            "delay_events_median": q(self.delay_events, 50),
            "delay_events_p90": q(self.delay_events, 90),
            "delay_seconds_median": q(self.delay_seconds, 50),
            "delay_seconds_p90": q(self.delay_seconds, 90),
            "seconds": round(self.seconds, 1),
        }


@dataclass
class NewItemsOutcome:
    variants: list[VariantResult]
    details: dict[str, Any]

    def records(self, dataset: str) -> list[dict[str, Any]]:
        return [{"dataset": dataset, "protocol": "new-items", **v.as_dict(), "params": self.details} for v in self.variants]


# --------------------------------------------------------------------------- the replay


def _events(log: EventLog, end: int) -> list[Event]:
    users, items, types, ts = log.users.tolist(), log.items.tolist(), log.types.tolist(), log.ts.tolist()
    ids = log.event_ids
    return [Event(ids[n] if ids is not None else f"e{n}", log.user_ids[users[n]], log.item_ids[items[n]],
                  EVENT_TYPES[types[n]], ts[n]) for n in range(end)]


def train_items_model(log: EventLog, cut: int, params: TrainParams, interest: InterestParams) -> ItemsModel:
    """Train on the events before ``cut`` as a version is trained (with ``factor_weight = "auto"``,
    the factor step's setting chosen on those events); the live side's view of it, what
    :meth:`ItemsModel.from_artifact` gives for the saved version (every array the worker's
    steps read), without the disk."""
    from streamrec.evaluation.choose import choose_for
    from streamrec.evaluation.served import ServedModel

    features = None if log.item_features is None else {  # the data names items by their rows
        str(row): log.item_features[item_id] for row, item_id in enumerate(log.item_ids) if item_id in log.item_features}
    data = interactions_from_arrays(np.asarray(log.users[:cut]), np.asarray(log.items[:cut]),
                                    log.types[:cut], log.ts[:cut], features)
    model = train_model(data, params, interest)
    choose_for(model, data, params, interest, model=ServedModel)
    version = SimpleNamespace(version="eval", item_ids=[log.item_ids[int(row)] for row in model.item_ids],
                              context=model.context, index=build_index(model.target, "Flat"),
                              meta={"training": model.summary}, extras={"target": model.target, **model.extras()})
    return ItemsModel.from_artifact(version)


def run_new_items(
    log: EventLog,
    *,
    catalog: Mapping[str, CatalogItem] | None = None,
    variants: Sequence[str] = VARIANTS,
    train_fraction: float = 0.5,
    end_fraction: float = 1.0,
    batch_size: int = 500,
    train_params: TrainParams | None = None,
    interest: InterestParams | None = None,
    rules: ItemRules | None = None,
    progress: Progress | None = None,
) -> NewItemsOutcome:
    """Run the protocol of the module docstring for each of ``variants``."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    if not 0.0 < train_fraction < end_fraction <= 1.0:
        raise ValueError(f"need 0 < train_fraction < end_fraction <= 1, got {train_fraction} and {end_fraction}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    train_params = train_params or TrainParams()
    interest = interest or InterestParams()
    rules = rules or ItemRules()
    end = max(2, int(round(end_fraction * len(log))))
    cut = min(end - 1, max(1, int(round(train_fraction * len(log)))))
    started = time.perf_counter()
    if catalog and log.item_features is None:  # a version is trained with the shop's catalog
        log = replace(log, item_features=catalog_features(catalog))
    model = train_items_model(log, cut, train_params, interest)
    train_seconds = time.perf_counter() - started
    if progress:
        progress(f"trained on {cut:,} events: {len(model.item_ids):,} items, d={model.context.shape[1]} "
                 f"({train_seconds:.1f} s)")

    events = _events(log, end)
    messages = [Message(e.user_id.encode(), encode_event(e)) for e in events]
    known = np.zeros(log.n_items, bool)
    model_rows = {item_id: row for row, item_id in enumerate(log.item_ids)}
    known[[model_rows[i] for i in model.item_ids]] = True
    items = log.items[:end]
    on_new = ~known[items]
    first = np.full(log.n_items, -1, np.int64)
    first[items[::-1]] = np.arange(end)[::-1]  # the last write wins: each item's first event
    new_item_ids = {log.item_ids[i] for i in np.flatnonzero((first >= cut) & ~known)}
    details = {
        "events": end, "train_events": cut, "scored_segment": end - cut, "batch_size": batch_size,
        "train_fraction": train_fraction, "end_fraction": end_fraction, "model_items": len(model.item_ids),
        "new_items_in_segment": len(new_item_ids), "events_on_new_items": int(on_new[cut:].sum()),
        "dim": int(model.context.shape[1]), "catalog_items": len(catalog) if catalog else 0,
        "new_item_prior_events": rules.new_item_prior_events, "train_seconds": round(train_seconds, 1),
    }

    results = []
    for name in variants:
        if name in ("catalog", "prior-only") and not catalog:
            if progress:
                progress(f"{name}: skipped (no catalog for this dataset)")
            continue
        began = time.perf_counter()
        variant_rules = replace(rules, new_item_prior_events=PRIOR_ONLY_EVENTS) if name == "prior-only" else rules
        live = LiveItems(model, variant_rules, catalog if name in ("catalog", "prior-only") else None)
        result = _replay(name, live, events, messages, on_new, cut, batch_size, interest, new_item_ids)
        result.seconds = time.perf_counter() - began
        results.append(result)
        if progress:
            r = result.as_dict()
            progress(f"{name}: HR@10 new items {r['HR@10_new_items']:.4f} ({r['scored_new_item_events']:,} events), "
                     f"all {r['HR@10_all']:.4f} ({r['scored_events']:,}); listed {r['share_listed']:.1%} of "
                     f"{r['new_items']:,} new items, delay median {r['delay_events_median']} events "
                     f"({result.seconds:.1f} s)")
    return NewItemsOutcome(results, details)


def _replay(name: str, live: LiveItems, events: list[Event], messages: list[Message], on_new: np.ndarray, cut: int,
            batch_size: int, interest: InterestParams, new_item_ids: set[str]) -> VariantResult:
    result = VariantResult(name)
    states: dict[str, UserState] = {}
    lists: dict[str, frozenset[str]] = {}
    seen: set[str] = set()  # users with an event in an earlier batch: their events are scored
    first_event: dict[str, tuple[int, float]] = {}
    first_listed: dict[str, tuple[int, float]] = {}
    frozen = name == "frozen"
    model_items = set(live.model.item_ids)
    now = max(e.ts for e in events) + 1.0
    # Warm-up batches end exactly at the cut, so scoring starts on a batch boundary.
    bounds = [*range(0, cut, batch_size), *range(cut, len(events), batch_size), len(events)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        batch = events[a:b]
        if a >= cut:
            for n, event in enumerate(batch, start=a):
                if event.item_id in new_item_ids and event.item_id not in first_event:
                    first_event[event.item_id] = (n, event.ts)
                if event.user_id not in seen:
                    result.unscored += 1
                    continue
                shown = lists.get(event.user_id)  # None: every event of the user was dropped (frozen)
                hit = shown is not None and event.item_id in shown
                result.scored_all += 1
                result.hits_all += hit
                if on_new[n]:
                    result.scored_new += 1
                    result.hits_new += hit
        seen.update(e.user_id for e in batch)
        sent = messages[a:b]
        if frozen:
            keep = [j for j, e in enumerate(batch) if e.item_id in model_items]
            result.dropped += (len(sent) - len(keep)) if a >= cut else 0
            sent = [sent[j] for j in keep]
        out = process_batch(sent, lambda user_id, _position: states.get(user_id), live, interest, now=now) if sent else None
        if out is None:
            continue
        if out.rejected:
            raise RuntimeError(f"{name}: the worker rejected events: {out.rejected[:3]}")
        for user_id, (state, _) in out.states.items():
            states[user_id] = state
        published = (b, batch[-1].ts)
        for rec in out.recommendations:
            shown = frozenset(item.item_id for item in rec.items)
            lists[rec.user_id] = shown
            for item_id in shown:
                if item_id not in model_items and item_id not in first_listed:
                    first_listed[item_id] = published
    result.new_items = len(first_event)
    delays_n, delays_s = [], []
    for item_id, (n, ts) in first_event.items():
        listed = first_listed.get(item_id)
        if listed is None:
            continue
        result.listed += 1
        if listed[0] <= n:
            result.listed_before_first_event += 1
        delays_n.append(max(0, listed[0] - n))
        delays_s.append(max(0.0, listed[1] - ts))
    result.delay_events = np.asarray(delays_n, np.float64)
    result.delay_seconds = np.asarray(delays_s, np.float64)
    return result


__all__ = ["VARIANTS", "NewItemsOutcome", "VariantResult", "run_new_items", "train_items_model"]
