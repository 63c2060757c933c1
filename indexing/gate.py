"""The trainer's gate: does a candidate model recommend the next item at least as well as
the serving one, on events neither has trained on?

Pure functions over numpy arrays (no Kafka, no files):

* :func:`split_holdout`: the newest ``fraction`` of a window's events by time are held out;
  the candidate trains on the rest.
* :func:`gate_cases`: the held-out events that are scored: the user has an earlier event
  in the window and the event's item differs from the user's previous one (a repeat would
  test nothing), at most ``max_cases`` of them (a seeded sample).
* :func:`next_item_hits`: for every case, whether the event's item is in the model's top
  ``k`` for the user's vector just before it. The vector is replayed with the worker's own
  rule (:func:`streamrec.core.interest.update_batch`) over the user's preceding events in the
  window; items the model does not know are skipped (as the worker does) and such a case
  is a miss; the top ``k`` comes from :func:`streamrec.core.search.search`.
* :func:`decide`: publish when ``candidate >= serving - margin``.

Both models are scored on the very same cases, so their difference is a paired one; its
standard error is reported with the scores (:func:`paired_standard_error`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import faiss
import numpy as np

from streamrec.core.interest import InterestParams, update_batch
from streamrec.core.search import search


def split_holdout(ts: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """``(train, holdout)`` event indices: the newest ``ceil(fraction * n)`` events by time
    (ties by arrival) are held out.

    >>> train, holdout = split_holdout(np.array([5.0, 1.0, 3.0, 2.0]), 0.25)
    >>> train.tolist(), holdout.tolist()
    ([1, 3, 2], [0])
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction}")
    order = np.argsort(ts, kind="stable")
    n_holdout = min(math.ceil(fraction * len(ts)), len(ts))
    return order[: len(ts) - n_holdout], order[len(ts) - n_holdout :]


def _by_user_and_time(users: np.ndarray, ts: np.ndarray) -> np.ndarray:
    return np.lexsort((np.arange(len(ts)), ts, users))


def gate_cases(
    users: np.ndarray, items: np.ndarray, ts: np.ndarray, holdout: np.ndarray, *, max_cases: int, seed: int = 0
) -> np.ndarray:
    """Indices of the held-out events to score (see the module doc), sorted.

    >>> gate_cases(np.array([0, 0, 0, 1]), np.array([4, 4, 5, 6]), np.array([1.0, 2, 3, 4]),
    ...            np.array([1, 2, 3]), max_cases=10).tolist()
    [2]
    """
    order = _by_user_and_time(users, ts)
    same_user = np.r_[False, users[order][1:] == users[order][:-1]]
    new_item = np.r_[True, items[order][1:] != items[order][:-1]]
    eligible = np.zeros(len(users), bool)
    eligible[order] = same_user & new_item
    held = np.zeros(len(users), bool)
    held[holdout] = True
    cases = np.flatnonzero(eligible & held)
    if len(cases) > max_cases:
        cases = np.sort(np.random.default_rng(seed).choice(cases, max_cases, replace=False))
    return cases


def model_rows(item_keys: np.ndarray, row_of: Mapping[str, int]) -> np.ndarray:
    """Per item key, its row in a model (-1 where the model does not know it)."""
    return np.fromiter((row_of.get(str(key), -1) for key in item_keys), np.int64, count=len(item_keys))


def next_item_hits(
    context: np.ndarray,
    index: faiss.Index,
    item_rows: np.ndarray,
    users: np.ndarray,
    types: np.ndarray,
    ts: np.ndarray,
    cases: np.ndarray,
    *,
    params: InterestParams | None = None,
    k: int = 10,
) -> np.ndarray:
    """Per case, whether its item (a row of the model, -1 if unknown) is in the top ``k``
    for the user's vector just before it. Events are given in arrival order."""
    params = params or InterestParams()
    hits = np.zeros(len(cases), bool)
    if len(cases) == 0:
        return hits
    # Only users with a case need replaying; their events by user, time and arrival.
    relevant = np.flatnonzero(np.isin(users, np.unique(users[cases])))
    order = relevant[_by_user_and_time(users[relevant], ts[relevant])]
    local_users, user_index = np.unique(users[order], return_inverse=True)
    starts = np.r_[0, np.flatnonzero(np.diff(user_index)) + 1]
    position = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    case_slot = np.full(len(users), -1, np.int64)
    case_slot[cases] = np.arange(len(cases))
    vectors = np.zeros((len(local_users), context.shape[1]), np.float32)
    last_ts = np.full(len(local_users), np.nan)
    queries = np.zeros((len(cases), context.shape[1]), np.float32)
    by_position = np.argsort(position, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(position))]
    for step in range(len(bounds) - 1):
        at = by_position[bounds[step] : bounds[step + 1]]  # positions into ``order``
        slots = case_slot[order[at]]
        scored = slots >= 0
        queries[slots[scored]] = vectors[user_index[at[scored]]]
        known = at[item_rows[order[at]] >= 0]
        events = order[known]
        update_batch(vectors, last_ts, user_index[known], item_rows[events], types[events].astype(np.int64),
                     ts[events], context, params)
    rows, _ = search(index, queries, k)
    targets = item_rows[cases]
    return (rows == targets[:, None]).any(axis=1) & (targets >= 0)


def paired_standard_error(candidate_hits: np.ndarray, serving_hits: np.ndarray) -> float:
    """Standard error of ``mean(candidate) - mean(serving)`` over the same cases."""
    difference = candidate_hits.astype(np.float64) - serving_hits.astype(np.float64)
    return float(difference.std(ddof=1) / math.sqrt(len(difference))) if len(difference) > 1 else float("nan")


@dataclass(frozen=True)
class Decision:
    publish: bool
    reason: str


def decide(candidate: float, serving: float | None, margin: float) -> Decision:
    """Publish when nothing is served or ``candidate >= serving - margin``.

    >>> decide(0.30, 0.31, 0.02).publish, decide(0.30, 0.33, 0.02).publish
    (True, False)
    """
    if serving is None:
        return Decision(True, "nothing is served yet")
    if candidate >= serving - margin:
        return Decision(True, f"candidate HR@10 {candidate:.4f} >= serving {serving:.4f} - margin {margin:g}")
    return Decision(False, f"candidate HR@10 {candidate:.4f} < serving {serving:.4f} - margin {margin:g}")
