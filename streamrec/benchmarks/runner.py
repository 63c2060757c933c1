"""One side of the benchmark against a real broker: the worker, or the naive per-event agent.

:func:`run_side` gives the side its own topics and consumer group, starts the collector on
its recommendations topic, pre-produces the backlog (flat-out mode) or produces at a steady
rate once the side is ready (rate mode), samples the side's process (CPU, RSS), the broker's
CPU and the group's lag, waits until every user's last event has its recommendation, stops
everything it started, and turns what it saw into a :class:`SideResult`.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamrec.benchmarks.load import Workload, produce
from streamrec.benchmarks.measure import (
    LagSampler,
    ProcessSampler,
    RecommendationCollector,
    answer_times,
    percentiles,
    sustained_rate,
    table_footprint,
)
from streamrec.harness.worker import WorkerConfig, WorkerProcess

logger = logging.getLogger(__name__)

SIDES = ("worker", "naive")


class NaiveAgentProcess(WorkerProcess):
    """The naive agent (:mod:`streamrec.benchmarks.naive_agent`) run exactly like a worker process."""

    def start(self) -> NaiveAgentProcess:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streamrec.benchmarks.naive_agent", "--log-level", self.loglevel],
                env=self.config.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started_at = time.monotonic()
        return self


class Profiler:
    """py-spy attached to a process, sampling until :meth:`stop` (raw collapsed stacks)."""

    def __init__(self, pid: int, output: Path, rate: int = 100) -> None:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(py_spy).exists():
            raise RuntimeError("--profile needs py-spy: `.venv/bin/pip install py-spy`")
        self.output = output
        self._log = open(output.with_suffix(".log"), "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [py_spy, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--nonblocking",
             "--output", str(output)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> Path | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._log.close()
        return self.output if self.output.exists() else None


@dataclass
class SideResult:
    """What one side did. ``summary()`` is the JSON the CLI prints."""

    side: str
    mode: str
    events: int
    answered: int
    recommendations: int
    events_per_s: float | None
    latency_ms: dict[str, float | int | None]
    cpu_s: float | None
    cpu_s_total: float | None
    rss_mb: float | None
    ready_s: float
    window_s: float | None
    produce_rate: float | None
    broker_cpu_s: float | None
    bench_cpu_s: float | None
    #: (seconds since the side started, committed-offset lag)
    lag: list[tuple[float, int]] = field(default_factory=list)
    #: (seconds since the side started, events produced but not yet answered)
    backlog: list[tuple[float, int]] = field(default_factory=list)
    #: per answered event: (seconds since the side started it was produced, latency ms)
    latency_series: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    profile: Path | None = None
    kept: dict[bytes, bytes] = field(default_factory=dict)
    log_file: Path | None = None
    #: users in the table, bytes per encoded state and per user on disk (after the run)
    table: dict[str, float | int | None] = field(default_factory=dict)
    #: At a fixed rate: ``latency_ms`` over the events produced after the first STEADY_AFTER_S
    #: seconds (the worker's and broker's first batches run cold); None flat out.
    latency_ms_steady: dict[str, float | int | None] | None = None
    #: Recommendation lists per second, from the lists' arrival times as ``events_per_s`` is
    #: from the answers' (the worker sends one list per user and batch, the naive agent one per event).
    lists_per_s: float | None = None

    def summary(self) -> dict[str, object]:
        def r(value: float | None, digits: int = 1) -> float | None:
            return None if value is None else round(value, digits)

        return {
            "mode": self.mode,
            "events": self.events,
            "answered": self.answered,
            "recommendations": self.recommendations,
            "events_per_s": r(self.events_per_s),
            "lists_per_s": r(self.lists_per_s),
            "latency_ms": {k: (r(v, 2) if isinstance(v, float) else v) for k, v in self.latency_ms.items()},
            "latency_ms_steady": None if self.latency_ms_steady is None else
            {k: (r(v, 2) if isinstance(v, float) else v) for k, v in self.latency_ms_steady.items()},
            "cpu_s": r(self.cpu_s, 2),
            "cpu_s_total": r(self.cpu_s_total, 2),
            "cpu_us_per_event": r(None if not self.cpu_s or not self.answered else 1e6 * self.cpu_s / self.answered),
            "rss_mb": r(self.rss_mb),
            "ready_s": r(self.ready_s, 2),
            "window_s": r(self.window_s, 2),
            "produce_rate": r(self.produce_rate),
            "broker_cpu_s": r(self.broker_cpu_s, 2),
            "bench_cpu_s": r(self.bench_cpu_s, 2),
            "max_lag": max((lag for _, lag in self.lag), default=None),
            "table": self.table,
        }


#: At a fixed rate, ``latency_ms_steady`` leaves out the events of the first seconds.
STEADY_AFTER_S = 2.0


def run_side(
    side: str,
    workload: Workload,
    *,
    bootstrap: str,
    workdir: Path,
    run_id: str,
    rate: float | None = None,
    partitions: int = 4,
    batch_size: int | None = None,
    nprobe: int | None = None,
    timeout: float = 600.0,
    faiss_threads: int = 1,
    broker_pid: int | None = None,
    profile: bool = False,
    keep: set[bytes] | None = None,
    log: Callable[[str], None] = logger.info,
) -> SideResult:
    """Drive ``workload`` through one side and measure it (see the module docstring)."""
    from streamrec.kafka.admin import ensure_topics

    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    name = f"bench-{run_id}-{side}"
    events_topic, recs_topic, dlq_topic = f"{name}-events", f"{name}-recommendations", f"{name}-dlq"
    ensure_topics(bootstrap, {events_topic: partitions, recs_topic: partitions, dlq_topic: partitions})
    extra_env = {"STREAMREC_INDEX__USE_GPU": os.environ.get("STREAMREC_INDEX__USE_GPU", "true")}
    if faiss_threads:
        # On 2 cores shared with the broker, FAISS's OpenMP threads spin and wait on each other:
        # one thread is many times faster there (docs/performance.md). Both sides get the same.
        extra_env["OMP_NUM_THREADS"] = str(faiss_threads)
    # The worker's own setting (create_app applies it, to both sides): the same number.
    extra_env["STREAMREC_INDEX__SEARCH_THREADS"] = str(faiss_threads or os.cpu_count() or 1)
    if nprobe is not None:
        extra_env["STREAMREC_INDEX__NPROBE"] = str(nprobe)
    config = WorkerConfig(
        bootstrap=bootstrap,
        models_dir=workload.model_dir,
        data_dir=workdir / f"{side}-data",
        app_id=name,
        events_topic=events_topic,
        recommendations_topic=recs_topic,
        dlq_topic=dlq_topic,
        partitions=partitions,
        batch_size=batch_size,
        extra_env=extra_env,
    )
    process_class = WorkerProcess if side == "worker" else NaiveAgentProcess
    process = process_class(config, log_file=workdir / f"{side}.log", loglevel="info")

    mode = "flat_out" if rate is None else "rate"
    collector = RecommendationCollector(bootstrap, recs_topic, partitions, workload.last_event_ids(), keep=keep or ()).start()
    produced_at = np.full(len(workload), np.nan)
    produce_rate = None
    if rate is None:
        log(f"{side}: pre-producing {len(workload)} events to {events_topic}")
        began = time.perf_counter()
        produced_at = produce(bootstrap, events_topic, workload.keys, workload.values)
        produce_rate = len(workload) / (time.perf_counter() - began)

    bench_sampler = ProcessSampler(os.getpid()).start()
    broker_sampler = ProcessSampler(broker_pid).start() if broker_pid else None
    lag_sampler = LagSampler(bootstrap, name, events_topic, partitions).start()
    started_wall = time.time()
    process.start()
    sampler = ProcessSampler(process.pid).start()
    profiler: Profiler | None = None
    profile_file = None
    try:
        ready_s = process.wait_ready(timeout=180)
        log(f"{side}: ready in {ready_s:.1f} s")
        if rate is not None:
            log(f"{side}: producing {len(workload)} events at {rate:g}/s")
            began = time.perf_counter()
            produced_at = produce(bootstrap, events_topic, workload.keys, workload.values, rate=rate)
            produce_rate = len(workload) / (time.perf_counter() - began)
        deadline = time.monotonic() + timeout
        last_note = time.monotonic()
        while not collector.done.wait(0.05 if profile and profiler is None else 0.5):
            if profile and profiler is None and collector.data.arrivals:
                # Profile the processing only: from the first recommendation to the last.
                profiler = Profiler(process.pid, workdir / f"{side}.pyspy.txt")
            if not process.alive():
                raise RuntimeError(f"{side} exited with code {process.process.returncode}:\n{process.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{side}: {collector.waiting} of {collector.expected} users still without their last "
                    f"recommendation after {timeout:.0f} s (log: {process.log_file})"
                )
            if time.monotonic() - last_note > 10:
                last_note = time.monotonic()
                log(f"{side}: {len(collector.data.arrivals)} recommendations so far, "
                    f"{collector.waiting} users still waiting")
        if collector.error is not None:
            raise RuntimeError(f"the recommendations collector failed: {collector.error!r}")
    finally:
        sampler.stop()
        bench_sampler.stop()
        if broker_sampler is not None:
            broker_sampler.stop()
        lag_sampler.stop()
        if profiler is not None:
            profile_file = profiler.stop()
        process.stop()
        collector.stop()

    try:
        table = table_footprint(config.data_dir)
    except Exception as exc:  # noqa: BLE001 - a missing footprint is not a failed run
        logger.warning("could not read the %s's table: %s", side, exc)
        table = {}
    data = collector.data
    position_of = {event_id: position for position, event_id in enumerate(workload.event_ids)}
    positions = np.array([position_of.get(e, -1) for e in data.event_ids], dtype=np.int64)
    arrivals = np.array(data.arrivals, dtype=np.float64)
    known = positions >= 0
    answered_at = answer_times(workload.user_codes, workload.user_codes[positions[known]], positions[known], arrivals[known])
    latency = (answered_at - produced_at) * 1000.0
    events_per_s, t_first, t_last = sustained_rate(answered_at)
    lists_per_s = sustained_rate(arrivals[known])[0]

    def between(s: ProcessSampler | None) -> float | None:
        if s is None or t_first is None or t_last is None:
            return None
        return s.cpu_between(t_first, t_last)

    order = np.argsort(produced_at)
    latency_series = np.column_stack([produced_at[order] - started_wall, latency[order]])
    backlog = _backlog(produced_at, answered_at, started_wall)
    return SideResult(
        side=side,
        mode=mode,
        events=len(workload),
        answered=int(np.count_nonzero(~np.isnan(answered_at))),
        recommendations=int(known.sum()),
        events_per_s=events_per_s,
        lists_per_s=lists_per_s,
        latency_ms=percentiles(latency),
        latency_ms_steady=None if rate is None else
        percentiles(latency[produced_at >= np.nanmin(produced_at) + STEADY_AFTER_S]),
        cpu_s=between(sampler),
        cpu_s_total=sampler.cpu_total,
        rss_mb=sampler.peak_rss / 2**20 if sampler.peak_rss else None,
        ready_s=ready_s,
        window_s=None if t_first is None or t_last is None else t_last - t_first,
        produce_rate=produce_rate,
        broker_cpu_s=between(broker_sampler),
        bench_cpu_s=between(bench_sampler),
        lag=[(t - started_wall, lag) for t, lag in lag_sampler.samples],
        backlog=backlog,
        latency_series=latency_series,
        profile=profile_file,
        kept=data.kept,
        log_file=process.log_file,
        table=table,
    )


def _backlog(produced_at: np.ndarray, answered_at: np.ndarray, start: float, step: float = 0.25) -> list[tuple[float, int]]:
    """Events produced but not yet answered, every ``step`` seconds (the end-to-end lag)."""
    produced = np.sort(produced_at[~np.isnan(produced_at)])
    answered = np.sort(answered_at[~np.isnan(answered_at)])
    if produced.size == 0:
        return []
    end = max(produced[-1], answered[-1] if answered.size else produced[-1])
    times = np.arange(start, end + step, step)
    pending = np.searchsorted(produced, times, side="right") - np.searchsorted(answered, times, side="right")
    return [(float(t - start), int(n)) for t, n in zip(times, pending, strict=True)]
