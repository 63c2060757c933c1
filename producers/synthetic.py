"""A seeded synthetic shop whose shoppers have learnable tastes.

The catalog: ``items`` products (``sku-000123``) in ``categories`` categories
(``cat-007``), each category split into small *clusters* of related products (a brand, a
product line: the things people view together). Item popularity follows a Zipf law with
exponent ``zipf_a`` over a random ranking, so a few items take a large share of events.
Prices are log-normal around a per-category price level.

The shoppers: ``users`` users (``u-00042``), each with one to three preferred categories
and four preferred clusters inside them (popular clusters attract more fans), and an
activity level (log-normal: a few heavy users, many light ones).

The stream: sessions arrive as a Poisson process; a session belongs to one user, stays in
one or two of the user's clusters (sometimes it explores a cluster anywhere in the shop),
starts with a view and goes on with views and clicks of items drawn by popularity inside
the cluster; favorites, add-to-carts and, rarer, purchases are of the item the user was
just looking at. Sessions of different users interleave and the stream is in event-time
order. Because every user keeps returning to the same clusters, a user's future items are
predictable from the past (same categories, co-viewed items): a personalised recommender
beats global popularity on it (``tests/unit/producers/test_synthetic.py`` checks this).

Everything is vectorised with numpy and driven by ``numpy.random.Generator`` seeded from
``seed``: the same arguments give the same events, call after call.

>>> shop = SyntheticShop(items=100, users=10, seed=7)
>>> events = list(shop.events(5, start_ts=1_700_000_000.0))
>>> [e.type for e in events][0], events[0].item_id.startswith("sku-")
('view', True)
>>> [e.event_id for e in events] == [e.event_id for e in shop.events(5, start_ts=1_700_000_000.0)]
True
"""

from __future__ import annotations

import logging
import math
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from streamrec.contract import EVENT_TYPE_CODES, EVENT_TYPES, CatalogItem, Event

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Event time of the first session when ``start_ts`` is not given (2023-11-14 22:13 UTC).
DEFAULT_START_TS = 1_700_000_000.0
#: Number of categories when not given (fewer if the shop has fewer items).
DEFAULT_CATEGORIES = 20
#: Mean arrival rate of events in event time (events per simulated second) when ``rate`` is None.
DEFAULT_RATE = 20.0
#: Mean number of events in a session (geometric length, at least 1).
MEAN_SESSION_LENGTH = 6.0
#: Longest session, in events.
MAX_SESSION_LENGTH = 60
#: Mean time between two events of a session, in seconds (exponential).
MEAN_THINK_S = 30.0
#: How many preferred clusters each user has.
PREFERRED_CLUSTERS = 4
#: Probability that a session also visits a second of the user's clusters.
SECOND_CLUSTER_P = 0.35
#: In such a session, the probability that an event is in the second cluster.
SECOND_CLUSTER_EVENT_P = 0.4
#: Probability that a session explores a cluster anywhere in the shop (drawn by popularity).
EXPLORE_SESSION_P = 0.1
#: Probability that a view or click is of a shop-wide popular item (a banner, a best-seller list).
POPULAR_EVENT_P = 0.05
#: Type of every event after the first of a session (the first is always a view).
FOLLOW_UP_TYPE_P: dict[str, float] = {
    "view": 0.57,
    "click": 0.25,
    "favorite": 0.05,
    "add_to_cart": 0.09,
    "purchase": 0.04,
}
#: Types that act on the item the user was just looking at.
_ANCHORED_TYPES = ("favorite", "add_to_cart", "purchase")
#: Users pick categories and clusters with probability proportional to popularity ** this
#: (below 1 spreads fans over more of the catalog than popularity alone would).
PREFERENCE_TEMPERATURE = 0.5
#: Sessions drawn per block; a block is generated, merged by time and emitted at once.
_SESSIONS_PER_BLOCK = 8192


@dataclass(frozen=True)
class EventColumns:
    """Events as columns of integers (indexes into the shop's id lists) and floats.

    ``types`` holds codes of :data:`streamrec.contract.EVENT_TYPE_CODES`; ``sessions`` global
    session numbers; ``ts`` event time in Unix seconds, non-decreasing.
    """

    users: np.ndarray
    items: np.ndarray
    types: np.ndarray
    ts: np.ndarray
    sessions: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, index: np.ndarray | slice) -> EventColumns:
        return EventColumns(self.users[index], self.items[index], self.types[index], self.ts[index], self.sessions[index])

    @staticmethod
    def concat(parts: list[EventColumns]) -> EventColumns:
        return EventColumns(*(np.concatenate([getattr(p, name) for p in parts]) for name in _COLUMNS))


