"""Replay a stream of events into a publisher, optionally paced and with a progress bar.

Pacing is a token bucket (:class:`TokenBucket`): ``rate`` events per wall-clock second on
average, with bursts of at most ``burst`` events, so an oversleep is caught up without
exceeding the rate for long. Its clock and sleep are injectable, which makes the timing
logic testable without waiting.

>>> clock = [0.0]
>>> bucket = TokenBucket(rate=2.0, burst=1, clock=lambda: clock[0], sleep=lambda s: None)
>>> [bucket.reserve() for _ in range(3)]
[0.0, 0.5, 1.0]
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from streamrec.contract import Event

logger = logging.getLogger(__name__)

#: Default burst of the token bucket, in seconds' worth of events (at least one event).
BURST_SECONDS = 0.05
#: The progress bar is refreshed at most this often (per-event updates would cost more than sending).
_PROGRESS_EVERY_S = 0.1


class Publisher(Protocol):
    def publish(self, event: Event) -> None: ...
    def flush(self, timeout: float = ...) -> int: ...


@dataclass(frozen=True)
class ReplayStats:
    """What a replay did: events handed to the publisher, wall time, and what remained unflushed."""

    sent: int
    elapsed_s: float
    unflushed: int = 0

    @property
    def events_per_s(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else math.inf if self.sent else 0.0

    def summary(self) -> str:
        return f"{self.sent:,} events in {self.elapsed_s:.2f} s ({self.events_per_s:,.0f} events/s)"


class TokenBucket:
    """A token bucket for ``rate`` events per second, holding at most ``burst`` tokens.

    :meth:`reserve` takes one token and returns how long the caller must wait before
    acting (a debt is allowed, so waits are exact even when sleeps overshoot);
    :meth:`acquire` reserves and sleeps.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a finite number of events per second > 0, got {rate}")
        burst = max(1.0, rate * BURST_SECONDS) if burst is None else float(burst)
        if burst < 1:
            raise ValueError(f"burst must be at least 1 event, got {burst}")
        self.rate = float(rate)
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = burst
        self._last = clock()

    def reserve(self, tokens: float = 1.0) -> float:
        """Take ``tokens`` and return the seconds to wait before using them (0 if available)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= tokens
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def acquire(self, tokens: float = 1.0) -> None:
        wait = self.reserve(tokens)
        if wait > 0:
            self._sleep(wait)


def replay(
    events: Iterable[Event],
    publisher: Publisher,
    *,
    rate: float | None = None,
    progress: bool = False,
    total: int | None = None,
    flush_timeout: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ReplayStats:
    """Publish every event, at most ``rate`` per second (None: as fast as possible), then flush.

    ``progress`` shows a rich progress bar on stderr (``total`` makes it a bar with an ETA).
    The elapsed time includes the final flush, so ``events_per_s`` is a delivered rate.
    Errors of the publisher (``DeliveryError``, ``QueueFullError``) propagate.
    """
    bucket = None if rate is None else TokenBucket(rate, clock=clock, sleep=sleep)
    started = clock()
    sent = 0
    with _progress_bar(progress, total) as advance:
        last_shown = started
        shown = 0
        for event in events:
            if bucket is not None:
                bucket.acquire()
            publisher.publish(event)
            sent += 1
            if progress and sent & 0xFF == 0:
                now = clock()
                if now - last_shown >= _PROGRESS_EVERY_S:
                    advance(sent - shown)
                    shown, last_shown = sent, now
        unflushed = publisher.flush(flush_timeout)
        advance(sent - shown)
    elapsed = clock() - started
    if unflushed:
        logger.warning("%d event(s) still unflushed after %g s", unflushed, flush_timeout)
    return ReplayStats(sent=sent, elapsed_s=elapsed, unflushed=unflushed)


@contextmanager
def _progress_bar(enabled: bool, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr, or a no-op; yields ``advance(n)``."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("[bold]publishing"), BarColumn(), MofNCompleteColumn()]
    if total is not None:
        columns += [TaskProgressColumn(), TimeRemainingColumn()]
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("publishing", total=total)
        yield lambda n: bar.advance(task, n)
