"""``streamrec dashboard``: one live operations page over the workers' ``/metrics`` and the
dead-letter topic (docs/operations.md).

The dashboard scrapes every ``--metrics`` URL once a second (:class:`Scraper`), sums what the
workers report (counters and histogram buckets by label; gauges kept per worker), turns
counter differences into rates and histogram buckets into quantiles
(:func:`bucket_quantile`), and tails the dead-letter topic for the latest letters
(:class:`DeadLetterTail`, read with the contract's ``decode_dead_letter``). The page
(``/``) is plain HTML with a small script that polls ``/api/state`` every second: no build
step, nothing fetched from elsewhere. The business panels (conversion, forecasts, funnel) come
from :mod:`streams.panels`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web
from prometheus_client.parser import text_string_to_metric_families

from streamrec.contract import decode_dead_letter
from streams.followers import TopicFollower

logger = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("dashboard.html")

#: Samples of one scrape: ``{sample name: {sorted label pairs: value}}``.
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def parse_metrics(text: str) -> Samples:
    """The samples of a Prometheus text exposition, by name, then by sorted labels.

    >>> parse_metrics('# TYPE x_total counter\\nx_total{type="view"} 3.0\\n')
    {'x_total': {(('type', 'view'),): 3.0}}
    """
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    """Values of ``name`` summed by one label.

    >>> by_label({"x": {(("a", "1"), ("b", "u")): 2.0, (("a", "1"), ("b", "v")): 3.0}}, "x", "a")
    {'1': 5.0}
    """
    out: dict[str, float] = {}
    for labels, value in samples.get(name, {}).items():
        key = dict(labels).get(label, "")
        out[key] = out.get(key, 0.0) + value
    return out


def merge(scrapes: Iterable[Samples]) -> Samples:
    """The sum of several workers' samples, sample by sample (counters and histogram buckets add up)."""
    merged: Samples = {}
    for samples in scrapes:
        for name, values in samples.items():
            into = merged.setdefault(name, {})
            for labels, value in values.items():
                into[labels] = into.get(labels, 0.0) + value
    return merged


def bucket_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a histogram from its cumulative ``(le, count)`` buckets, as
    Prometheus's ``histogram_quantile`` estimates it: linear within the bucket it falls in;
    the highest finite bound when it falls in ``+Inf``; None without observations.

    >>> round(bucket_quantile(0.5, [(0.1, 0), (0.2, 10), (math.inf, 10)]), 6)
    0.15
    >>> bucket_quantile(0.99, [(0.1, 5), (0.2, 5), (math.inf, 10)])
    0.2
    >>> bucket_quantile(0.5, [(0.1, 0), (math.inf, 0)]) is None
    True
    """
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def histogram_buckets(samples: Samples, name: str) -> list[tuple[float, float]]:
    """The cumulative ``(le, count)`` buckets of histogram ``name`` (summed over other labels)."""
    return sorted((float(le), count) for le, count in by_label(samples, f"{name}_bucket", "le").items())


@dataclass
class Target:
    """One scraped ``/metrics`` endpoint and what its last scrape said."""

    url: str
    samples: Samples = field(default_factory=dict)
    up: bool = False
    error: str | None = None
    scraped_at: float | None = None


class Scraper:
    """Scrapes the targets, keeps the two newest merged scrapes, and builds the page's state."""

    def __init__(self, urls: Sequence[str], *, interval_s: float = 1.0, timeout_s: float = 2.0,
                 token: str | None = None) -> None:
        self.targets = [Target(url) for url in urls]
        #: Sent as ``Authorization: Bearer`` (serve's ``/metrics`` needs it when serve.token is set).
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._history: deque[tuple[float, Samples]] = deque(maxlen=2)

    async def scrape_once(self, session: ClientSession) -> None:
        async def one(target: Target) -> None:
            try:
                async with session.get(target.url) as response:
                    response.raise_for_status()
                    target.samples = parse_metrics(await response.text())
                target.up, target.error, target.scraped_at = True, None, time.time()
            except Exception as exc:  # noqa: BLE001 - a worker that is down is shown, not fatal
                target.up, target.error = False, f"{type(exc).__name__}: {exc}"

        await asyncio.gather(*(one(t) for t in self.targets))
        self._history.append((time.monotonic(), merge(t.samples for t in self.targets if t.up)))

    def session(self) -> ClientSession:
        """The HTTP session the scrapes use (with the bearer token, when given)."""
        return ClientSession(timeout=ClientTimeout(total=self.timeout_s), headers=self._headers)

    async def run(self) -> None:
        async with self.session() as session:
            while True:
                started = time.monotonic()
                await self.scrape_once(session)
                await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    def state(self) -> dict[str, Any]:
        """What the page shows, computed from the newest scrape (and the one before, for rates)."""
        if not self._history:
            return {"targets": [self._target_state(t) for t in self.targets], "ready": False}
        now_t, now = self._history[-1]
        before_t, before = self._history[0]
        span = now_t - before_t

        def rates(name: str, label: str | None) -> dict[str, float]:
            current = by_label(now, name, label) if label else {"": sum(now.get(name, {}).values())}
            if span <= 0:
                return {key: 0.0 for key in current}
            previous = by_label(before, name, label) if label else {"": sum(before.get(name, {}).values())}
            # A restarted worker's counter starts over: its difference is its new value.
            return {key: max(0.0, value - previous.get(key, 0.0)) / span for key, value in current.items()}

        events_total = by_label(now, "streamrec_events_total", "type")
        events_rate = rates("streamrec_events_total", "type")
        latency = histogram_buckets(now, "streamrec_event_to_list_seconds")
        lag, models = [], []
        for target in self.targets:
            for labels, value in sorted(target.samples.get("streamrec_consumer_lag", {}).items()):
                lag.append({"target": target.url, "partition": dict(labels).get("partition"), "lag": value})
            age = sum(target.samples.get("streamrec_model_age_seconds", {}).values()) or None
            for labels, value in target.samples.get("streamrec_model_info", {}).items():
                if value:
                    models.append({"target": target.url, "version": dict(labels).get("version"), "age_s": age})
        lag.sort(key=lambda row: (row["target"], int(row["partition"] or 0)))
        return {
            "ready": True,
            "updated_at": time.time(),
            "targets": [self._target_state(t) for t in self.targets],
            "events": {kind: {"total": events_total[kind], "rate": events_rate.get(kind, 0.0)}
                       for kind in sorted(events_total)},
            "events_rate": sum(events_rate.values()),
            "lists": {"total": sum(now.get("streamrec_lists_total", {}).values()),
                      "rate": rates("streamrec_lists_total", None)[""]},
            "latency": {
                "count": sum(now.get("streamrec_event_to_list_seconds_count", {}).values()),
                **{f"p{round(q * 100)}": bucket_quantile(q, latency) for q in (0.5, 0.95, 0.99)},
            },
            "lag": lag,
            "dead_letters": {reason: value for reason, value in
                             sorted(by_label(now, "streamrec_dead_letters_total", "reason").items())},
            "duplicates": sum(now.get("streamrec_duplicates_skipped_total", {}).values()),
            "models": models,
        }

    @staticmethod
    def _target_state(target: Target) -> dict[str, Any]:
        return {"url": target.url, "up": target.up, "error": target.error, "scraped_at": target.scraped_at}


