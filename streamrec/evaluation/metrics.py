"""Ranking metrics from top-k lists, and the top-k of dense scores with exclusions.

With one relevant item per case (the held-out item, or the next event's item), HR@K is
whether it is in the first K recommendations and NDCG@K is ``1 / log2(position + 2)`` if it
is (position 0 = first), else 0; both are averaged over cases. This is what the S3-Rec
authors' ``recall_at_k`` and ``ndcg_k`` compute for a single test item.

>>> top = np.array([[3, 1, 2], [0, 1, 2]])
>>> positions = hit_positions(top, np.array([1, 7]))
>>> positions.tolist()
[1, 3]
>>> summarise(positions, ks=(1, 3))
{'HR@1': 0.0, 'HR@3': 0.5, 'NDCG@1': 0.0, 'NDCG@3': 0.3155}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KS: tuple[int, ...] = (5, 10, 20)


def hit_positions(top: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Position of ``targets[n]`` in row ``top[n]``; ``top.shape[1]`` where it is absent."""
    top = np.asarray(top)
    match = top == np.asarray(targets)[:, None]
    found = match.any(axis=1)
    return np.where(found, match.argmax(axis=1), top.shape[1]).astype(np.int64)


def summarise(positions: np.ndarray, ks: Sequence[int] = KS, *, digits: int = 4) -> dict[str, float]:
    """``HR@K`` and ``NDCG@K`` for every K from hit positions (K must not exceed the list length)."""
    positions = np.asarray(positions)
    out: dict[str, float] = {}
    if not len(positions):
        return {**{f"HR@{k}": 0.0 for k in ks}, **{f"NDCG@{k}": 0.0 for k in ks}}
    gains = 1.0 / np.log2(positions + 2.0)
    for k in ks:
        out[f"HR@{k}"] = round(float(np.mean(positions < k)), digits)
    for k in ks:
        out[f"NDCG@{k}"] = round(float(np.mean(np.where(positions < k, gains, 0.0))), digits)
    return out


def top_k(scores: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Rows of the ``k`` best scores per row of ``scores`` (best first, ties by lower row),
    never an excluded row; -1 where fewer than ``k`` rows are allowed. ``scores`` is
    modified in place where rows are excluded.

    >>> top_k(np.array([[0.1, 0.9, 0.5, 0.9]]), 3, [np.array([3])]).tolist()
    [[1, 2, 0]]
    """
    n, n_items = scores.shape
    if exclude is not None:
        for row, banned in enumerate(exclude):
            if len(banned):
                scores[row, banned] = -np.inf
    width = min(k, n_items)
    if width < n_items:
        part = np.argpartition(-scores, width - 1, axis=1)[:, :width]
    else:
        part = np.broadcast_to(np.arange(n_items), (n, n_items)).copy()
    part_scores = np.take_along_axis(scores, part, axis=1)
    # Best first; equal scores by lower row, so results do not depend on the partition.
    order = np.lexsort((part, -part_scores), axis=1)
    best = np.take_along_axis(part, order, axis=1)
    best_scores = np.take_along_axis(part_scores, order, axis=1)
    if width < n_items:
        # Where the k-th score is tied with rows the partition left out, take the lowest rows.
        tied = np.flatnonzero((scores >= best_scores[:, -1:]).sum(axis=1) > width)
        for row in tied:
            cut = best_scores[row, -1]
            above = np.flatnonzero(scores[row] > cut)
            above = above[np.lexsort((above, -scores[row, above]))]
            best[row] = np.r_[above, np.flatnonzero(scores[row] == cut)[: width - len(above)]]
            best_scores[row] = scores[row, best[row]]
    out = np.full((n, k), -1, dtype=np.int64)
    out[:, :width] = np.where(np.isneginf(best_scores), -1, best)
    return out


def moving_average(hits: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at every position (fewer at the start).

    >>> moving_average(np.array([1, 0, 1, 1]), 2).tolist()
    [1.0, 0.5, 0.5, 1.0]
    """
    hits = np.asarray(hits, dtype=np.float64)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    cumulative = np.r_[0.0, np.cumsum(hits)]
    ends = np.arange(1, len(hits) + 1)
    starts = np.maximum(ends - window, 0)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)


def beyond_accuracy(lists: np.ndarray, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int, *,
                    k: int = 10, sample: int = 2000, seed: int = 0, digits: int = 4) -> dict[str, float]:
    """Catalog coverage, intra-list diversity and novelty of top-``k`` lists (-1 pads a short list).

    ``users``/``items``: the events that define the items' audiences (who touched each item).

    * ``coverage@k``: distinct listed items / ``n_items``.
    * ``ILD@k``: mean over lists of the mean pairwise ``1 - cosine`` of the items' audiences
      (binary user vectors): 0 when every pair was touched by exactly the same users, 1 when no
      pair shares a user (a model-independent item representation); on at most ``sample``
      lists drawn with ``seed``.
    * ``novelty@k``: mean ``-log2`` of the share of users who touched a listed item (an item no
      one touched counts as touched by one).

    >>> lists = np.array([[0, 1], [0, 2]])
    >>> users, items = np.array([0, 1, 0, 2]), np.array([0, 0, 1, 2])
    >>> beyond_accuracy(lists, users, items, n_users=4, n_items=4, k=2)
    {'coverage@2': 0.75, 'ILD@2': 0.6464, 'novelty@2': 1.5}
    """
    import scipy.sparse as sp

    top = lists[:, :k]
    valid = top >= 0
    listed = top[valid]
    pairs = np.unique(np.stack([items, users]), axis=1) if len(items) else np.zeros((2, 0), np.int64)
    audience = np.bincount(pairs[0], minlength=n_items).astype(np.float64)
    novelty = float(np.mean(-np.log2(np.maximum(audience[listed], 1.0) / max(n_users, 1)))) if len(listed) else 0.0
    incidence = sp.csr_matrix((np.ones(pairs.shape[1]), (pairs[0], pairs[1])), shape=(n_items, max(n_users, 1)))
    norms = np.sqrt(np.maximum(audience, 1.0))
    incidence = sp.diags(1.0 / norms) @ incidence
    rng = np.random.default_rng(seed)
    chosen = np.flatnonzero(valid.sum(axis=1) >= 2)
    if len(chosen) > sample:
        chosen = np.sort(rng.choice(chosen, sample, replace=False))
    ild = []
    for n in chosen:
        rows = top[n][valid[n]]
        vectors = incidence[rows]
        similarity = (vectors @ vectors.T).toarray()
        m = len(rows)
        ild.append(1.0 - (similarity.sum() - np.trace(similarity)) / (m * (m - 1)))
    return {f"coverage@{k}": round(len(np.unique(listed)) / max(n_items, 1), digits),
            f"ILD@{k}": round(float(np.mean(ild)) if ild else 0.0, digits),
            f"novelty@{k}": round(novelty, digits)}
