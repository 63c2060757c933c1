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

>>> target = np.zeros((8, 2), np.float32)   # no inner product: the bonus alone ranks
>>> rows, scores = with_repeats(np.array([0, -1]), np.array([0.0, -np.inf]), 2, np.zeros(2), [4, 7, 4], target.__getitem__,
...                             lambda r: np.ones(len(r)), 1.0, np.array([0.5, 0.25, 0.125]))  # oldest first
>>> rows.tolist(), scores.tolist()   # 4: ages 0 and 2, 0.5 + 0.125; 7: age 1
([4, 7], [0.625, 0.25])
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

#: A user's last events that can bring their items back (the state's ``recent`` holds 32).
REPEAT_EVENTS = 32


def with_repeats(
    rows: np.ndarray,
    scores: np.ndarray,
    k: int,
    vector: np.ndarray,
    recent_rows: Sequence[int],
    target_of,
    lift_of,
    weight: float,
    by_age: np.ndarray,
    skip: Collection[int] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """One user's list re-ranked with the repeat bonus (see the module doc): :func:`repeat_batch`
    for one user.

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
    recent = [row if row not in skip else -1 for row in recent_rows]
    out_rows, out_scores = repeat_batch(np.asarray(rows)[None, :], np.asarray(scores)[None, :], k,
                                        np.asarray(vector)[None, :], recent_matrix([recent], by_age),
                                        target_of, lift_of, weight, by_age)
    return out_rows[0], out_scores[0]


def recent_matrix(recent_rows: Sequence[Sequence[int]], by_age: np.ndarray) -> np.ndarray:
    """Users' recent rows (each oldest first, -1 for none) as one ``(users, R)`` matrix, newest
    in the last column, -1 padded on the left; ``R = min(REPEAT_EVENTS, len(by_age))``.

    >>> recent_matrix([[4, 7, 4], [9]], np.ones(4)).tolist()
    [[-1, 4, 7, 4], [-1, -1, -1, 9]]
    """
    width = min(REPEAT_EVENTS, len(by_age))
    out = np.full((len(recent_rows), width), -1, np.int64)
    if not width:
        return out
    tails = [list(rows)[-width:] for rows in recent_rows]
    lengths = np.fromiter(map(len, tails), np.int64, len(tails))
    flat = np.fromiter((row for tail in tails for row in tail), np.int64, int(lengths.sum()))
    owner = np.repeat(np.arange(len(tails)), lengths)
    column = width - np.repeat(lengths, lengths) + (np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths))
    out[owner, column] = flat
    return out


#: Users re-ranked per block (bounds the (users, R, R) and (users, R, d) temporaries).
BLOCK = 512


def repeat_batch(
    rows: np.ndarray,
    scores: np.ndarray,
    k: int,
    vectors: np.ndarray,
    recent: np.ndarray,
    target_of,
    lift_of,
    weight: float,
    by_age: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Every user's list re-ranked with the repeat bonus, vectorised over the users.

    ``rows``/``scores``: ``(users, width)`` search results (-1 / -inf pad); ``vectors``: the
    users' query vectors; ``recent``: :func:`recent_matrix` of their recent rows, with the rows
    that must not be added (excluded, blocked) already -1; ``k`` may exceed the search's width
    (nothing is cut then, the rest is padded). A recent row's bonus sums
    ``by_age[age]`` over its occurrences; the union of the search's rows and the distinct recent
    rows (newest occurrence first) is sorted by score, stably, and cut to ``k``. Users without
    a recent row keep their rows and scores."""
    rows, scores = np.asarray(rows), np.asarray(scores)
    width = recent.shape[1]
    if weight <= 0 or not width or not len(rows) or not (recent >= 0).any():
        return rows, scores
    ages = np.asarray(by_age, np.float64)[:width]
    out_rows = np.full((len(rows), k), -1, rows.dtype)
    out_scores = np.full((len(rows), k), -np.inf, scores.dtype)
    take = min(k, rows.shape[1])  # k may exceed the search's width: the recent items then all fit
    out_rows[:, :take], out_scores[:, :take] = rows[:, :take], scores[:, :take]
    earlier = np.tril(np.ones((width, width), bool), -1)  # [a, b]: b is a newer position than a
    for start in range(0, len(rows), BLOCK):
        block = slice(start, start + BLOCK)
        newest_first = recent[block, ::-1]  # column = age
        valid = newest_first >= 0
        if not valid.any():
            continue
        same = (newest_first[:, :, None] == newest_first[:, None, :]) & valid[:, :, None]
        first = valid & ~(same & earlier).any(axis=2)  # a row's newest occurrence
        extra = np.where(first, newest_first, -1)
        taken = extra >= 0
        at = extra[taken]
        bonus = weight * np.asarray(lift_of(at), np.float64) * (same[taken].astype(np.float64) @ ages)
        users = np.nonzero(taken)[0]
        dots = np.einsum("ij,ij->i", np.asarray(target_of(at), np.float32),
                         np.asarray(vectors[block], np.float32)[users]).astype(np.float64)
        extra_scores = np.full(extra.shape, -np.inf)
        extra_scores[taken] = dots + bonus
        found_rows, found_scores = rows[block], scores[block].astype(np.float64)
        found = found_rows >= 0
        in_extra = ((found_rows[:, :, None] == extra[:, None, :]) & taken[:, None, :]).any(axis=2)
        keep = found & ~in_extra
        candidates = np.concatenate([np.where(keep, found_rows, -1), extra], axis=1)
        candidate_scores = np.concatenate([np.where(keep, found_scores, -np.inf), extra_scores], axis=1)
        order = np.argsort(-candidate_scores, axis=1, kind="stable")[:, :k]
        chosen = np.take_along_axis(candidates, order, axis=1)
        chosen_scores = np.take_along_axis(candidate_scores, order, axis=1)
        chosen[np.isneginf(chosen_scores)] = -1
        changed = taken.any(axis=1)
        out_rows[block, : chosen.shape[1]][changed] = chosen[changed]
        out_scores[block, : chosen.shape[1]][changed] = chosen_scores[changed].astype(scores.dtype)
    return out_rows, out_scores


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
