"""Turning outcomes into the JSON records, the moving-window CSV and its plot."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.evaluation.data import EventLog
from streamrec.evaluation.metrics import moving_average
from streamrec.evaluation.protocols import Outcome


def record(outcome: Outcome, dataset: str) -> dict[str, Any]:
    """One model's JSON object (the keys the issue names first, then the details)."""
    out: dict[str, Any] = {
        "name": outcome.name,
        "served": outcome.served,
        "dataset": dataset,
        "protocol": outcome.protocol,
        **outcome.metrics,
        "users": outcome.users,
        "seconds": round(outcome.seconds, 2),
        "fit_seconds": round(outcome.fit_seconds, 2),
    }
    if outcome.protocol == "prequential":
        out["scored_events"] = outcome.cases
        new = outcome.new_item
        out["HR@10_new_items"] = round(float(np.mean(outcome.positions[new] < 10)), 4) if new.any() else 0.0
        out["new_item_events"] = int(new.sum())
    out.update(outcome.beyond)
    out["params"] = outcome.details
    return out


def window_rows(
    outcomes: Sequence[Outcome], log: EventLog, *, window: int, every: int, k: int = 10
) -> list[dict[str, Any]]:
    """Moving-window HR@k per model, one row per ``every`` scored events (long format)."""
    rows: list[dict[str, Any]] = []
    for outcome in outcomes:
        hits = outcome.positions < k
        moving = moving_average(hits, window)
        overall = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        points = np.r_[np.arange(every - 1, len(hits), every), len(hits) - 1] if len(hits) else np.zeros(0, int)
        for n in np.unique(points):
            event = int(outcome.event_index[n])
            rows.append({
                "model": outcome.name,
                "scored_events": int(n + 1),
                "stream_position": event,
                "ts": float(log.ts[event]),
                f"hr{k}_window": round(float(moving[n]), 5),
                f"hr{k}_cumulative": round(float(overall[n]), 5),
            })
    return rows


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not rows:
        path.write_text("")
        return
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot_windows(rows: Sequence[dict[str, Any]], path: Path, *, title: str, window: int, k: int = 10) -> None:
    """One line per model: moving-window HR@k against event time (hours since the first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(9, 4.5), dpi=110)
    start = min((r["ts"] for r in rows), default=0.0)
    span_h = (max((r["ts"] for r in rows), default=0.0) - start) / 3600
    unit, scale = ("days", 86400.0) if span_h > 72 else ("hours", 3600.0)
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        axes.plot([(r["ts"] - start) / scale for r in mine], [r[f"hr{k}_window"] for r in mine],
                  label=name, linewidth=2.2 if name == "served" else 1.2)
    axes.set_xlabel(f"event time ({unit} since the first point)")
    axes.set_ylabel(f"HR@{k}, last {window:,} scored events")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
