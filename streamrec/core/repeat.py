"""Repeat behaviour: items a shopper engaged with recently can come back.

The user vector (:mod:`streamrec.core.interest`) predicts the *next* item from a low-rank
summary of the last few; a rare item the shopper keeps returning to has almost no weight in
that summary, so it never comes back by the inner product alone. This step re-ranks the
union of the search's top k and the user's recent items with

    score_j = v . target_j + repeat_weight * propensity_j * recency_j
    recency_j = sum over the user's last REPEAT_EVENTS events on j of repeat_decay ** age

(``age`` 0 is the newest event). ``propensity_j`` is learnt at training
(:func:`repeat_propensity`): how often an event on item ``j`` was followed by another event
on ``j`` among the same user's next :data:`REPEAT_EVENTS` events, shrunk towards the shop's
rate. Items the search did not return and the user did not touch recently get no bonus, so
the top k of that union is the top k of the whole catalog under the combined score; the
step costs O(REPEAT_EVENTS * d) per list. Excluded (purchased) and blocked items are never
added. ``repeat_weight = 0`` turns the step off.

>>> rows, weights = recency([4, 7, 4], 0.5)          # oldest first: 4, then 7, then 4 again
>>> rows.tolist(), weights.tolist()
([4, 7], [1.25, 0.5])
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

#: A user's last events that can bring their items back (the state's ``recent`` holds 32).
REPEAT_EVENTS = 32


def recency(recent_rows: Sequence[int], decay: float) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of ``recent_rows`` (oldest first, rows < 0 skipped), newest first, with
    ``sum decay ** age`` over their occurrences (age 0 = the last entry)."""
    weights: dict[int, float] = {}
    for age, row in enumerate(reversed(list(recent_rows)[-REPEAT_EVENTS:])):
        if row >= 0:
            weights[row] = weights.get(row, 0.0) + decay**age
    return np.fromiter(weights, np.int64, len(weights)), np.fromiter(weights.values(), np.float64, len(weights))


def with_repeats(
    rows: np.ndarray,
    scores: np.ndarray,
    k: int,
    vector: np.ndarray,
    recent_rows: Sequence[int],
    target_of,  # noqa: ANN001 - Callable[[np.ndarray], np.ndarray]: (n, d) target vectors of rows
    propensity_of,  # noqa: ANN001 - Callable[[np.ndarray], np.ndarray]: (n,) propensities of rows
    weight: float,
    decay: float,
    skip: Collection[int] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """One user's list re-ranked with the repeat bonus (see the module doc).

    ``rows``/``scores``: the search's top ``k`` (-1 / -inf pad a short list); ``skip``: rows
    that must not be added (excluded or blocked). Returns ``k`` rows and scores, -1 / -inf
    padded, best first; equal scores keep the search's order, then recent items newest first.

    >>> target = np.eye(3, dtype=np.float32)
    >>> rows, scores = with_repeats(np.array([0, 1]), np.array([0.9, 0.5]), 2, np.array([0.9, 0.5, 0.0]),
    ...                             [2, 1], lambda r: target[r], lambda r: np.full(len(r), 0.5), 1.0, 0.5)
    >>> rows.tolist(), np.round(scores, 3).tolist()
    ([1, 0], [1.0, 0.9])
    """
    if weight <= 0 or not len(recent_rows):
        return rows, scores
    extra, recency_weights = recency(recent_rows, decay)
    if skip:
        keep = np.fromiter((r not in skip for r in extra.tolist()), bool, len(extra))
        extra, recency_weights = extra[keep], recency_weights[keep]
    if not len(extra):
        return rows, scores
    bonus = weight * propensity_of(extra) * recency_weights
    extra_scores = target_of(extra).astype(np.float64) @ np.asarray(vector, np.float64) + bonus
    found = rows >= 0
    in_found = np.isin(rows, extra) & found
    all_rows = np.concatenate([rows[found & ~in_found], extra])
    all_scores = np.concatenate([np.asarray(scores, np.float64)[found & ~in_found], extra_scores])
    order = np.argsort(-all_scores, kind="stable")[:k]
    out_rows = np.full(k, -1, np.int64)
    out_scores = np.full(k, -np.inf)
    out_rows[: len(order)] = all_rows[order]
    out_scores[: len(order)] = all_scores[order]
    return out_rows, out_scores.astype(np.asarray(scores).dtype, copy=False)


def repeat_propensity(users: np.ndarray, items: np.ndarray, n_items: int, *, prior: float = 10.0,
                      window: int = REPEAT_EVENTS) -> tuple[np.ndarray, float]:
    """Per item, how often an event on it is followed by another event on it among the same
    user's next ``window`` events, shrunk towards the shop-wide rate with ``prior`` pseudo
    events; and that rate (the propensity of an item the model has never seen).

    ``users``/``items``: events grouped by user, each user's in time order. An event with no
    later event of its user does not count (nothing could follow it).

    >>> p, rate = repeat_propensity(np.array([0, 0, 0, 1, 1]), np.array([5, 5, 6, 6, 5]), 7, prior=0.0)
    >>> round(rate, 4), float(p[5]), float(p[6])
    (0.3333, 0.5, 0.0)
    """
    n = len(items)
    followed = np.zeros(n, bool)
    has_next = np.r_[users[1:] == users[:-1], False] if n else np.zeros(0, bool)
    for gap in range(1, window + 1):
        if gap >= n:
            break
        same = (users[gap:] == users[:-gap]) & (items[gap:] == items[:-gap])
        followed[:-gap] |= same
    counted = has_next
    totals = np.bincount(items[counted], minlength=n_items).astype(np.float64)
    hits = np.bincount(items[counted & followed], minlength=n_items).astype(np.float64)
    rate = float(hits.sum() / totals.sum()) if totals.sum() else 0.0
    return ((hits + prior * rate) / np.maximum(totals + prior, 1e-12)).astype(np.float32), rate
