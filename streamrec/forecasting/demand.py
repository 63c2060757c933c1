"""Daily demand from events: units per series and day, and the shop's trading calendar.

A *series* is the shop total (``shop``), one item (``item:<item_id>``) or one category
(``category:<category>``). A purchase adds its ``quantity`` (one when absent) to the day it
happened in, read in the shop's time zone. Views and carts are counted the same way into
their own series kinds (``views``/``carts`` prefixed), as leading signals.

>>> from streamrec.contract import Event
>>> counts = DemandCounts("UTC")
>>> counts.add(Event("e1", "u1", "sku-1", "purchase", 86_400.0 * 3 + 10, category="mugs", quantity=12))
>>> counts.add(Event("e2", "u2", "sku-1", "view", 86_400.0 * 3 + 20, category="mugs"))
>>> counts.units("item:sku-1", date(1970, 1, 4)), counts.units("category:mugs", date(1970, 1, 4))
(12.0, 12.0)
>>> counts.units("views:shop", date(1970, 1, 4))
1.0
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from streamrec.contract import Event

SHOP = "shop"
#: The event types counted as leading signals, and the prefix of their series.
SIGNAL_PREFIXES: dict[str, str] = {"view": "views:", "click": "views:", "add_to_cart": "carts:"}
#: Fewest occurrences of a weekday, all without a sale in the shop, before that weekday counts as closed.
MIN_WEEKS_FOR_CLOSED_WEEKDAY = 4

#: Bank holidays of England and Wales 2010-2012 (gov.uk), the days a UK shop knows in advance it may be closed.
UK_BANK_HOLIDAYS: frozenset[date] = frozenset(date.fromisoformat(d) for d in (
    "2010-12-27", "2010-12-28", "2011-01-03", "2011-04-22", "2011-04-25", "2011-04-29", "2011-05-02",
    "2011-05-30", "2011-08-29", "2011-12-26", "2011-12-27", "2012-01-02", "2012-04-06", "2012-04-09",
    "2012-05-07", "2012-06-04", "2012-06-05", "2012-08-27", "2012-12-25", "2012-12-26",
))


def item_series(item_id: str) -> str:
    return f"item:{item_id}"


def category_series(category: str) -> str:
    return f"category:{category}"


class DemandCounts:
    """Units per (series, day) and events per (series, hour of day, day), filled event by event."""

    def __init__(self, timezone: str = "UTC") -> None:
        self.zone = ZoneInfo(timezone)
        self._daily: dict[str, dict[date, float]] = defaultdict(lambda: defaultdict(float))
        self._hourly: dict[str, dict[tuple[date, int], float]] = defaultdict(lambda: defaultdict(float))
        self._day_cache: dict[int, tuple[date, int]] = {}

    def _day_hour(self, ts: float) -> tuple[date, int]:
        hour_key = int(ts // 3600)
        cached = self._day_cache.get(hour_key)
        if cached is None:
            local = datetime.fromtimestamp(hour_key * 3600, self.zone)
            cached = (local.date(), local.hour)
            if len(self._day_cache) > 200_000:
                self._day_cache.clear()
            self._day_cache[hour_key] = cached
        return cached

    def add(self, event: Event) -> None:
        day, hour = self._day_hour(event.ts)
        if event.type == "purchase":
            units = 1.0 if event.quantity is None else float(event.quantity)
            names = [SHOP, item_series(event.item_id)]
            if event.category:
                names.append(category_series(event.category))
            for name in names:
                self._daily[name][day] += units
            self._hourly[SHOP][(day, hour)] += units
            return
        prefix = SIGNAL_PREFIXES.get(event.type)
        if prefix is not None:
            self._daily[prefix + SHOP][day] += 1.0
            if event.category:
                self._daily[prefix + category_series(event.category)][day] += 1.0

    def add_all(self, events: Iterable[Event]) -> DemandCounts:
        for event in events:
            self.add(event)
        return self

    def units(self, series: str, day: date) -> float:
        return self._daily.get(series, {}).get(day, 0.0)

    def series_names(self) -> list[str]:
        return sorted(self._daily)

    def days(self) -> tuple[date, date] | None:
        """The first and last day with any count, or None before the first event."""
        shop = self._daily.get(SHOP)
        days = [d for counts in self._daily.values() for d in counts] if not shop else list(shop)
        return (min(days), max(days)) if days else None

    def matrix(self, series: Sequence[str], start: date, end: date) -> np.ndarray:
        """Units of each series (rows) on each day from ``start`` to ``end`` inclusive (columns)."""
        n_days = (end - start).days + 1
        if n_days <= 0:
            raise ValueError(f"end {end} is before start {start}")
        out = np.zeros((len(series), n_days))
        for row, name in enumerate(series):
            for day, value in self._daily.get(name, {}).items():
                col = (day - start).days
                if 0 <= col < n_days:
                    out[row, col] = value
        return out

    def hourly_shares(self, start: date, end: date) -> np.ndarray:
        """The share of the shop's units sold in each hour of the day (24 numbers summing to one;
        uniform when nothing was sold), over the days from ``start`` to ``end``."""
        totals = np.zeros(24)
        for (day, hour), value in self._hourly.get(SHOP, {}).items():
            if start <= day <= end:
                totals[hour] += value
        return totals / totals.sum() if totals.sum() > 0 else np.full(24, 1 / 24)

    def hourly_matrix(self, start: date, end: date) -> np.ndarray:
        """The shop's units per day (rows, ``start`` to ``end`` inclusive) and hour of the day (24 columns)."""
        n_days = (end - start).days + 1
        if n_days <= 0:
            raise ValueError(f"end {end} is before start {start}")
        out = np.zeros((n_days, 24))
        for (day, hour), value in self._hourly.get(SHOP, {}).items():
            row = (day - start).days
            if 0 <= row < n_days:
                out[row, hour] += value
        return out

    def top_items(self, n: int, before: date | None = None) -> list[str]:
        """The ``n`` item series with the most units (before ``before``), most first; ties by name."""
        totals = [(sum(v for d, v in counts.items() if before is None or d < before), name)
                  for name, counts in self._daily.items() if name.startswith("item:")]
        totals.sort(key=lambda pair: (-pair[0], pair[1]))
        return [name for total, name in totals[:n] if total > 0]


