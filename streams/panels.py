"""The business panels of the operations page (docs/operations.md, docs/business.md): conversion
by experiment variant, forecasts against actuals, and the funnel.

Three background readers, each a thread with its own consumer (no group commits), built with the
security settings (:func:`streamrec.kafka.security.client_config`); each waits, and says so, while
its topic does not exist:

- :class:`LatestByKey` over the compacted attribution topic (only the variants' ``arm|`` totals
  are kept: one record per experiment variant) and over the compacted forecasts topic (one record
  per series): read from the beginning, the newest value of each key wins;
- :class:`EventWindow` over the events topic, from the message time ``max(window, actual days)``
  ago: the events of the last ``window_s`` of event time (at most ``max_events``) for the funnel,
  and the purchased units per series and day of the last ``actual_days`` days for the actuals.
  Memory is bounded by ``max_events`` and by the series sold in ``actual_days``. Events that break
  the contract are counted by reason and skipped (the worker dead-letters them). The funnel is
  recomputed when new events came, at most every ``FUNNEL_PACE`` times its last duration.

What the page shows is computed by the functions the reports use: :func:`conversion_state` with
:func:`streamrec.core.abtest.analyse_arm_records` (as ``streamrec report experiment``) and
:func:`funnel_state` with :func:`streamrec.analytics.behaviour.funnel` (as ``streamrec report
behaviour``).
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from streamrec.analytics.behaviour import ALL, funnel
from streamrec.contract import Event, InvalidEvent, decode_event
from streamrec.core.abtest import analyse_arm_records
from streamrec.core.experiments import Experiment
from streamrec.forecasting.demand import SHOP, category_series, item_series
from streams.followers import TopicFollower

logger = logging.getLogger(__name__)

#: The funnel waits this many times its last computation's duration before the next one.
FUNNEL_PACE = 5.0


def _clean(value: Any) -> Any:
    """``value`` with NaN and infinities as None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class LatestByKey(TopicFollower):
    """The newest value (JSON) of every key of a compacted topic that ``keep(key)`` accepts."""

    name = "latest"

    def __init__(self, bootstrap: str, topic: str, keep: Callable[[str], bool] = lambda key: True) -> None:
        super().__init__(bootstrap, topic)
        self.keep = keep
        self.latest: dict[str, dict[str, Any]] = {}
        self.unreadable = 0

    def handle(self, key: bytes | None, value: bytes | None) -> None:
        name = (key or b"").decode("utf-8", "replace")
        if not self.keep(name):
            return
        if value is None:  # a tombstone deletes the key
            self.latest.pop(name, None)
            return
        try:
            self.latest[name] = orjson.loads(value)
        except orjson.JSONDecodeError:
            self.unreadable += 1
            logger.warning("%s: the value of key %r is not JSON", self.topic, name)

    def values(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.latest.values())


