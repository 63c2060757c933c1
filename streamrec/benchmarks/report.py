"""Writing benchmark results: the compact table, the JSON, the lag/latency CSVs and the plot."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.benchmarks.runner import SideResult


def ratio(worker: SideResult | None, naive: SideResult | None) -> float | None:
    """Worker events/s over naive events/s (None when either is missing)."""
    if worker is None or naive is None or not worker.events_per_s or not naive.events_per_s:
        return None
    return round(worker.events_per_s / naive.events_per_s, 2)


def side_table(results: Mapping[str, Any], title: str) -> Any:
    """A rich table of the sides' summaries (``results`` as in the JSON)."""
    from rich.table import Table

    sides = [s for s in ("worker", "naive") if results.get(s)]
    table = Table(title=title)
    table.add_column("")
    for side in sides:
        table.add_column(side, justify="right")

    def fmt(value: Any, unit: str = "") -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:,.1f}{unit}"
        return f"{value:,}{unit}"

    rows = [
        ("events", lambda s: fmt(s["events"])),
        ("events/s", lambda s: fmt(s["events_per_s"])),
        ("lists/s", lambda s: fmt(s.get("lists_per_s"))),
        ("latency p50", lambda s: fmt(s["latency_ms"]["p50"], " ms")),
        ("latency p95", lambda s: fmt(s["latency_ms"]["p95"], " ms")),
        ("latency p99", lambda s: fmt(s["latency_ms"]["p99"], " ms")),
        ("p99 after the first 2 s", lambda s: fmt((s.get("latency_ms_steady") or {}).get("p99"), " ms")),
        ("max lag (committed)", lambda s: fmt(s["max_lag"])),
        ("CPU s (window)", lambda s: fmt(s["cpu_s"])),
        ("CPU µs / event", lambda s: fmt(s["cpu_us_per_event"])),
        ("peak RSS", lambda s: fmt(s["rss_mb"], " MB")),
        ("broker CPU s", lambda s: fmt(s["broker_cpu_s"])),
        ("recommendations", lambda s: fmt(s["recommendations"])),
    ]
    for label, get in rows:
        table.add_row(label, *(get(results[side]) for side in sides))
    return table