_COLUMNS = ("users", "items", "types", "ts", "sessions")


def _cumulative(weights: np.ndarray) -> np.ndarray:
    """Normalised cumulative distribution, last value exactly 1."""
    cum = np.cumsum(weights, dtype=np.float64)
    cum /= cum[-1]
    cum[-1] = 1.0
    return cum


def _draw(cum: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Inverse-CDF draws from a cumulative distribution."""
    return np.minimum(np.searchsorted(cum, uniforms, side="right"), len(cum) - 1)


class _GroupedSampler:
    """Draw a member of a group with probability proportional to its weight inside the group.

    ``groups[m]`` is member m's group; ``draw(g, u)`` returns, for each group ``g[k]`` and
    uniform ``u[k]``, a member of that group — all in one vectorised ``searchsorted``.
    """

    def __init__(self, groups: np.ndarray, weights: np.ndarray, n_groups: int) -> None:
        self.order = np.argsort(groups, kind="stable")
        sorted_groups = groups[self.order]
        self.cum = np.cumsum(weights[self.order], dtype=np.float64)
        self.start = np.searchsorted(sorted_groups, np.arange(n_groups), side="left")
        self.end = np.searchsorted(sorted_groups, np.arange(n_groups), side="right")
        if np.any(self.end <= self.start):
            raise ValueError("every group needs at least one member")
        before = np.concatenate([[0.0], self.cum])
        self.base = before[self.start]
        self.mass = before[self.end] - self.base

    def draw(self, group: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        target = self.base[group] + uniforms * self.mass[group]
        position = np.searchsorted(self.cum, target, side="right")
        position = np.clip(position, self.start[group], self.end[group] - 1)
        return self.order[position]


class SyntheticShop:
    """A deterministic synthetic shop; see the module docstring for the model.

    Public, read-only attributes describe the ground truth: ``item_ids``, ``user_ids``,
    ``category_names`` (lists of str); ``item_category``, ``item_cluster``,
    ``cluster_category``, ``user_clusters`` (int arrays); ``item_price``,
    ``item_popularity`` (float arrays, popularity sums to 1).
    """

    def __init__(
        self,
        items: int = 5_000,
        users: int = 1_000,
        seed: int = 0,
        *,
        categories: int | None = None,
        zipf_a: float = 0.8,
        cluster_size: int = 25,
    ) -> None:
        if items < 1 or users < 1:
            raise ValueError(f"a shop needs at least one item and one user, got items={items}, users={users}")
        categories = min(DEFAULT_CATEGORIES, items) if categories is None else categories
        if not 1 <= categories <= items:
            raise ValueError(f"categories must be between 1 and the number of items ({items}), got {categories}")
        if not zipf_a > 0 or not math.isfinite(zipf_a):
            raise ValueError(f"zipf_a must be a finite number > 0, got {zipf_a}")
        if cluster_size < 1:
            raise ValueError(f"cluster_size must be >= 1, got {cluster_size}")
        self.seed = seed
        self.n_items = items
        self.n_users = users
        self.n_categories = categories
        self.zipf_a = zipf_a
        rng = np.random.default_rng([seed, 0])
        self._build_catalog(rng, cluster_size)
        self._build_users(rng)
        width = max(6, len(str(items - 1)))
        self.item_ids = [f"sku-{i:0{width}d}" for i in range(items)]
        self.user_ids = [f"u-{u:0{max(5, len(str(users - 1)))}d}" for u in range(users)]
        self.category_names = [f"cat-{c:03d}" for c in range(categories)]
        for array in (self.item_category, self.item_cluster, self.cluster_category, self.item_price,
                      self.item_popularity, self.user_clusters):
            array.setflags(write=False)

    # ----------------------------------------------------------------------- structure

    def _build_catalog(self, rng: np.random.Generator, cluster_size: int) -> None:
        n_items, n_categories = self.n_items, self.n_categories
        n_clusters = max(n_categories, math.ceil(n_items / cluster_size))
        self.cluster_category = rng.permutation(np.arange(n_clusters) % n_categories)
        extra = rng.integers(0, n_clusters, n_items - n_clusters)
        self.item_cluster = rng.permutation(np.concatenate([np.arange(n_clusters), extra]))
        self.item_category = self.cluster_category[self.item_cluster]
        rank = rng.permutation(n_items)
        weights = (rank + 1.0) ** -self.zipf_a
        self.item_popularity = weights / weights.sum()
        level = rng.lognormal(mean=math.log(30.0), sigma=0.8, size=n_categories)
        price = level[self.item_category] * rng.lognormal(0.0, 0.4, size=n_items)
        self.item_price = np.maximum(np.round(price, 2), 0.5)
        self.cluster_mass = np.bincount(self.item_cluster, weights=self.item_popularity, minlength=n_clusters)
        self._items_in_cluster = _GroupedSampler(self.item_cluster, self.item_popularity, n_clusters)
        self._clusters_in_category = _GroupedSampler(
            self.cluster_category, self.cluster_mass**PREFERENCE_TEMPERATURE, n_categories
        )
        self._cluster_cum = _cumulative(self.cluster_mass)
        self._item_cum = _cumulative(self.item_popularity)

    def _build_users(self, rng: np.random.Generator) -> None:
        n_users = self.n_users
        category_mass = np.bincount(self.cluster_category, weights=self.cluster_mass, minlength=self.n_categories)
        n_preferred = rng.choice([1, 2, 3], size=n_users, p=[0.45, 0.4, 0.15])
        preferred = _draw(_cumulative(category_mass**PREFERENCE_TEMPERATURE), rng.random((n_users, 3)))
        slot_category = preferred[np.arange(n_users)[:, None], np.arange(PREFERRED_CLUSTERS)[None, :] % n_preferred[:, None]]
        self.user_clusters = self._clusters_in_category.draw(slot_category, rng.random(slot_category.shape))
        self._user_slot_cum = np.cumsum(rng.dirichlet(np.ones(PREFERRED_CLUSTERS), size=n_users), axis=1)
        self._user_slot_cum[:, -1] = 1.0
        self._user_cum = _cumulative(rng.lognormal(0.0, 1.0, size=n_users))

    # ----------------------------------------------------------------------- sessions

    def _slots(self, rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
        uniforms = rng.random(len(users))
        return np.minimum((self._user_slot_cum[users] < uniforms[:, None]).sum(axis=1), PREFERRED_CLUSTERS - 1)

    def _sessions(
        self, rng: np.random.Generator, first_session: int, first_start: float, mean_gap: float
    ) -> tuple[EventColumns, float]:
        """One block of whole sessions, events grouped by session (not yet merged by time),
        and the start time of its last session. The first session starts at ``first_start``.
        """
        count = _SESSIONS_PER_BLOCK
        lengths = np.minimum(rng.geometric(1.0 / MEAN_SESSION_LENGTH, count), MAX_SESSION_LENGTH)
        gaps = rng.exponential(mean_gap, count)
        gaps[0] = 0.0
        starts = first_start + np.cumsum(gaps)
        users = _draw(self._user_cum, rng.random(count))
        primary = self.user_clusters[users, self._slots(rng, users)]
        secondary = self.user_clusters[users, self._slots(rng, users)]
        explore = rng.random(count) < EXPLORE_SESSION_P
        primary = np.where(explore, _draw(self._cluster_cum, rng.random(count)), primary)
        two_clusters = (rng.random(count) < SECOND_CLUSTER_P) & ~explore

        total = int(lengths.sum())
        session = np.repeat(np.arange(count), lengths)
        first = np.repeat(np.cumsum(lengths) - lengths, lengths)
        position = np.arange(total) - first

        use_second = two_clusters[session] & (rng.random(total) < SECOND_CLUSTER_EVENT_P)
        cluster = np.where(use_second, secondary[session], primary[session])
        item = self._items_in_cluster.draw(cluster, rng.random(total))
        popular = rng.random(total) < POPULAR_EVENT_P
        item = np.where(popular, _draw(self._item_cum, rng.random(total)), item)

        type_names = list(FOLLOW_UP_TYPE_P)
        type_codes = np.array([EVENT_TYPE_CODES[name] for name in type_names])
        kind = type_codes[_draw(_cumulative(np.array(list(FOLLOW_UP_TYPE_P.values()))), rng.random(total))]
        kind[position == 0] = EVENT_TYPE_CODES["view"]
        anchored = np.isin(kind, [EVENT_TYPE_CODES[name] for name in _ANCHORED_TYPES])
        # Forward-fill: an anchored event takes the item of the latest non-anchored event of its
        # session (position 0 is never anchored, so the fill never crosses a session boundary).
        source = np.maximum.accumulate(np.where(anchored, 0, np.arange(total)))
        item = item[source]

        gaps = rng.exponential(MEAN_THINK_S, total)
        gaps[position == 0] = 0.0
        elapsed = np.cumsum(gaps)
        ts = starts[session] + (elapsed - elapsed[first])
        columns = EventColumns(users[session], item, kind, np.round(ts, 3), session + first_session)
        return columns, float(starts[-1])

    def event_columns(self, n_events: int, start_ts: float | None = None, rate: float | None = None) -> Iterator[EventColumns]:
        """The stream of :meth:`events` as column blocks (fast; for evaluation and benchmarks)."""
        if n_events < 0:
            raise ValueError(f"n_events must be >= 0, got {n_events}")
        rate = DEFAULT_RATE if rate is None else rate
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a finite number of events per second > 0, got {rate}")
        start = DEFAULT_START_TS if start_ts is None else float(start_ts)
        if not start >= 0 or not math.isfinite(start):
            raise ValueError(f"start_ts must be Unix seconds >= 0, got {start_ts}")
        rng = np.random.default_rng([self.seed, 1])
        mean_gap = MEAN_SESSION_LENGTH / rate
        next_start, first_session, emitted = start, 0, 0
        carry: EventColumns | None = None
        while emitted < n_events:
            block, last_start = self._sessions(rng, first_session, next_start, mean_gap)
            first_session += _SESSIONS_PER_BLOCK
            next_start = last_start + float(rng.exponential(mean_gap))
            pending = block if carry is None else EventColumns.concat([carry, block])
            pending = pending.take(np.argsort(pending.ts, kind="stable"))
            # Every later session starts after this block's last one, so all events up to
            # that start time are final; the rest wait for the next block.
            cut = int(np.searchsorted(pending.ts, np.round(last_start, 3), side="right"))
            cut = min(cut, n_events - emitted)
            emitted += cut
            carry = pending.take(slice(cut, None))
            yield pending.take(slice(0, cut))

    def catalog(self, updated_at: float | None = None) -> list[CatalogItem]:
        """The shop's catalog records: category path ``("Shop", "cat-007")``, the cluster as the
        brand (``line-0042``), the price in EUR, everything in stock.

        >>> SyntheticShop(items=3, users=1, seed=0).catalog()[0].category
        ('Shop', 'cat-001')
        """
        return [
            CatalogItem(item_id, title=f"Product {item_id} of line {cluster}", category=("Shop", self.category_names[category]),
                        brand=f"line-{cluster:04d}", price=round(price, 2), currency="EUR", updated_at=updated_at)
            for item_id, category, cluster, price in zip(self.item_ids, self.item_category.tolist(),
                                                         self.item_cluster.tolist(), self.item_price.tolist())
        ]

    def new_item(self, item_id: str, like: int, updated_at: float | None = None) -> CatalogItem:
        """A product that was not in the shop before, of the same category and line as item ``like``."""
        cluster = int(self.item_cluster[like])
        return CatalogItem(item_id, title=f"New product {item_id} of line {cluster}",
                           category=("Shop", self.category_names[int(self.item_category[like])]),
                           brand=f"line-{cluster:04d}", price=round(float(self.item_price[like]), 2), currency="EUR",
                           updated_at=updated_at)

    def events(self, n_events: int, start_ts: float | None = None, rate: float | None = None) -> Iterator[Event]:
        """Generate ``n_events`` contract events in non-decreasing event time.

        ``start_ts``: event time of the first event (default :data:`DEFAULT_START_TS`);
        ``rate``: mean events per second of *event time* (default :data:`DEFAULT_RATE`), which
        sets how densely sessions overlap; it does not pace anything in wall-clock time. The
        stream starts with no session open, so the first few minutes of event time are sparser.
        Event ids are ``syn-<seed>-<n>``, session ids ``syn-<seed>-s<k>``.
        """
        prices = self.item_price.tolist()
        item_category = [self.category_names[c] for c in self.item_category.tolist()]
        prefix = f"syn-{self.seed}-"
        number = 0
        for block in self.event_columns(n_events, start_ts, rate):
            # Column-wise with C-level lookups (itemgetter, map): ~3x faster than a loop.
            users, items = block.users.tolist(), block.items.tolist()
            yield from map(
                Event,
                [f"{prefix}{n}" for n in range(number, number + len(users))],
                _pick(self.user_ids, users),
                _pick(self.item_ids, items),
                _pick(EVENT_TYPES, block.types.tolist()),
                block.ts.tolist(),
                [f"{prefix}s{k}" for k in block.sessions.tolist()],
                _pick(prices, items),
                _pick(item_category, items),
            )
            number += len(users)


def _pick(values: Sequence[T], indexes: list[int]) -> Sequence[T]:
    """``[values[i] for i in indexes]``, done in C."""
    if len(indexes) < 2:
        return [values[i] for i in indexes]
    return operator.itemgetter(*indexes)(values)