class EventWindow(TopicFollower):
    """The recent events (for the funnel) and the purchased units per series and day (for the actuals)."""

    name = "events"

    def __init__(self, bootstrap: str, topic: str, *, window_s: float = 24 * 3600.0, max_events: int = 100_000,
                 actual_days: int = 7, timezone: str = "UTC") -> None:
        super().__init__(bootstrap, topic)
        if window_s <= 0 or max_events < 1 or actual_days < 1:
            raise ValueError(f"the window ({window_s} s), the events kept ({max_events}) and the days of actuals "
                             f"({actual_days}) must be positive")
        self.window_s, self.actual_days, self.zone = window_s, actual_days, ZoneInfo(timezone)
        self.events: deque[Event] = deque(maxlen=max_events)
        self.newest_ts = -math.inf
        self.units: dict[date, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.read = 0
        self.skipped: dict[str, int] = {}
        self.version = 0

    def start_offsets(self, consumer: Any, partitions: list[int]) -> list[Any]:
        from confluent_kafka import TopicPartition

        since_ms = int((time.time() - max(self.window_s, self.actual_days * 86400.0)) * 1000)
        found = consumer.offsets_for_times([TopicPartition(self.topic, p, since_ms) for p in partitions], timeout=10)
        # An offset of -1 (nothing that recent) starts at the end.
        return [TopicPartition(self.topic, tp.partition, tp.offset if tp.offset >= 0 else -1) for tp in found]

    def handle(self, key: bytes | None, value: bytes | None) -> None:
        try:
            event = decode_event(value)
        except InvalidEvent as exc:
            self.skipped[exc.reason] = self.skipped.get(exc.reason, 0) + 1
            return
        self.read += 1
        self.version += 1
        self.newest_ts = max(self.newest_ts, event.ts)
        self.events.append(event)
        while self.events and self.events[0].ts < self.newest_ts - self.window_s:
            self.events.popleft()
        if event.type == "purchase":
            day = datetime.fromtimestamp(event.ts, self.zone).date()
            units = 1.0 if event.quantity is None else float(event.quantity)
            names = [SHOP, item_series(event.item_id)] + ([category_series(event.category)] if event.category else [])
            for name in names:
                self.units[day][name] += units
            newest_day = datetime.fromtimestamp(self.newest_ts, self.zone).date()
            for old in [d for d in self.units if d <= newest_day - timedelta(days=self.actual_days)]:
                del self.units[old]

    def snapshot(self) -> tuple[list[Event], dict[date, dict[str, float]], date | None, int]:
        """The window's events, the units by day and series, the newest event's day, and the version."""
        with self.lock:
            newest = datetime.fromtimestamp(self.newest_ts, self.zone).date() if self.events else None
            # Partitions interleave: an older event may sit behind newer ones, so the window is applied again.
            since = self.newest_ts - self.window_s
            events = [e for e in self.events if e.ts >= since]
            return events, {d: dict(s) for d, s in self.units.items()}, newest, self.version


def conversion_state(arm_records: Sequence[Mapping[str, Any]], experiments: Sequence[Experiment],
                     metric: str = "converted") -> list[dict[str, Any]]:
    """Per configured experiment, what ``streamrec report experiment NAME --json`` computes from
    the same arm records (variants' users, conversions, rates with their 95 % intervals, lift over
    the control with its interval and p-value, the sample-ratio check), or the error it reports."""
    out = []
    for spec in experiments:
        arms = {r["variant"]: r for r in arm_records if r.get("kind") == "arm" and r.get("experiment") == spec.name}
        row: dict[str, Any] = {"experiment": spec.name, "metric": metric, "control": spec.control.name}
        try:
            result, revenue = analyse_arm_records(arms, spec.shares(), spec.control.name, metric=metric)
        except ValueError as exc:
            out.append(row | {"error": str(exc)})
            continue
        out.append(_clean(row | result.as_dict() | {"revenue_per_user": [asdict(m) for m in revenue]}))
    return out


def forecast_state(records: Sequence[Mapping[str, Any]], units: Mapping[date, Mapping[str, float]],
                   newest_day: date | None, *, top: int = 5) -> list[dict[str, Any]]:
    """The shop's forecast and the ``top`` other series with the most forecast units, each day's
    forecast next to the units sold that day so far on the events topic (None for days after the
    newest event's day, and for days before the ones the dashboard reads)."""
    read_from = min(units) if units else None

    def actual(series: str, day: date) -> float | None:
        if newest_day is None or day > newest_day or read_from is None or day < read_from:
            return None
        return units.get(day, {}).get(series, 0.0)

    def total(record: Mapping[str, Any]) -> float:
        return sum(d["units"] for d in record["days"])

    shop = [r for r in records if r.get("series") == SHOP]
    others = sorted((r for r in records if r.get("series") != SHOP), key=lambda r: (-total(r), r["series"]))[:top]
    out = []
    for record in shop + others:
        days = [{"date": d["date"], "forecast": d["units"], "actual": actual(record["series"], date.fromisoformat(d["date"]))}
                for d in record["days"]]
        out.append({"series": record["series"], "model": record.get("model"), "made_at": record.get("made_at"),
                    "history_end": record.get("history_end"), "days": days})
    return out


def funnel_state(events: Sequence[Event], timezone: str = "UTC") -> dict[str, Any]:
    """The funnel over ``events`` (:func:`streamrec.analytics.behaviour.funnel`'s whole-range row):
    distinct users per stage and the drop-out from each stage to the next; and events per type."""
    counts: dict[str, int] = {}
    for event in events:
        counts[event.type] = counts.get(event.type, 0) + 1
    whole = next((r for r in funnel(events, timezone) if r.hour == ALL and r.category == ALL), None)
    return _clean({
        "events": len(events), "events_by_type": dict(sorted(counts.items())),
        "from_ts": min((e.ts for e in events), default=None), "to_ts": max((e.ts for e in events), default=None),
        "users": whole.users if whole else {}, "drop_out": whole.drop_out if whole else {},
    })


class BusinessPanels:
    """The three readers and the page state they make (``conversion``, ``forecasts``, ``funnel``)."""

    def __init__(self, bootstrap: str, *, attribution_topic: str, forecasts_topic: str, events_topic: str,
                 experiments: Sequence[Experiment], window_s: float = 24 * 3600.0, max_events: int = 100_000,
                 actual_days: int = 7, timezone: str = "UTC", top_series: int = 5) -> None:
        self.experiments, self.timezone, self.top_series = list(experiments), timezone, top_series
        self.attribution = LatestByKey(bootstrap, attribution_topic, keep=lambda key: key.startswith("arm|"))
        self.forecasts = LatestByKey(bootstrap, forecasts_topic)
        self.events = EventWindow(bootstrap, events_topic, window_s=window_s, max_events=max_events,
                                  actual_days=actual_days, timezone=timezone)
        self._funnel_cache: tuple[int, dict[str, Any]] = (-1, {})
        self._funnel_next = -math.inf

    def start(self) -> BusinessPanels:
        for follower in (self.attribution, self.forecasts, self.events):
            follower.start()
        return self

    def stop(self) -> None:
        for follower in (self.attribution, self.forecasts, self.events):
            follower.stop()

    def state(self) -> dict[str, Any]:
        events, units, newest_day, version = self.events.snapshot()
        # The funnel is recomputed when new events came, and at most every FUNNEL_PACE times its
        # last computation's duration (so that a large window costs a bounded share of a core).
        now = time.monotonic()
        if version != self._funnel_cache[0] and now >= self._funnel_next:
            self._funnel_cache = (version, funnel_state(events, self.timezone))
            self._funnel_next = now + FUNNEL_PACE * (time.monotonic() - now)
        return {
            "conversion": {"topic": self.attribution.topic, "error": self.attribution.error,
                           "experiments": conversion_state(self.attribution.values(), self.experiments)},
            "forecasts": {"topic": self.forecasts.topic, "error": self.forecasts.error,
                          "events_topic": self.events.topic, "newest_day": newest_day and newest_day.isoformat(),
                          "series": forecast_state(self.forecasts.values(), units, newest_day, top=self.top_series)},
            "funnel": {"topic": self.events.topic, "error": self.events.error, "window_s": self.events.window_s,
                       "skipped": dict(self.events.skipped), **self._funnel_cache[1]},
        }
