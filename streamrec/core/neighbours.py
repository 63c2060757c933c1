"""The neighbour step: items that often follow the user's last few items come into the list.

The interest vector (:mod:`streamrec.core.interest`) scores every item through a rank-d
summary; an item that follows another closely in many users' sequences (the next line of an
invoice, the next product of a session) can fall out of that summary. At training each item
keeps its ``M`` best neighbours under a windowed co-occurrence similarity
(:func:`cooccurrence`, the item-kNN baseline's; :func:`top_neighbours`), each row
normalised to sum to 1 (a share of what followed or preceded the item). At serving the
candidates are the list so far (the search's top k and the repeat step's recent items) and
the neighbours of the user's last ``knn_events`` items; each gets

    score_j = (its score so far) + knn_weight * sum over the last knn_events events h of
              knn_decay ** age(h) * sim[h, j]

(``age`` 0 is the newest event; ``sim[h, j]`` is 0 outside ``h``'s M neighbours). A
candidate that was not in the list scores ``v . target_j`` plus its bonus: it is neither in
the search's top k nor one of the repeat step's recent items, so it has no other term. Rows
the user must not see (excluded, blocked) are never added. Cost per list: ``knn_events * M``
look-ups and one ``d``-dimensional inner product per added candidate.
``knn_weight = 0`` turns the step off.

>>> neighbours = np.array([[1, 2], [0, -1], [1, -1]]); sims = np.array([[0.5, 0.5], [1.0, 0.0], [1.0, 0.0]])
>>> rows, scores = neighbour_batch(np.array([[0, 1]]), np.array([[0.3, 0.1]]), 2, np.zeros((1, 2)),
...                                np.array([[2, 0]]), neighbours, sims, lambda r: np.zeros((len(r), 2)),
...                                weight=1.0, decay=0.5)
>>> rows.tolist(), np.round(scores, 3).tolist()
([[1, 2]], [[1.1, 0.5]])
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

#: The co-occurrence similarity's defaults (the item-kNN baseline's): pairs at most ``window``
#: events apart, weighted ``gap_decay ** (gap - 1)``, backward pairs at ``backward``, damped by
#: ``count_a ** alpha * count_b ** beta``.
SIMILARITY = {"window": 5, "gap_decay": 0.75, "backward": 0.5, "alpha": 0.5, "beta": 0.3}


def cooccurrence(users: np.ndarray, items: np.ndarray, n_items: int, *, window: int = 5, gap_decay: float = 0.75,
                 backward: float = 0.5, alpha: float = 0.5, beta: float = 0.3) -> sp.csr_matrix:
    """Item-to-item similarity from events grouped by user, each user's in time order: for every
    two events of a user at most ``window`` apart (``a`` first), ``C[a, b] += gap_decay ** (gap - 1)``
    and ``C[b, a] += backward * gap_decay ** (gap - 1)``; ``sim = C / (count_a ** alpha * count_b ** beta)``,
    no item its own neighbour.

    >>> cooccurrence(np.array([0, 0, 0]), np.array([0, 1, 2]), 3, window=2, gap_decay=0.5, backward=0.0,
    ...              alpha=0.0, beta=0.0).toarray().tolist()
    [[0.0, 1.0, 0.5], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    """
    users, items = np.asarray(users), np.asarray(items, np.int64)
    rows, cols, vals = [], [], []
    for gap in range(1, window + 1):
        if gap >= len(items):
            break
        same = users[gap:] == users[:-gap]
        first, then = items[:-gap][same], items[gap:][same]
        weight = np.full(len(first), gap_decay ** (gap - 1))
        rows += [first, then]
        cols += [then, first]
        vals += [weight, backward * weight]
    cooc = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n_items, n_items)) if rows else sp.csr_matrix((n_items, n_items))
    cooc.setdiag(0.0)
    cooc.eliminate_zeros()
    counts = np.maximum(np.bincount(items, minlength=n_items), 1).astype(np.float64)
    return (sp.diags(counts ** -alpha) @ cooc @ sp.diags(counts ** -beta)).tocsr()


def keep_best(matrix: sp.csr_matrix, per_row: int) -> sp.csr_matrix:
    """``matrix`` with only the ``per_row`` largest entries of every row."""
    matrix = matrix.tocsr().copy()
    lengths = np.diff(matrix.indptr)
    if lengths.max(initial=0) <= per_row:
        return matrix
    keep = np.ones(matrix.nnz, dtype=bool)
    for row in np.flatnonzero(lengths > per_row):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        drop = np.argpartition(-matrix.data[start:end], per_row)[per_row:]
        keep[start + drop] = False
    matrix.data = np.where(keep, matrix.data, 0.0)
    matrix.eliminate_zeros()
    return matrix


def top_neighbours(similarity: sp.csr_matrix, per_item: int, norm: str = "row") -> tuple[np.ndarray, np.ndarray]:
    """Each item's ``per_item`` most similar items, best first, as ``(rows, sims)`` of shape
    ``(n_items, per_item)`` (-1 / 0 pad a shorter row); each row's similarities sum to 1
    (``norm="row"``) or are divided by the mean row sum of the items with neighbours (``"global"``).

    >>> rows, sims = top_neighbours(sp.csr_matrix(np.array([[0, 3.0, 1.0], [2.0, 0, 0], [0, 0, 0]])), 2)
    >>> rows.tolist(), sims.tolist()
    ([[1, 2], [0, -1], [-1, -1]], [[0.75, 0.25], [1.0, 0.0], [0.0, 0.0]])
    """
    best = keep_best(similarity, per_item)
    n = best.shape[0]
    rows = np.full((n, per_item), -1, np.int32)
    sims = np.zeros((n, per_item), np.float32)
    lengths = np.diff(best.indptr)
    owner = np.repeat(np.arange(n), lengths)
    # Within each row: by similarity, best first (ties to the smaller item row).
    order = np.lexsort((best.indices, -best.data, owner))
    rank = np.arange(best.nnz) - np.repeat(best.indptr[:-1], lengths)
    rows[owner, rank] = best.indices[order]
    totals = np.maximum(np.asarray(best.sum(axis=1)).ravel(), 1e-30)
    if norm not in ("row", "global"):
        raise ValueError(f"norm must be 'row' or 'global', got {norm!r}")
    if norm == "global":  # one scale for all: the mean row sum of the items with neighbours
        totals[:] = totals[lengths > 0].mean() if (lengths > 0).any() else 1.0
    sims[owner, rank] = best.data[order] / totals[owner]
    return rows, sims


def popular_items(counts: np.ndarray, top: int, weight: float) -> tuple[np.ndarray, np.ndarray]:
    """The ``top`` items with the most training events and their bonuses, ``weight * count / the
    largest count`` (empty when ``weight`` or ``top`` is 0).

    >>> rows, bonus = popular_items(np.array([5.0, 20.0, 0.0, 10.0]), 2, 0.1)
    >>> rows.tolist(), np.round(bonus, 3).tolist()
    ([1, 3], [0.1, 0.05])
    """
    counts = np.asarray(counts, np.float64)
    if weight <= 0 or top <= 0 or not len(counts) or counts.max() <= 0:
        return np.zeros(0, np.int64), np.zeros(0)
    rows = np.argsort(-counts, kind="stable")[:top]
    rows = rows[counts[rows] > 0]
    return rows.astype(np.int64), weight * counts[rows] / counts.max()


def _hopeless(owner: np.ndarray, position: np.ndarray, value: np.ndarray, total: np.ndarray, fresh: np.ndarray,
              bound: np.ndarray, users: int, width: int, k: int) -> np.ndarray:
    """Which added entries cannot reach their user's top ``k``: even at the ``bound`` their
    total stays below the k-th best total of the listed entries (strictly, so ties keep their
    order), and k listed entries will always be ahead of them."""
    listed_totals = np.full((users, width), -np.inf)
    listed = ~fresh
    listed_totals[owner[listed], position[listed]] = value[listed] + total[listed]
    kth = -np.partition(-listed_totals, k - 1, axis=1)[:, k - 1]
    return fresh & (bound[owner] + total < kth[owner])


#: Users re-ranked per block (bounds the (users, candidates) temporaries).
BLOCK = 512


def neighbour_batch(
    rows: np.ndarray,
    scores: np.ndarray,
    k: int,
    vectors: np.ndarray,
    recent: np.ndarray,
    neighbours: np.ndarray,
    sims: np.ndarray,
    target_of: Callable[[np.ndarray], np.ndarray],
    *,
    weight: float,
    decay: float,
    banned: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    popular: tuple[np.ndarray, np.ndarray] | None = None,
    bound: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every user's list re-ranked with the neighbour bonus (see the module doc), vectorised.

    ``rows``/``scores``: ``(users, width)`` lists so far, best first (-1 / -inf pad);
    ``vectors``: the users' query vectors; ``recent``: ``(users, L)`` rows of their last ``L``
    events, newest in the last column, -1 for none or for an item without neighbours (rows
    ``>= len(neighbours)``: new items); ``neighbours``/``sims``: :func:`top_neighbours`;
    ``banned(slots, rows)``: True where user ``slots[i]`` must not be shown ``rows[i]``;
    ``popular``: ``(rows, bonuses)`` added to every user's candidates (:func:`popular_items`);
    ``bound``: per user, a score that no item outside its list and not banned exceeds, as this
    function computes inner products (:func:`streamrec.core.batch.search_bound`; None: unknown).
    With it, an added candidate whose bonus cannot lift it above the k-th best total of the
    list is dropped before its inner product: it could never be shown, so the result is the same.
    Returns ``(users, k)`` rows and scores, best first, -1 / -inf padded; equal scores keep the
    list's order, then the added items' (newest source first, then its best neighbour first)."""
    rows, scores = np.asarray(rows), np.asarray(scores)
    n_users, width = rows.shape
    out_rows = np.full((n_users, k), -1, np.int64)
    out_scores = np.full((n_users, k), -np.inf, np.float64)
    take = min(k, width)
    out_rows[:, :take], out_scores[:, :take] = rows[:, :take], scores[:, :take]
    n_known = len(neighbours)
    recent = np.where((recent >= 0) & (recent < n_known), recent, -1)
    if popular is not None and not len(popular[0]):
        popular = None
    if weight <= 0:
        recent = recent[:, :0]
    if not n_users or (popular is None and not (recent >= 0).any()):
        return out_rows, out_scores.astype(scores.dtype)
    ages = decay ** np.arange(recent.shape[1] - 1, -1, -1, dtype=np.float64)  # column -> decay ** age
    for start in range(0, n_users, BLOCK):
        block = slice(start, start + BLOCK)
        sources = recent[block][:, ::-1]  # newest first
        users = len(sources)
        valid = sources >= 0
        if not valid.any() and popular is None:
            continue
        near = np.where(valid[:, :, None], neighbours[np.maximum(sources, 0)], -1).reshape(users, -1)
        gain = weight * (sims[np.maximum(sources, 0)] * (ages[::-1][None, :, None] * valid[:, :, None])).reshape(users, -1)
        if popular is not None:
            near = np.concatenate([near, np.broadcast_to(popular[0], (users, len(popular[0])))], axis=1)
            gain = np.concatenate([gain, np.broadcast_to(popular[1], (users, len(popular[1])))], axis=1)
        listed = rows[block]
        candidates = np.concatenate([listed, near], axis=1)
        bonus = np.concatenate([np.zeros(listed.shape), gain], axis=1)
        base = np.concatenate([scores[block].astype(np.float64), np.full(near.shape, np.nan)], axis=1)
        owner, position = np.nonzero(candidates >= 0)
        row = candidates[owner, position]
        added = position >= width
        if banned is not None and added.any():
            drop = np.zeros(len(row), bool)
            drop[added] = banned(owner[added] + start, row[added])
            keep = ~drop
            owner, position, row = owner[keep], position[keep], row[keep]
        # One entry per (user, row): its first position; the bonus summed over its entries.
        key = owner * (int(row.max(initial=0)) + 1) + row
        order = np.argsort(key, kind="stable")  # entries are in (owner, position) order already
        key, owner, position, row = key[order], owner[order], position[order], row[order]
        first = np.r_[True, key[1:] != key[:-1]]
        group = np.cumsum(first) - 1
        total = np.bincount(group, weights=bonus[owner, position], minlength=int(first.sum()))
        owner, position, row = owner[first], position[first], row[first]
        value = base[owner, position]
        fresh = np.isnan(value)
        if bound is not None and fresh.any() and width >= k:
            hopeless = _hopeless(owner, position, value, total, fresh, bound[block], users, width, k)
            if hopeless.any():
                keep = ~hopeless
                owner, position, row, value, total, fresh = (
                    part[keep] for part in (owner, position, row, value, total, fresh))
        if fresh.any():
            value[fresh] = np.einsum("ij,ij->i", np.asarray(target_of(row[fresh]), np.float32),
                                     np.asarray(vectors[block], np.float32)[owner[fresh]]).astype(np.float64)
        value = value + total
        # Each user's entries by value, best first, equal values in candidate order: one stable
        # sort per row of a (users, candidates) matrix indexed by first position (several times
        # faster than a lexsort of the flat entries). Empty cells sort last (+inf); an entry
        # scored -inf sorts after every finite one and before them.
        sort_key = np.full(candidates.shape, np.inf)
        sort_key[owner, position] = np.where(value == -np.inf, np.finfo(np.float64).max, -value)
        at = np.argsort(sort_key, axis=1, kind="stable")[:, :k]
        dense_rows = np.full(candidates.shape, -1, np.int64)
        dense_rows[owner, position] = row
        dense_values = np.full(candidates.shape, -np.inf)
        dense_values[owner, position] = value
        shown = at.shape[1]
        out_rows[block], out_scores[block] = -1, -np.inf
        out_rows[block, :shown] = np.take_along_axis(dense_rows, at, axis=1)
        out_scores[block, :shown] = np.take_along_axis(dense_values, at, axis=1)
    return out_rows, out_scores.astype(scores.dtype)