class DeadLetterTail(TopicFollower):
    """The newest dead letters of ``topic``, read in a thread (from each partition's last
    ``keep`` messages on, then following the topic)."""

    name = "dead-letters"
    batch_size = 100

    def __init__(self, bootstrap: str, topic: str, *, keep: int = 10) -> None:
        super().__init__(bootstrap, topic)
        self.keep = keep
        self.latest: deque[dict[str, Any]] = deque(maxlen=keep)
        self.error = None

    def start_offsets(self, consumer: Any, partitions: list[int]) -> list[Any]:
        from confluent_kafka import TopicPartition

        assignment = []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=5)
            assignment.append(TopicPartition(self.topic, p, max(low, high - self.keep)))
        return assignment

    def handle_batch(self, messages: list[Any]) -> None:
        seen = sorted((self._readable(message.value()) for message in messages),
                      key=lambda letter: letter.get("rejected_at") or 0)
        self.latest.extend(seen)

    @staticmethod
    def _readable(value: bytes) -> dict[str, Any]:
        try:
            letter = decode_dead_letter(value)
        except Exception as exc:  # noqa: BLE001 - a letter the dashboard cannot read is shown as such
            return {"reason": "unreadable", "detail": f"{type(exc).__name__}: {exc}", "raw": value[:120].decode("utf-8", "replace")}
        raw = letter.pop("raw", b"")
        letter["raw"] = raw[:120].decode("utf-8", "replace") + ("…" if len(raw) > 120 else "")
        return letter

    def state(self) -> dict[str, Any]:
        with self.lock:
            latest = list(reversed(self.latest))
        return {"topic": self.topic, "latest": latest, "error": self.error}


def make_app(scraper: Scraper, dead_letters: DeadLetterTail | None, panels: Any = None) -> web.Application:
    """The dashboard's aiohttp app: ``/`` (the page), ``/api/state`` (what it shows), and the
    scraping task; ``panels`` (a :class:`streams.panels.BusinessPanels`, optional) adds the
    ``conversion``, ``forecasts`` and ``funnel`` parts of the state."""
    page = PAGE.read_bytes()

    async def index(_: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    async def api_state(_: web.Request) -> web.Response:
        state = scraper.state()
        state["dead_letter_tail"] = dead_letters.state() if dead_letters is not None else None
        if panels is not None:  # the funnel over the window may take a moment: off the event loop
            state |= await asyncio.get_running_loop().run_in_executor(None, panels.state)
        else:
            state |= {"conversion": None, "forecasts": None, "funnel": None}
        return web.json_response(state, headers={"Cache-Control": "no-store"})

    async def background(app: web.Application):  # noqa: ANN202 - aiohttp's cleanup context
        task = asyncio.create_task(scraper.run())
        if dead_letters is not None:
            dead_letters.start()
        if panels is not None:
            panels.start()
        yield
        task.cancel()
        if dead_letters is not None:
            await asyncio.get_running_loop().run_in_executor(None, dead_letters.stop)
        if panels is not None:
            await asyncio.get_running_loop().run_in_executor(None, panels.stop)

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/api/state", api_state)
    app.cleanup_ctx.append(background)
    return app
