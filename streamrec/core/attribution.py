"""Attribution: which shopper actions a published list earned, counted per hour, model version
and experiment variant. Pure: the service (:mod:`streams.attribution`) feeds it lists and
events in the order it reads them and publishes what it aggregates.

The rules (docs/business.md, "Definitions"):

- a list is *published* when the worker sends it; it is *shown* when the shop sends an
  ``impression`` naming it (``list_id``), or, in a bucket where no list has an impression, when
  it is published (shops that log no impressions);
- an action (``click``, ``add_to_cart``, ``purchase``, or an ``impression``) is *attributed* to
  a list when it names the list (``list_id``) and the item is in that list; an action naming no
  list, or one this job no longer holds, is attributed to the user's newest list that held its
  item and was triggered strictly before the action, at most ``window_s`` before it (event time);
- an attributed purchase is a *conversion*; its revenue is ``price * quantity`` (quantity 1 when
  absent, nothing when the event has no price).

Actions count in the hour of the list they are attributed to (lists are cohorts: an hour's
rates are what that hour's lists earned, and they can still grow for ``window_s`` after it).

>>> from streamrec.contract import Event, Recommendation, ScoredItem
>>> a = Attributor(window_s=3600)
>>> a.add_list(Recommendation("u1", (ScoredItem("sku-1", 1.0),), "v1", "e1", 7200.0, 7200.1, "L1"))
True
>>> a.add_event(Event("e2", "u1", "sku-1", "purchase", 7260.0, price=5.0, quantity=2)).how
'window'
>>> c = a.hourly[(7200, "v1", "", "")]
>>> (c.lists, c.purchases, c.revenue)
(1, 1, 10.0)
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from streamrec.contract import Event, Recommendation

HOUR_S = 3600
#: Event types attributed to lists (views and favourites are not: a page view is not a click
#: on a recommendation, and a shop that logs clicks on lists sends ``click``).
ATTRIBUTED_TYPES = ("impression", "click", "add_to_cart", "purchase")
#: Event ids remembered to skip an event read twice (a producer's retry).
SEEN_EVENTS = 1_000_000


class BucketKey(NamedTuple):
    """An hourly bucket: start of the hour (Unix seconds), model version, experiment, variant
    ("" when none)."""

    hour: int
    model_version: str
    experiment: str
    variant: str


@dataclass(frozen=True)
class ShownList:
    list_id: str
    user_id: str
    item_ids: frozenset[str]
    event_ts: float
    key: BucketKey


@dataclass
class Counts:
    """What the lists of one bucket earned."""

    lists: int = 0
    #: Lists with at least one impression.
    impression_lists: int = 0
    #: Attributed actions.
    clicks: int = 0
    add_to_carts: int = 0
    purchases: int = 0
    revenue: float = 0.0
    #: Lists with at least one attributed click / add-to-cart / purchase.
    clicked_lists: int = 0
    carted_lists: int = 0
    converted_lists: int = 0

    @property
    def shown(self) -> int:
        """Lists shown: those with an impression when the bucket has any, else those published."""
        return self.impression_lists if self.impression_lists else self.lists

    def rates(self) -> dict[str, float | None]:
        """Click-through, add-to-cart and conversion rates: the share of shown lists with at
        least one such attributed action."""
        shown = self.shown
        return {name: (value / shown if shown else None) for name, value in
                (("ctr", self.clicked_lists), ("add_to_cart_rate", self.carted_lists),
                 ("conversion_rate", self.converted_lists))}

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "shown": self.shown, **self.rates()}


@dataclass
class ArmCounts:
    """One experiment variant over the whole experiment, per user (the randomisation unit)."""

    #: Users who were published a list of this variant.
    users: set[str] = field(default_factory=set)
    #: ... who clicked an item of one of their lists (attributed click).
    clicked: set[str] = field(default_factory=set)
    #: ... who bought an item of one of their lists (attributed purchase).
    converted: set[str] = field(default_factory=set)
    #: ... who bought anything after their first list (attributed or not).
    buyers: set[str] = field(default_factory=set)
    lists: int = 0
    #: Attributed purchases and their revenue.
    purchases: int = 0
    revenue: float = 0.0
    #: All purchases of the variant's users after their first list, and their revenue.
    all_purchases: int = 0
    all_revenue: float = 0.0
    #: Attributed revenue per user who has any, and the sum of its squares (for the revenue
    #: per user's variance: users without revenue count as 0).
    user_revenue: dict[str, float] = field(default_factory=dict)
    revenue_sumsq: float = 0.0

    def add_revenue(self, user_id: str, amount: float) -> None:
        old = self.user_revenue.get(user_id, 0.0)
        self.user_revenue[user_id] = old + amount
        self.revenue_sumsq += (old + amount) ** 2 - old**2

    def as_dict(self) -> dict[str, Any]:
        return {"users": len(self.users), "clicked_users": len(self.clicked), "converted_users": len(self.converted),
                "buyers": len(self.buyers), "lists": self.lists, "purchases": self.purchases,
                "revenue": round(self.revenue, 6), "all_purchases": self.all_purchases,
                "all_revenue": round(self.all_revenue, 6), "revenue_sumsq": self.revenue_sumsq}


class Attribution(NamedTuple):
    """An attributed action: the list it is credited to and how (``list_id`` or ``window``)."""

    list: ShownList
    how: str


def hour_of(ts: float) -> int:
    """The start of the hour holding ``ts``.

    >>> hour_of(7300.5)
    7200
    """
    return int(ts // HOUR_S) * HOUR_S


class Attributor:
    """Per-user recent lists (at most ``lists_per_user`` each, in memory) and the aggregates."""

    def __init__(self, *, window_s: float = 24 * 3600.0, lists_per_user: int = 32) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        if lists_per_user < 1:
            raise ValueError(f"lists_per_user must be >= 1, got {lists_per_user}")
        self.window_s = window_s
        self.lists_per_user = lists_per_user
        self._lists: dict[str, deque[ShownList]] = {}
        self._by_id: dict[str, ShownList] = {}
        #: ``(list_id, event type)`` of lists with such an attributed action.
        self._acted: set[tuple[str, str]] = set()
        self._seen_events: OrderedDict[str, None] = OrderedDict()
        #: Each user's experiment, variant and first list's event time (from their first stamped list).
        self._arm_of: dict[str, tuple[str, str, float]] = {}
        self.hourly: dict[BucketKey, Counts] = {}
        self.arms: dict[tuple[str, str], ArmCounts] = {}
        #: Buckets and arms changed since :meth:`drain_changes`.
        self.changed_buckets: set[BucketKey] = set()
        self.changed_arms: set[tuple[str, str]] = set()
        #: Actions of attributed types credited to no list, by type; events seen twice.
        self.unattributed: Counter[str] = Counter()
        self.duplicates = 0

    def add_list(self, rec: Recommendation) -> bool:
        """Remember a published list and count it; False when it was seen before (a re-sent list)."""
        if not rec.list_id or rec.list_id in self._by_id:
            return False
        key = BucketKey(hour_of(rec.event_ts), rec.model_version, rec.experiment or "", rec.variant or "")
        shown = ShownList(rec.list_id, rec.user_id, frozenset(i.item_id for i in rec.items), rec.event_ts, key)
        lists = self._lists.setdefault(rec.user_id, deque())
        if len(lists) == self.lists_per_user:
            old = lists.popleft()
            self._by_id.pop(old.list_id, None)
            for kind in ATTRIBUTED_TYPES:
                self._acted.discard((old.list_id, kind))
        lists.append(shown)
        self._by_id[rec.list_id] = shown
        self._bucket(key).lists += 1
        if rec.experiment:
            arm_key = (rec.experiment, rec.variant or "")
            self._arm_of.setdefault(rec.user_id, (*arm_key, rec.event_ts))
            arm = self._arm(*arm_key)
            arm.users.add(rec.user_id)
            arm.lists += 1
        return True

    def add_lists(self, recs: Iterable[Recommendation]) -> None:
        for rec in recs:
            self.add_list(rec)

    def find(self, event: Event) -> Attribution | None:
        """The list ``event`` is credited to, or None (nothing is counted)."""
        if event.list_id is not None:
            named = self._by_id.get(event.list_id)
            if named is not None and named.user_id == event.user_id and event.item_id in named.item_ids:
                return Attribution(named, "list_id")
        for shown in reversed(self._lists.get(event.user_id, ())):
            if shown.event_ts < event.ts <= shown.event_ts + self.window_s and event.item_id in shown.item_ids:
                return Attribution(shown, "window")
        return None

    def add_event(self, event: Event) -> Attribution | None:
        """Attribute one event and count it; the attribution, or None."""
        if event.type not in ATTRIBUTED_TYPES:
            return None
        if event.event_id in self._seen_events:
            self.duplicates += 1
            return None
        self._seen_events[event.event_id] = None
        if len(self._seen_events) > SEEN_EVENTS:
            self._seen_events.popitem(last=False)
        revenue = (event.price or 0.0) * (event.quantity or 1)
        exposed = self._arm_of.get(event.user_id)
        if event.type == "purchase" and exposed is not None and event.ts > exposed[2]:
            buyer = self._arm(exposed[0], exposed[1])
            buyer.buyers.add(event.user_id)
            buyer.all_purchases += 1
            buyer.all_revenue += revenue
        found = self.find(event)
        if found is None:
            self.unattributed[event.type] += 1
            return None
        shown = found.list
        counts = self._bucket(shown.key)
        arm = self._arm(shown.key.experiment, shown.key.variant) if shown.key.experiment else None
        first = (shown.list_id, event.type) not in self._acted
        self._acted.add((shown.list_id, event.type))
        if event.type == "impression":
            counts.impression_lists += first
        elif event.type == "click":
            counts.clicks += 1
            counts.clicked_lists += first
            if arm is not None:
                arm.clicked.add(event.user_id)
        elif event.type == "add_to_cart":
            counts.add_to_carts += 1
            counts.carted_lists += first
        else:  # purchase
            counts.purchases += 1
            counts.converted_lists += first
            counts.revenue += revenue
            if arm is not None:
                arm.converted.add(event.user_id)
                arm.purchases += 1
                arm.revenue += revenue
                arm.add_revenue(event.user_id, revenue)
        return found

    def forget(self, user_id: str) -> None:
        """Erase a user (``streamrec forget``): their lists and every per-user record go; the
        anonymous counts (lists, actions, revenue per hour and variant) stay as they were."""
        for shown in self._lists.pop(user_id, ()):
            self._by_id.pop(shown.list_id, None)
            for kind in ATTRIBUTED_TYPES:
                self._acted.discard((shown.list_id, kind))
        self._arm_of.pop(user_id, None)
        for key, arm in self.arms.items():
            if user_id in arm.users or user_id in arm.buyers:
                arm.users.discard(user_id)
                arm.clicked.discard(user_id)
                arm.converted.discard(user_id)
                arm.buyers.discard(user_id)
                revenue = arm.user_revenue.pop(user_id, 0.0)
                arm.revenue_sumsq -= revenue**2
                self.changed_arms.add(key)

    def drain_changes(self) -> tuple[list[tuple[BucketKey, Counts]], list[tuple[tuple[str, str], ArmCounts]]]:
        """The buckets and arms changed since the last call."""
        buckets = [(key, self.hourly[key]) for key in sorted(self.changed_buckets)]
        arms = [(key, self.arms[key]) for key in sorted(self.changed_arms)]
        self.changed_buckets.clear()
        self.changed_arms.clear()
        return buckets, arms

    def _bucket(self, key: BucketKey) -> Counts:
        self.changed_buckets.add(key)
        counts = self.hourly.get(key)
        if counts is None:
            counts = self.hourly[key] = Counts()
        return counts

    def _arm(self, experiment: str, variant: str) -> ArmCounts:
        key = (experiment, variant)
        self.changed_arms.add(key)
        arm = self.arms.get(key)
        if arm is None:
            arm = self.arms[key] = ArmCounts()
        return arm


# --------------------------------------------------------------------------- records on the topic


def bucket_record(key: BucketKey, counts: Counts) -> tuple[str, dict[str, Any]]:
    """The ``(key, value)`` of an hourly bucket on the attribution topic."""
    return (f"hourly|{key.hour}|{key.model_version}|{key.experiment}|{key.variant}",
            {"kind": "hourly", "hour": key.hour, "model_version": key.model_version,
             "experiment": key.experiment or None, "variant": key.variant or None, **counts.as_dict()})


def arm_record(key: tuple[str, str], arm: ArmCounts) -> tuple[str, dict[str, Any]]:
    """The ``(key, value)`` of an experiment variant's totals on the attribution topic."""
    return f"arm|{key[0]}|{key[1]}", {"kind": "arm", "experiment": key[0], "variant": key[1], **arm.as_dict()}
