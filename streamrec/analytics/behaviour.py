"""Shopper behaviour from events: the funnel, interest across categories, rising and falling
items, sessions. Plain functions over a list of :class:`~streamrec.contract.Event`.

Definitions (docs/forecasting.md, "Behaviour analytics"):

- **funnel**: per hour (in the shop's time zone) and category, the distinct users who reached
  each stage view → click → add_to_cart → purchase (stages the log never has are left out, e.g.
  Taobao has no click); the drop-out from one stage to the next is ``1 - users(next) / users(stage)``;
- **interest**: each user's share of events per category; its entropy in bits (0: one category)
  and the share of the user's top category; summarised over users, with each category's share of users;
- **rising / falling items**: events per item in the second half of the range against the
  first half; growth ``(now - before) / before``; items with fewer than ``min_events`` in both halves are left out;
- **sessions**: a user's events split where 30 minutes pass without one; length is last minus
  first event time, depth the number of events.

>>> from streamrec.contract import Event
>>> events = [Event("1", "u", "a", "view", 0.0, category="c"), Event("2", "u", "a", "purchase", 60.0, category="c"),
...           Event("3", "v", "a", "view", 120.0, category="c")]
>>> row = funnel(events)[-1]
>>> row.category, row.users, row.drop_out
('*', {'view': 2, 'purchase': 1}, {'view→purchase': 0.5})
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

from streamrec.contract import Event

FUNNEL_STAGES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase")
SESSION_GAP_S = 30 * 60.0
NO_CATEGORY = "(none)"
ALL = "*"


@dataclass(frozen=True)
class FunnelRow:
    hour: str  # the hour's start, ISO, in the shop's time zone; "*" for the whole range
    category: str  # "*" for all categories
    users: dict[str, int]
    drop_out: dict[str, float]


def _stages(events: Sequence[Event]) -> list[str]:
    present = {e.type for e in events}
    return [stage for stage in FUNNEL_STAGES if stage in present]


def _row(hour: str, category: str, reached: dict[str, set[str]], stages: list[str]) -> FunnelRow:
    users = {stage: len(reached.get(stage, ())) for stage in stages}
    drop = {f"{a}→{b}": (1 - users[b] / users[a]) if users[a] else float("nan") for a, b in zip(stages, stages[1:])}
    return FunnelRow(hour, category, users, drop)


def funnel(events: Sequence[Event], timezone: str = "UTC") -> list[FunnelRow]:
    """Funnel rows per (hour, category), then per hour over all categories, per category over
    all hours, and last the whole range (``"*"`` marks a total)."""
    zone = ZoneInfo(timezone)
    stages = _stages(events)
    cells: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for event in events:
        if event.type not in stages:
            continue
        hour = datetime.fromtimestamp(event.ts - event.ts % 3600, zone).isoformat()
        category = event.category or NO_CATEGORY
        for key in ((hour, category), (hour, ALL), (ALL, category), (ALL, ALL)):
            cells[key][event.type].add(event.user_id)
    order = sorted(cells, key=lambda key: (key[0] == ALL, key[0], key[1] == ALL, key[1]))
    return [_row(hour, category, cells[(hour, category)], stages) for hour, category in order]


@dataclass(frozen=True)
class Interest:
    users: int
    mean_entropy_bits: float
    median_entropy_bits: float
    single_category_users: float  # share of users whose events all fall in one category
    mean_top_share: float  # mean over users of their top category's share of their events
    category_reach: dict[str, float]  # share of users with at least one event in the category, top first


def interest(events: Sequence[Event], top: int = 20) -> Interest:
    """How users' events spread over categories (events without a category are left out)."""
    per_user: dict[str, Counter[str]] = defaultdict(Counter)
    for event in events:
        if event.category:
            per_user[event.user_id][event.category] += 1
    if not per_user:
        return Interest(0, float("nan"), float("nan"), float("nan"), float("nan"), {})
    entropies, top_shares = [], []
    reach: Counter[str] = Counter()
    for counter in per_user.values():
        shares = np.array(list(counter.values()), dtype=float) / sum(counter.values())
        entropies.append(float(-(shares * np.log2(shares)).sum()) + 0.0)
        top_shares.append(float(shares.max()))
        reach.update(counter.keys())
    n = len(per_user)
    return Interest(
        users=n, mean_entropy_bits=float(np.mean(entropies)), median_entropy_bits=float(np.median(entropies)),
        single_category_users=sum(1 for c in per_user.values() if len(c) == 1) / n,
        mean_top_share=float(np.mean(top_shares)),
        category_reach={c: k / n for c, k in sorted(reach.items(), key=lambda p: (-p[1], p[0]))[:top]},
    )


@dataclass(frozen=True)
class Trend:
    item_id: str
    before: int
    now: int
    growth: float  # (now - before) / before; inf for an item new in the second half


def trends(events: Sequence[Event], *, split_ts: float | None = None, min_events: int = 5,
           top: int = 10) -> tuple[list[Trend], list[Trend]]:
    """The ``top`` rising and falling items: events in ``[split_ts, end]`` against before it
    (default: the middle of the range). Ties are broken by item id."""
    if not events:
        return [], []
    if split_ts is None:
        split_ts = (min(e.ts for e in events) + max(e.ts for e in events)) / 2
    before: Counter[str] = Counter(e.item_id for e in events if e.ts < split_ts)
    now: Counter[str] = Counter(e.item_id for e in events if e.ts >= split_ts)
    rows = []
    for item in before.keys() | now.keys():
        b, n = before[item], now[item]
        if max(b, n) < min_events:
            continue
        rows.append(Trend(item, b, n, (n - b) / b if b else math.inf))
    rising = sorted((r for r in rows if r.now > r.before), key=lambda r: (-r.growth, -r.now, r.item_id))[:top]
    falling = sorted((r for r in rows if r.now < r.before), key=lambda r: (r.growth, -r.before, r.item_id))[:top]
    return rising, falling


@dataclass(frozen=True)
class Sessions:
    count: int
    length_s: dict[str, float]  # mean, p50, p90, max
    depth: dict[str, float]  # events per session: mean, p50, p90, max
    single_event_share: float


def sessions(events: Sequence[Event], gap_s: float = SESSION_GAP_S) -> Sessions:
    """Sessions per user, cut where ``gap_s`` seconds pass without an event."""
    per_user: dict[str, list[float]] = defaultdict(list)
    for event in events:
        per_user[event.user_id].append(event.ts)
    lengths, depths = [], []
    for times in per_user.values():
        times.sort()
        first = previous = times[0]
        depth = 1
        for ts in times[1:]:
            if ts - previous > gap_s:
                lengths.append(previous - first)
                depths.append(depth)
                first, depth = ts, 0
            depth += 1
            previous = ts
        lengths.append(previous - first)
        depths.append(depth)
    if not depths:
        nan = float("nan")
        return Sessions(0, {"mean": nan}, {"mean": nan}, nan)

    def summary(values: list[float]) -> dict[str, float]:
        array = np.asarray(values, dtype=float)
        return {"mean": float(array.mean()), "p50": float(np.percentile(array, 50)),
                "p90": float(np.percentile(array, 90)), "max": float(array.max())}

    return Sessions(len(depths), summary(lengths), summary(depths), sum(1 for d in depths if d == 1) / len(depths))
