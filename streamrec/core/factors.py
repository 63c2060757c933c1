"""Long-term taste as a second factor space: the user's ALS factor, folded in from the recent
events, and its list fused with the served list by reciprocal rank (the *factor step*).

The interest vector reads the order of the last few events; on a shop where the order says
little (docs/quality.md, the taste-only proxy) a factor model of the whole user x item matrix
(implicit-feedback ALS, Hu, Koren and Volinsky 2008) knows the shopper better. A model version
trained with ``TrainParams.factors > 0`` carries ALS item factors ``Y`` (``n_items x f``). At
each recommendation the user's factor is the exact least-squares fold-in of the distinct items
of their recent events ``H`` (the state's last ``history_size`` events), binary confidence
``c`` for every item in ``H``::

    x = (Y^T Y + reg I + (c - 1) Y_H^T Y_H)^-1  c sum_{h in H} y_h

(O(|H|^2 f + |H|^3) per user by the Woodbury identity, with ``Y (Y^T Y + reg I)^-1`` computed
once per version: :func:`fold_in`; |H| <= 32 against f = 128, so under the interest vector's
O(d^2) query), its
``depth`` best items are an exact search over ``Y`` (O(n f); excluded and blocked items left
out, and the items of ``H`` too unless ``repeats``: by default bringing recent items back is the
repeat step's job, but on a shop whose shoppers buy again what they bought long ago the factor
list's own re-visits pay, and the choice decides), and the two lists are fused::

    total_j = 1 / (offset + rank_served_j) + weight / (offset + rank_factor_j)

(ranks from 0; a list that lacks ``j`` adds nothing; equal totals keep the order in which the
items first appear, the served list's before the factor list's). The served list is the one the
repeat and neighbour steps made, ``depth`` long. ``InterestParams.factor_weight = 0`` or a model
version without factors turns the step off; ``"auto"`` takes the weight each version was trained
with, chosen on the shop's own held-out events (:mod:`streamrec.evaluation.choose`; 0 where the
step does not clearly pay).

>>> fuse(np.array([[3, 1, 2]]), np.array([[2, 5, -1]]), 3, weight=1.0, offset=10)[0].tolist()
[[2, 3, 1]]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

#: ``factor_weight``'s value that takes each model version's own weight, chosen at its training
#: on the shop's held-out events (:mod:`streamrec.evaluation.choose`).
AUTO = "auto"


def fits_factors(weight: float | str) -> bool:
    """Whether a training for this ``factor_weight`` fits item factors (a weight > 0 or AUTO)."""
    return weight == AUTO or float(weight) > 0


def resolve_weight(weight: float | str, chosen: float) -> float:
    """The weight the step runs with: ``weight``, or the version's ``chosen`` one for AUTO."""
    return float(chosen) if weight == AUTO else float(weight)


def resolve_repeats(repeats: bool | str, chosen: bool) -> bool:
    """Whether the factor list may hold the user's recent items: ``repeats``, or the version's
    ``chosen`` answer for AUTO.

    >>> resolve_repeats(AUTO, True), resolve_repeats(False, True)
    (True, False)
    """
    return bool(chosen) if repeats == AUTO else bool(repeats)


#: The ranks' offset in the fused total: with it the first few ranks of either list weigh alike
#: (the usual reciprocal-rank-fusion constant is 60 for long lists; ours are 50 long).
OFFSET = 10.0


def solved(factors: np.ndarray, reg: float) -> np.ndarray:
    """``Y (Y^T Y + reg I)^-1`` (float64, one row per item): the fold-in's fixed part, computed
    once per model version (O(n f^2 + f^3))."""
    factors = np.asarray(factors, np.float64)
    base = factors.T @ factors + reg * np.eye(factors.shape[1])
    return np.linalg.solve(base, factors.T).T


def known_rows(histories: Sequence[Sequence[int]], n: int) -> list[np.ndarray]:
    """Each history's distinct rows in ``[0, n)`` (sorted)."""
    return [np.unique(np.asarray([r for r in rows if 0 <= r < n], np.int64)) for rows in histories]


def fold_in(histories: Sequence[Sequence[int]], factors: np.ndarray, fixed: np.ndarray, *,
            confidence: float, block: int = 1024) -> np.ndarray:
    """Each user's factor (float64 rows) from the model rows of their recent events
    (``histories``; rows outside ``factors`` and repeats are ignored): the formula above, by the
    Woodbury identity around ``B = Y^T Y + reg I`` (``fixed``: :func:`solved`), so a user costs
    O(|H|^2 f + |H|^3) instead of a fresh f x f solve::

        x = B^-1 b - (c - 1) M_H^T (I + (c - 1) Y_H M_H^T)^-1 Y_H B^-1 b,   B^-1 b = c sum_h M_h

    with ``M = Y B^-1`` (rows of ``fixed``). A user with no known row gets zeros."""
    return _fold_known(known_rows(histories, len(factors)), factors, fixed, confidence=confidence, block=block)