def write_csvs(folder: Path, sides: Sequence[SideResult]) -> None:
    with (folder / "lag.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["side", "t_s", "committed_lag", "kind"])
        for side in sides:
            writer.writerows((side.side, round(t, 3), lag, "committed") for t, lag in side.lag)
            writer.writerows((side.side, round(t, 3), n, "unanswered") for t, n in side.backlog)
    with (folder / "latency.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["side", "produced_t_s", "latency_ms"])
        for side in sides:
            series = side.latency_series
            step = max(1, len(series) // 20_000)  # keep the file small
            writer.writerows((side.side, round(t, 4), round(ms, 2)) for t, ms in series[::step])


def rolling_percentile(series: np.ndarray, bin_s: float, q: float) -> tuple[np.ndarray, np.ndarray]:
    """Per ``bin_s`` window of produce time: the ``q``-th percentile latency."""
    if len(series) == 0:
        return np.zeros(0), np.zeros(0)
    valid = series[~np.isnan(series[:, 1])]
    if len(valid) == 0:
        return np.zeros(0), np.zeros(0)
    bins = np.floor((valid[:, 0] - valid[0, 0]) / bin_s).astype(int)
    centers, values = [], []
    for b in np.unique(bins):
        chunk = valid[bins == b, 1]
        centers.append(valid[0, 0] + (b + 0.5) * bin_s)
        values.append(np.percentile(chunk, q))
    return np.array(centers), np.array(values)


def throughput_series(series: np.ndarray, bin_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Events answered per second, per ``bin_s`` window of answer time (an event's produce time
    plus its latency), from a side's ``(produced_t_s, latency_ms)`` series.

    >>> centers, rates = throughput_series(np.array([[0.0, 100.0], [0.1, 200.0], [0.2, 1000.0]]), 0.5)
    >>> centers.tolist(), rates.tolist()
    ([0.25, 0.75, 1.25], [4.0, 0.0, 2.0])
    """
    if len(series) == 0:
        return np.zeros(0), np.zeros(0)
    valid = series[~np.isnan(series[:, 1])]
    if len(valid) == 0:
        return np.zeros(0), np.zeros(0)
    answered = valid[:, 0] + valid[:, 1] / 1000.0
    counts = np.bincount(np.floor(answered / bin_s).astype(np.int64))
    first = int(np.flatnonzero(counts)[0])
    counts = counts[first:]
    return (np.arange(len(counts)) + first + 0.5) * bin_s, counts / bin_s


def plot(path: Path, sides: Sequence[SideResult], title: str) -> None:
    """Three panels: events produced but not yet answered, events answered per second, and
    latency, over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"worker": "tab:blue", "naive": "tab:red"}
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(9, 10), constrained_layout=True)
    for side in sides:
        color = colors.get(side.side)
        centers, rates = throughput_series(side.latency_series, 0.5)
        if len(centers):
            middle.plot(centers, rates, color=color, label=f"{side.side}: events answered per second (0.5 s bins)")
        if side.backlog:
            t, n = zip(*side.backlog, strict=True)
            top.plot(t, n, label=f"{side.side}: produced, not yet answered", color=color)
        if side.lag:
            t, n = zip(*side.lag, strict=True)
            top.plot(t, n, ls="--", lw=1, label=f"{side.side}: committed-offset lag", color=color, alpha=0.6)
        for q, style in ((50, "-"), (99, ":")):
            centers, values = rolling_percentile(side.latency_series, 0.5, q)
            if len(centers):
                bottom.plot(centers, values, style, color=color, label=f"{side.side}: p{q} per 0.5 s")
    top.set_ylabel("events")
    top.set_xlabel("seconds since the side's process started")
    top.set_title("lag over time")
    top.legend(fontsize=8)
    middle.set_ylabel("events/s")
    middle.set_xlabel("seconds since the side's process started")
    middle.set_title("throughput over time")
    middle.legend(fontsize=8)
    bottom.set_yscale("log")
    bottom.set_ylabel("event → recommendation (ms)")
    bottom.set_xlabel("produce time, seconds since the side's process started")
    bottom.set_title("latency over time")
    bottom.legend(fontsize=8)
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_output(folder: Path, result: Mapping[str, Any], sides: Sequence[SideResult], title: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    if sides:
        write_csvs(folder, sides)
        plot(folder / "lag-latency.png", sides, title)


# --------------------------------------------------------------------------- markdown for the docs


def markdown_sides(result: Mapping[str, Any]) -> str:
    """The side-by-side table of a ``streamrec bench`` result, as Markdown."""
    sides = [s for s in ("worker", "naive") if result.get(s)]
    lines = ["| | " + " | ".join(sides) + " |", "|---|" + "---:|" * len(sides)]

    def cell(value: Any, unit: str = "") -> str:
        if value is None:
            return "–"
        return f"{value:,.1f}{unit}" if isinstance(value, float) else f"{value:,}{unit}"

    rows = [
        ("events", lambda s: cell(s["events"])),
        ("events/s (sustained)", lambda s: cell(s["events_per_s"])),
        ("lists/s (sustained)", lambda s: cell(s.get("lists_per_s"))),
        ("latency p50 / p95 / p99 (ms)", lambda s: " / ".join(cell(s["latency_ms"][p]) for p in ("p50", "p95", "p99"))),
        ("max committed lag (events)", lambda s: cell(s["max_lag"])),
        ("CPU s in the window", lambda s: cell(s["cpu_s"])),
        ("CPU µs per event", lambda s: cell(s["cpu_us_per_event"])),
        ("peak RSS", lambda s: cell(s["rss_mb"], " MB")),
        ("broker CPU s in the window", lambda s: cell(s["broker_cpu_s"])),
        ("recommendations sent", lambda s: cell(s["recommendations"])),
    ]
    for label, get in rows:
        lines.append(f"| {label} | " + " | ".join(get(result[s]) for s in sides) + " |")
    if result.get("ratio") is not None:
        lines.append(f"| **ratio worker / naive (events/s)** | **{result['ratio']:.1f}×** |" + " |" * (len(sides) - 1))
    return "\n".join(lines)


def markdown_index(rows: Sequence[Mapping[str, Any]], batch_sizes: Sequence[int] = (1, 64, 1024)) -> str:
    """The ``--index-only`` rows as a Markdown table (target: the recall the effort was
    calibrated to; – for an exact index)."""
    lines = ["| items | vectors | factory | target | nprobe / efSearch | build s | bytes/item | recall@10 | "
             + " | ".join(f"QPS b={b}" for b in batch_sizes) + " |",
             "|---:|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(batch_sizes)]
    for row in rows:
        factory = f"{row['factory']}" + (" (auto)" if row.get("auto") else "")
        effort = "–" if row["effort"] is None else str(row["effort"])
        target = "–" if row.get("target_recall") is None else f"{row['target_recall']:.2f}"
        qps = " | ".join(f"{row['qps'].get(str(b), 0):,.0f}" for b in batch_sizes)
        lines.append(f"| {row['n_items']:,} | {row.get('vectors', '')} | {factory} | {target} | {effort} | "
                     f"{row['build_s']:.1f} | {row['bytes_per_item']:.0f} | {row['recall_at_10']:.3f} | {qps} |")
    return "\n".join(lines)


def markdown_micro(costs: Mapping[str, float]) -> str:
    lines = ["| step | µs per event |", "|---|---:|"]
    lines += [f"| {name} | {us:,.1f} |" for name, us in costs.items()]
    return "\n".join(lines)


def markdown_profile(profile: Mapping[str, Any]) -> str:
    lines = ["| kind of work | share of samples |", "|---|---:|"]
    lines += [f"| {kind} | {share:.1%} |" for kind, share in profile["shares"].items()]
    return "\n".join(lines)
