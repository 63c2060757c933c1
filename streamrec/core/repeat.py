"""Repeat behaviour: items a shopper engaged with recently can come back.

The user vector (:mod:`streamrec.core.interest`) predicts the *next* item from a low-rank
summary of the last few; a rare item the shopper keeps returning to has almost no weight in
that summary, so it never comes back by the inner product alone. This step re-ranks the
union of the search's top k and the user's recent items with

    score_j   = v . target_j + repeat_weight * lift_j * recency_j
    recency_j = sum over the user's last REPEAT_EVENTS events on j of by_age[age]

(``age`` 0 is the newest event). Both factors are learnt at training (:func:`repeat_rates`):
``by_age[a]`` is how often a user's next event was on the item of their event ``a`` steps
before it (a re-click right away on a click log; a re-order an invoice later on a wholesale
log, where the item just bought is rarely the next line), and ``lift_j`` how much more (or
less) often than the shop's items an event on ``j`` was followed by another on ``j`` among
the user's next :data:`REPEAT_EVENTS` events, shrunk towards 1. ``by_age`` is a probability of
the next event, the scale the regression targets' inner products have, so ``repeat_weight``
stays near 1 on every shop. Items outside the search's top k and the recent items get no
bonus, so the top k of that union is the top k of the whole catalog under the combined score;
the step costs O(REPEAT_EVENTS * d) per list. Excluded (purchased) and blocked items are never
added. ``repeat_weight = 0`` turns the step off.

>>> rows, weights = recency([4, 7, 4], np.array([0.5, 0.25, 0.125]))   # oldest first: 4, 7, 4
>>> rows.tolist(), weights.tolist()
([4, 7], [0.625, 0.25])
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

#: A user's last events that can bring their items back (the state's ``recent`` holds 32).
REPEAT_EVENTS = 32


def recency(recent_rows: Sequence[int], by_age: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of ``recent_rows`` (oldest first, rows < 0 skipped), newest first, with
    ``sum by_age[age]`` over their occurrences (age 0 = the last entry)."""
    weights: dict[int, float] = {}
    for age, row in enumerate(reversed(list(recent_rows)[-min(REPEAT_EVENTS, len(by_age)):])):
        if row >= 0:
            weights[row] = weights.get(row, 0.0) + float(by_age[age])
    return np.fromiter(weights, np.int64, len(weights)), np.fromiter(weights.values(), np.float64, len(weights))


def with_repeats(
    rows: np.ndarray,
    scores: np.ndarray,
    k: int,
    vector: np.ndarray,
    recent_rows: Sequence[int],
    target_of,  # noqa: ANN001 - Callable[[np.ndarray], np.ndarray]: (n, d) target vectors of rows
    lift_of,  # noqa: ANN001 - Callable[[np.ndarray], np.ndarray]: (n,) repeat lifts of rows
    weight: float,
    by_age: np.ndarray,
    skip: Collection[int] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """One user's list re-ranked with the repeat bonus (see the module doc).

    ``rows``/``scores``: the search's top ``k`` (-1 / -inf pad a short list); ``skip``: rows
    that must not be added (excluded or blocked). Returns ``k`` rows and scores, -1 / -inf
    padded, best first; equal scores keep the search's order, then recent items newest first.

    >>> target = np.eye(3, dtype=np.float32)
    >>> rows, scores = with_repeats(np.array([0, 1]), np.array([0.9, 0.5]), 2, np.array([0.9, 0.5, 0.0]),
    ...                             [2, 1], lambda r: target[r], lambda r: np.full(len(r), 0.5), 1.0, np.array([1.0, 0.5]))
    >>> rows.tolist(), np.round(scores, 3).tolist()
    ([1, 0], [1.0, 0.9])
    """
    if weight <= 0 or not len(recent_rows) or not len(by_age):
        return rows, scores
    extra, recency_weights = recency(recent_rows, by_age)
    if skip:
        keep = np.fromiter((r not in skip for r in extra.tolist()), bool, len(extra))
        extra, recency_weights = extra[keep], recency_weights[keep]
    if not len(extra):
        return rows, scores
    bonus = weight * lift_of(extra) * recency_weights
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


def repeat_rates(users: np.ndarray, items: np.ndarray, n_items: int, *, prior: float = 10.0,
                 window: int = REPEAT_EVENTS) -> tuple[np.ndarray, np.ndarray]:
    """``(lift, by_age)`` learnt from events grouped by user, each user's in time order.

    ``by_age[a]``: of the events that have an event ``a + 1`` steps earlier by the same user,
    the share on that earlier event's item. ``lift[j]``: the share of events on ``j`` followed by
    another on ``j`` among the user's next ``window`` events, divided by that share over all
    items, with ``prior`` pseudo events at the shop's share (an item seldom seen has a lift
    near 1; an event with no later event of its user does not count).

    >>> lift, by_age = repeat_rates(np.array([0, 0, 0, 1, 1]), np.array([5, 5, 6, 6, 5]), 7, prior=0.0, window=2)
    >>> np.round(by_age, 3).tolist(), np.round(lift[[5, 6]], 3).tolist()
    ([0.333, 0.0], [1.5, 0.0])
    """
    n = len(items)
    followed = np.zeros(n, bool)
    by_age = np.zeros(window)
    for gap in range(1, window + 1):
        if gap >= n:
            break
        same_user = users[gap:] == users[:-gap]
        same = same_user & (items[gap:] == items[:-gap])
        followed[:-gap] |= same
        by_age[gap - 1] = same.sum() / max(same_user.sum(), 1)
    counted = np.r_[users[1:] == users[:-1], False] if n else np.zeros(0, bool)
    totals = np.bincount(items[counted], minlength=n_items).astype(np.float64)
    hits = np.bincount(items[counted & followed], minlength=n_items).astype(np.float64)
    rate = hits.sum() / totals.sum() if totals.sum() else 0.0
    if rate == 0:
        return np.ones(n_items, np.float32), by_age
    lift = (hits + prior * rate) / np.maximum(totals + prior, 1e-12) / rate
    lift[totals + prior == 0] = 1.0
    return lift.astype(np.float32), by_age