# --------------------------------------------------------------------------- the trading calendar


@dataclass(frozen=True)
class TradingCalendar:
    """The days a shop trades: every day but its ``closed_weekdays`` (0 = Monday) and ``closed_days``.

    Learned from the shop's own history (:func:`learn_calendar`) plus the holidays it knows in advance.
    """

    closed_weekdays: frozenset[int]
    closed_days: frozenset[date]

    def is_open(self, day: date) -> bool:
        return day.weekday() not in self.closed_weekdays and day not in self.closed_days

    @property
    def season(self) -> int:
        """Trading days in a week: the seasonal period of a series of trading days."""
        return 7 - len(self.closed_weekdays)


def learn_calendar(shop_units: np.ndarray, start: date, holidays: Iterable[date] = ()) -> TradingCalendar:
    """The trading calendar seen in the shop's daily units (``shop_units[k]`` is day ``start + k``).

    A weekday is closed when the shop sold nothing on any of its (at least
    :data:`MIN_WEEKS_FOR_CLOSED_WEEKDAY`) occurrences; a single day without a sale on an open
    weekday was a closure (a holiday) and joins ``holidays``, the closures known in advance.

    >>> units = np.array([5, 5, 5, 5, 5, 0, 3] * 4 + [0, 5, 5, 5, 5, 0, 3], dtype=float)
    >>> cal = learn_calendar(units, date(2024, 1, 1))   # 2024-01-01 is a Monday
    >>> sorted(cal.closed_weekdays), sorted(cal.closed_days), cal.season
    ([5], [datetime.date(2024, 1, 29)], 6)
    """
    units = np.asarray(shop_units, dtype=float)
    weekdays = np.array([(start + timedelta(days=k)).weekday() for k in range(len(units))])
    closed_weekdays = frozenset(
        wd for wd in range(7)
        if (weekdays == wd).sum() >= MIN_WEEKS_FOR_CLOSED_WEEKDAY and not units[weekdays == wd].any())
    closures = {start + timedelta(days=int(k)) for k in np.flatnonzero(units == 0) if weekdays[k] not in closed_weekdays}
    return TradingCalendar(closed_weekdays, frozenset(closures) | frozenset(holidays))