def _fold_known(lists: list[np.ndarray], factors: np.ndarray, fixed: np.ndarray, *, confidence: float,
                block: int = 1024) -> np.ndarray:
    """:func:`fold_in` of histories already reduced by :func:`known_rows`."""
    out = np.zeros((len(lists), factors.shape[1]))
    users = np.array([slot for slot, rows in enumerate(lists) if len(rows)], np.int64)
    extra = confidence - 1.0
    for start in range(0, len(users), block):
        slots = users[start : start + block]
        width = max(len(lists[slot]) for slot in slots)
        rows = np.zeros((len(slots), width), np.int64)
        present = np.zeros((len(slots), width), bool)
        for position, slot in enumerate(slots.tolist()):
            rows[position, : len(lists[slot])] = lists[slot]
            present[position, : len(lists[slot])] = True
        y = factors[rows].astype(np.float64) * present[:, :, None]  # (users, |H|, f), padding rows 0
        m = fixed[rows] * present[:, :, None]
        base = confidence * m.sum(axis=1)  # B^-1 b
        inner = np.eye(width)[None] + extra * np.einsum("uhf,ugf->uhg", y, m)
        z = np.linalg.solve(inner, np.einsum("uhf,uf->uh", y, base)[:, :, None])[:, :, 0]
        out[slots] = base - extra * np.einsum("uhf,uh->uf", m, z)
    return out


def top_rows(users: np.ndarray, factors: np.ndarray, depth: int,
             banned: Callable[[int], np.ndarray | None]) -> np.ndarray:
    """Each row of ``users``' ``depth`` best model rows by ``x . y`` (float32 products, as the
    FAISS search computes; equal scores: the lower row first), ``-1`` pads; ``banned(slot)``: that user's rows never listed (or None).
    A zero factor (no known item) lists nothing."""
    out = np.full((len(users), depth), -1, np.int64)
    if not len(users) or not len(factors):
        return out
    items = np.asarray(factors, np.float32)
    take = min(depth, len(factors))
    for start in range(0, len(users), 256):  # (256 x n) blocks stay cache- and memory-friendly
        block = users[start : start + 256]
        scores = block.astype(np.float32) @ items.T  # float32, as the FAISS search
        for offset in range(len(block)):
            excluded = banned(start + offset)
            if excluded is not None and len(excluded):
                scores[offset, excluded] = -np.inf
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take] if take < len(factors) else \
            np.broadcast_to(np.arange(len(factors)), (len(block), len(factors))).copy()
        best = np.take_along_axis(scores, part, axis=1)
        order = np.lexsort((part, -best), axis=-1)
        rows, best = np.take_along_axis(part, order, axis=1), np.take_along_axis(best, order, axis=1)
        rows[~np.isfinite(best) | ~block.any(axis=1)[:, None]] = -1
        out[start : start + len(block), :take] = rows
    return out


def fuse(first: np.ndarray, second: np.ndarray, k: int, *, weight: float,
         offset: float = OFFSET) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` rows of each pair of lists (``-1`` pads) by the fused total above, and the
    totals (float32; ``-inf`` pads). Vectorised over the users: each (user, item) pair's shares
    are summed, then every user's pairs are ordered by total, first appearance breaking ties."""
    users, depth_a = first.shape
    rows = np.full((users, k), -1, dtype=np.int64)
    totals = np.full((users, k), -np.inf, dtype=np.float32)
    items = np.concatenate([first.reshape(users, -1), second.reshape(users, -1)], axis=1).astype(np.int64)
    if not items.size:
        return rows, totals
    ranks = np.concatenate([np.arange(depth_a), np.arange(items.shape[1] - depth_a)])
    shares = np.concatenate([np.full(depth_a, 1.0), np.full(items.shape[1] - depth_a, float(weight))]) / (offset + ranks)
    slot = np.repeat(np.arange(users), items.shape[1])
    flat, share = items.ravel(), np.tile(shares, users)
    keep = flat >= 0
    slot, flat, share = slot[keep], flat[keep], share[keep]
    if not len(flat):
        return rows, totals
    span = int(flat.max()) + 1
    pairs, first_at, inverse = np.unique(slot * span + flat, return_index=True, return_inverse=True)
    summed = np.zeros(len(pairs))
    np.add.at(summed, inverse, share)  # in list order, as the rule written out adds them
    pair_slot = pairs // span
    order = np.lexsort((first_at, -summed, pair_slot))  # per user: best total, then first appearance
    pair_slot, pair_item, summed = pair_slot[order], (pairs % span)[order], summed[order]
    starts = np.searchsorted(pair_slot, np.arange(users))
    place = np.arange(len(order)) - starts[pair_slot]
    shown = place < k
    rows[pair_slot[shown], place[shown]] = pair_item[shown]
    totals[pair_slot[shown], place[shown]] = summed[shown]
    return rows, totals


def factor_batch(rows: np.ndarray, scores: np.ndarray, width: int, histories: Sequence[Sequence[int]],
                 factors: np.ndarray, fixed: np.ndarray, *, confidence: float, weight: float, depth: int,
                 banned: Callable[[int], np.ndarray | None], repeats: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The served lists (``rows``, ``scores``, best first) fused with the users' factor lists
    and cut to ``width``; a user without a known recent item keeps the served list. The factor
    list leaves out the items of ``histories`` unless ``repeats`` (the module doc)."""
    seen = known_rows(histories, len(factors))
    users = _fold_known(seen, factors, fixed, confidence=confidence)

    def unseen(slot: int) -> np.ndarray | None:
        excluded = banned(slot)
        if repeats:
            return excluded
        return seen[slot] if excluded is None else np.concatenate([np.asarray(excluded, np.int64), seen[slot]])

    second = top_rows(users, factors, depth, unseen)
    fused, totals = fuse(rows[:, :depth], second, width, weight=weight)
    keep = ~users.any(axis=1)
    out_rows, out_scores = fused, totals.astype(scores.dtype, copy=False)
    if keep.any():
        cut_rows, cut_scores = rows[:, :width], scores[:, :width]
        out_rows[keep] = -1
        out_scores[keep] = -np.inf
        out_rows[keep, : cut_rows.shape[1]] = cut_rows[keep]
        out_scores[keep, : cut_scores.shape[1]] = cut_scores[keep]
    return out_rows, out_scores
