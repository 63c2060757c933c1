"""Choosing the served model's repeat-step and neighbour-step settings on a validation split, never on test numbers.

* **Leave-one-out**: every user's last event (the test item) is dropped, so the protocol's
  held-out item becomes the second-to-last one, the S3-Rec validation item.
* **Prequential**: only the first ``share`` of the stream is replayed (the test-then-learn run on
  an earlier part of the stream than the reported one is on; the models are first trained on
  the same ``pretrain`` share of that part).

Every point of the grid (:data:`GRID`) is the served model with those settings and all other
parameters as given; the choice is the best HR@10, ties to the earlier (smaller) point.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from streamrec.evaluation.data import EventLog, user_sequences

#: The settings searched, in the order ties are broken (the first point is both steps switched off):
#: the repeat step's weight (:mod:`streamrec.core.repeat`) and the neighbour step's
#: (:mod:`streamrec.core.neighbours`). ``--tune-grid`` replaces or adds a setting (the taste
#: vector's ``taste_decay``, :mod:`streamrec.core.taste`, was searched as 0 and 0.9: docs/quality.md).
GRID: dict[str, tuple[float, ...]] = {"repeat_weight": (0.0, 0.3, 1.0), "knn_weight": (0.0, 0.03, 0.1, 0.3)}
#: Settings that only tune the repeat step (with its weight 0 they change nothing; every other
#: setting changes the lists either way).
REPEAT_ONLY = ("repeat_weight", "repeat_prior")


def without_last_events(log: EventLog) -> EventLog:
    """``log`` without each user's last event (the leave-one-out validation split).

    >>> log = EventLog.from_arrays(["u", "v", "u", "u"], ["a", "b", "c", "d"], ["view"] * 4, [0, 1, 2, 3])
    >>> [log.item_ids[i] for i in without_last_events(log).items]
    ['a', 'c']
    """
    last = [index[-1] for index in user_sequences(log) if len(index)]
    keep = np.setdiff1d(np.arange(len(log)), np.asarray(last, np.int64))
    return log.take(keep)


def validation_log(log: EventLog, protocol: str, share: float = 0.5) -> EventLog:
    """The part of ``log`` the settings are chosen on (see the module doc)."""
    if protocol == "leave-one-out":
        return without_last_events(log)
    if protocol == "prequential":
        if not 0 < share < 1:
            raise ValueError(f"the validation share must be between 0 and 1, got {share}")
        return log.take(slice(0, int(share * len(log))))
    raise ValueError(f"tuning is defined for leave-one-out and prequential, not {protocol!r}")


@dataclass
class TuneResult:
    #: One row per grid point: its settings and HR@10 / NDCG@10 on the validation split.
    rows: list[dict[str, float]]
    chosen: dict[str, float]


def setting_text(value: float) -> str:
    """A grid value as ``--served-param`` text: whole numbers without ".0", so that integer and
    true/false settings (``refine_epochs=5``, ``refine_mask=1``) read them."""
    return str(int(value)) if float(value).is_integer() else str(value)


def tune(run: Callable[[Mapping[str, str]], dict[str, float]], grid: Mapping[str, Sequence[float]] | None = None,
         progress: Callable[[str], None] | None = None) -> TuneResult:
    """Evaluate ``run(overrides)`` (validation metrics of the served model with those
    ``--served-param`` overrides) over ``grid``; the best HR@10 wins, ties to the earlier point."""
    grid = grid or GRID
    names = list(grid)
    rows: list[dict[str, float]] = []
    for values in itertools.product(*(grid[n] for n in names)):
        point = dict(zip(names, values, strict=True))
        if point.get("repeat_weight", 1.0) == 0.0 and any(
                r.get("repeat_weight") == 0.0 and all(r.get(n) == point.get(n) for n in names if n not in REPEAT_ONLY) for r in rows):
            continue  # with the step off its own settings change nothing
        metrics = run({n: setting_text(v) for n, v in point.items()})
        rows.append({**point, "HR@10": metrics["HR@10"], "NDCG@10": metrics["NDCG@10"]})
        if progress is not None:
            progress(f"{point}: HR@10 {metrics['HR@10']:.4f}, NDCG@10 {metrics['NDCG@10']:.4f}")
    best = max(range(len(rows)), key=lambda n: (rows[n]["HR@10"], -n))
    return TuneResult(rows, {n: rows[best][n] for n in names})
