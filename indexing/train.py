"""Training item vectors from the event log.

The model ("co-occurrence embeddings") is a low-rank factorisation of a *transition* matrix:

1. Per user, events are ordered by time and consecutive repeats of one item collapsed.
2. For every pair of events ``a`` before ``b`` at most ``window`` steps apart, the matrix
   gets ``gap_decay ** (gap - 1) * w(type_a) * w(type_b) / w_max**2`` at ``[a, b]`` (the
   user went from a to b) and ``backward_weight`` times that at ``[b, a]``.
3. Popularity is damped: ``M[i, j] / (count_i ** popularity_alpha * count_j ** popularity_beta)``.
4. A truncated SVD ``M ~ U S V^T`` gives ``context = U S^1/2`` and ``target = V S^1/2``.

A user's interest vector is a decayed sum of context vectors of what they did
(:mod:`streams.interest`), so ``user . target[j]`` approximates the decayed sum of rows of
``M``: an item-to-item recommender, smoothed by the low rank and served by FAISS.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from streamrec.contract import EVENT_TYPE_CODES, Event
from streams.interest import DEFAULT_EVENT_WEIGHTS

logger = logging.getLogger(__name__)

#: Catalogs up to this size are factorised with a dense SVD (exact, no ARPACK).
DENSE_SVD_UP_TO = 3000


@dataclass(frozen=True)
class TrainParams:
    """Hyper-parameters of item-vector training (defaults tuned in docs/quality.md)."""

    dim: int = 128
    window: int = 3
    gap_decay: float = 0.5
    backward_weight: float = 0.5
    popularity_alpha: float = 0.5
    popularity_beta: float = 0.3
    event_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim < 1 or self.window < 1:
            raise ValueError(f"dim and window must be >= 1, got {self.dim} and {self.window}")


@dataclass
class Interactions:
    """Events grouped by user and ordered by time, as integer arrays.

    Events of user ``u`` are ``items[user_ptr[u]:user_ptr[u + 1]]`` (rows into ``item_ids``),
    with the matching ``types`` (codes of ``EVENT_TYPES``) and ``ts``.
    """

    item_ids: list[str]
    user_ids: list[str]
    user_ptr: np.ndarray
    items: np.ndarray
    types: np.ndarray
    ts: np.ndarray

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def user_of_event(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.user_ids)), np.diff(self.user_ptr))


def interactions_from_arrays(
    user_keys: np.ndarray, item_keys: np.ndarray, type_codes: np.ndarray, ts: np.ndarray
) -> Interactions:
    """Group parallel arrays of events (in arrival order) by user, stable-sorted by time."""
    item_ids, item_rows = np.unique(item_keys, return_inverse=True)
    user_ids, user_rows = np.unique(user_keys, return_inverse=True)
    order = np.lexsort((np.arange(len(ts)), ts, user_rows))
    counts = np.bincount(user_rows, minlength=len(user_ids))
    return Interactions(
        item_ids=[str(i) for i in item_ids],
        user_ids=[str(u) for u in user_ids],
        user_ptr=np.r_[0, np.cumsum(counts)].astype(np.int64),
        items=item_rows[order].astype(np.int64),
        types=np.asarray(type_codes, dtype=np.int8)[order],
        ts=np.asarray(ts, dtype=np.float64)[order],
    )


def interactions_from_events(events: Iterable[Event]) -> Interactions:
    users, items, types, ts = [], [], [], []
    for event in events:
        users.append(event.user_id)
        items.append(event.item_id)
        types.append(EVENT_TYPE_CODES[event.type])
        ts.append(event.ts)
    if not users:
        raise ValueError("no events to train on")
    return interactions_from_arrays(np.array(users), np.array(items), np.array(types), np.array(ts))


def transition_matrix(data: Interactions, params: TrainParams) -> sp.csr_matrix:
    """The popularity-damped, decayed item-to-item transition matrix (see module doc)."""
    users = data.user_of_event()
    items, types = data.items, data.types
    keep = np.r_[True, (items[1:] != items[:-1]) | (users[1:] != users[:-1])]
    users, items, types = users[keep], items[keep], types[keep]
    weights = np.array([params.event_weights.get(t, 0.0) for t in EVENT_TYPE_CODES], dtype=np.float64)
    w = weights[types] / max(weights.max(), 1e-12)
    rows, cols, vals = [], [], []
    for gap in range(1, params.window + 1):
        same = users[gap:] == users[:-gap]
        a, b = items[:-gap][same], items[gap:][same]
        value = params.gap_decay ** (gap - 1) * w[:-gap][same] * w[gap:][same]
        rows += [a, b]
        cols += [b, a]
        vals += [value, params.backward_weight * value]
    n = data.n_items
    if rows:
        matrix = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    else:
        matrix = sp.csr_matrix((n, n))
    counts = np.maximum(np.bincount(items, minlength=n), 1).astype(np.float64)
    matrix = sp.diags(counts**-params.popularity_alpha) @ matrix @ sp.diags(counts**-params.popularity_beta)
    return matrix.tocsr()


def factorise(matrix: sp.csr_matrix, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rank-``dim`` SVD split symmetrically: ``(U S^1/2, V S^1/2)``, float32, zero-padded
    when the catalog is smaller than ``dim``."""
    n = matrix.shape[0]
    rank = min(dim, n)
    if n <= DENSE_SVD_UP_TO:
        u, s, vt = np.linalg.svd(matrix.toarray(), full_matrices=False)
        u, s, vt = u[:, :rank], s[:rank], vt[:rank]
    else:
        rank = min(rank, n - 2)
        v0 = np.random.default_rng(seed).standard_normal(n)
        u, s, vt = svds(matrix.astype(np.float64), k=rank, v0=v0)
        order = np.argsort(-s)
        u, s, vt = u[:, order], s[order], vt[order]
    root = np.sqrt(np.maximum(s, 0.0))
    context = np.zeros((n, dim), dtype=np.float32)
    target = np.zeros((n, dim), dtype=np.float32)
    context[:, :rank] = u * root
    target[:, :rank] = vt.T * root
    return context, target


def train_item_vectors(data: Interactions, params: TrainParams) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Train ``(context, target, summary)`` from grouped interactions."""
    started = time.perf_counter()
    matrix = transition_matrix(data, params)
    context, target = factorise(matrix, params.dim, params.seed)
    summary = {
        "users": len(data.user_ids),
        "items": data.n_items,
        "events": int(len(data.items)),
        "events_by_type": {t: int(n) for t, n in zip(EVENT_TYPE_CODES, np.bincount(data.types, minlength=len(EVENT_TYPE_CODES)))},
        "ts_range": [float(data.ts.min()), float(data.ts.max())] if len(data.ts) else None,
        "nonzeros": int(matrix.nnz),
        "params": {k: v for k, v in params.__dict__.items()},
        "seconds": round(time.perf_counter() - started, 3),
    }
    logger.info("trained %d item vectors (d=%d) in %.1f s", data.n_items, params.dim, summary["seconds"])
    return context, target, summary
