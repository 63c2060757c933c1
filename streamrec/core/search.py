"""Searching item vectors: top k per user, with per-user exclusions and shop-wide blocked rows.

Pure (numpy and FAISS, no Kafka): the worker's core searches through it, and so do the
evaluation harness and the benchmarks. Building, saving and loading indexes is
:mod:`indexing.index` and :mod:`indexing.artifact`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import faiss
import numpy as np


def check_vectors(vectors: np.ndarray, what: str = "item vectors") -> np.ndarray:
    """Return ``vectors`` as C-contiguous float32 ``(n, d)``; raise ValueError if not finite."""
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array).all(axis=1)))
        raise ValueError(f"{what} contain NaN or infinite values in {bad} row(s)")
    return array


#: Exact search of a batch from this many queries on goes through one BLAS matrix product.
BLAS_FROM_QUERIES = 16


def use_blas_from(n_queries: int, dim: int) -> None:
    """Make FAISS's exact (flat) search use BLAS for batches of ``n_queries`` or more.

    FAISS 1.15 switches when ``n_queries * dim`` reaches ``distance_compute_blas_threshold``
    (128,000 by default: 1,000 queries at d = 128). Below that it streams the whole catalog
    through the cache once per query, which is slower for batches of more than a few queries
    and faster for one (docs/performance.md).
    """
    faiss.cvar.distance_compute_blas_threshold = n_queries * dim


def fetch_sizes(k: int, n_excluded: np.ndarray, n_total: int) -> np.ndarray:
    """How many neighbours to fetch per query so that ``k`` remain after its exclusions:
    ``k`` for a query without any, else ``k`` plus the next power of two at or above its
    count (so a batch needs a few search calls, not one per query), at most ``n_total``.

    >>> fetch_sizes(10, np.array([0, 1, 3, 4, 100]), 1000).tolist()
    [10, 11, 14, 14, 138]
    """
    n_excluded = np.asarray(n_excluded, dtype=np.int64)
    padded = np.where(n_excluded > 0, 1 << np.ceil(np.log2(np.maximum(n_excluded, 1))).astype(np.int64), 0)
    return np.minimum(k + padded, n_total)


def fetch_groups(fetch: np.ndarray, min_group: int = BLAS_FROM_QUERIES, max_growth: int = 4) -> list[tuple[int, np.ndarray]]:
    """The queries of a batch grouped for one search call per group: ``(fetch size, query
    positions)``, by fetch size (:func:`fetch_sizes`), except that a group of fewer than
    ``min_group`` queries joins a neighbouring size, fetched for all, as long as no query
    fetches more than ``max_growth`` times its own size: in a small batch, a few more
    neighbours per query cost less than a search call for a handful of queries, below the
    BLAS threshold.

    >>> [(size, group.tolist()) for size, group in fetch_groups(np.array([10, 10, 14, 10, 11, 400]), min_group=3)]
    [(14, [0, 1, 3, 4, 2]), (400, [5])]
    >>> [(size, group.tolist()) for size, group in fetch_groups(np.array([10, 10, 14, 10, 11, 400]), min_group=1)]
    [(10, [0, 1, 3]), (11, [4]), (14, [2]), (400, [5])]
    """
    fetch = np.asarray(fetch, dtype=np.int64)
    groups: list[tuple[int, np.ndarray, int]] = []  # fetch size, queries, their smallest own fetch

    def close(members: np.ndarray, size: int, smallest: int) -> None:
        if len(members) < min_group and groups and size <= max_growth * groups[-1][2]:
            groups[-1] = (size, np.concatenate([groups[-1][1], members]), groups[-1][2])  # joins the group below
        else:
            groups.append((size, members, smallest))

    pending, pending_size, smallest = np.zeros(0, np.int64), 0, 0
    for size in np.unique(fetch).tolist():
        members = np.flatnonzero(fetch == size)
        if len(pending) and size <= max_growth * smallest:
            members = np.concatenate([pending, members])  # the small group joins this larger size
        else:
            if len(pending):
                close(pending, pending_size, smallest)
            smallest = size
        pending, pending_size = members, size
        if len(pending) >= min_group:
            groups.append((pending_size, pending, smallest))
            pending = np.zeros(0, np.int64)
    if len(pending):
        close(pending, pending_size, smallest)
    return [(size, members) for size, members, _ in groups]


def _selector_params(index: faiss.Index, allowed: np.ndarray) -> faiss.SearchParameters | None:
    """Search parameters that skip rows whose bit in ``allowed`` is 0 (a bitmap, bit i of byte
    i // 8 for row i), for CPU indexes; None where the index cannot take a selector (GPU)."""
    if "Gpu" in type(index).__name__:
        return None
    selector = faiss.IDSelectorBitmap(index.ntotal, faiss.swig_ptr(allowed))
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        params = faiss.SearchParametersIVF(sel=selector, nprobe=int(ivf.nprobe))
    else:
        params = faiss.SearchParameters(sel=selector)
    params.referenced = (selector, allowed)  # keep both alive while the search runs
    refine = faiss.downcast_index(index)
    if isinstance(refine, faiss.IndexRefine):  # the selector goes to the index whose candidates are re-ranked
        outer = faiss.IndexRefineSearchParameters(k_factor=float(refine.k_factor), base_index_params=params)
        outer.referenced = params
        return outer
    return params


def euclidean_items(item_vectors: np.ndarray, width: int | None = None) -> tuple[np.ndarray, float]:
    """The reduction of inner-product search to Euclidean search (Bachrach et al., RecSys 2014)
    that an approximate index is built on: each item vector gets one more component,
    ``sqrt(M² - |x|²)`` with ``M`` the largest norm, so that every item has norm ``M``; a
    query gets a 0 there, and then ``|q - x|² = |q|² + M² - 2 q·x``: the nearest items are the
    items of largest inner product, and the inner product comes back from the distance.

    IVF and HNSW partition and link items by distance; over raw item vectors with inner
    product, long vectors (popular items) attract the queries and the lists, and recall per
    item scanned drops (docs/performance.md, "Indexes per catalog size"). Returns the
    ``(n, d + 1)`` vectors (zero-padded to ``width`` columns where given: product quantizers
    want a dimension their sub-vectors divide) and ``M²``.

    >>> items, m2 = euclidean_items(np.array([[3, 4], [1, 0]], np.float32))
    >>> items.tolist(), m2
    ([[3.0, 4.0, 0.0], [1.0, 0.0, 4.898979663848877]], 25.0)
    """
    vectors = check_vectors(item_vectors)
    norms2 = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)
    m2 = float(norms2.max()) if len(norms2) else 0.0
    out = np.zeros((len(vectors), max(width or 0, vectors.shape[1] + 1)), np.float32)
    out[:, : vectors.shape[1]] = vectors
    out[:, vectors.shape[1]] = np.sqrt(np.maximum(m2 - norms2, 0.0))
    return out, m2


def mark_euclidean(index: faiss.Index, m2: float, dim: int) -> faiss.Index:
    """Record on ``index`` that it holds :func:`euclidean_items` of ``dim``-dimensional items
    of largest squared norm ``m2`` (FAISS refuses new attributes on its index objects; these
    live in the Python object, and whoever loads or copies the index marks it again)."""
    object.__setattr__(index, "mips_norm2", float(m2))
    object.__setattr__(index, "mips_dim", int(dim))
    return index


def is_euclidean(index: faiss.Index) -> bool:
    """Is ``index`` built on :func:`euclidean_items` (``index.mips_norm2`` holds its ``M²``)?"""
    return getattr(index, "mips_norm2", None) is not None


def inner_product_search(index: faiss.Index, queries: np.ndarray, k: int,
                         params: faiss.SearchParameters | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``index.search`` with inner-product scores for every index: one over raw vectors
    (inner product), or one built on :func:`euclidean_items` (its queries get their 0, and
    its distances become inner products). Returns FAISS's ``(scores, rows)``."""
    if not is_euclidean(index):
        return index.search(queries, k, params=params)
    padded = np.zeros((len(queries), index.d), np.float32)  # 0 for the norm component and any padding
    padded[:, : queries.shape[1]] = queries
    distances, rows = index.search(padded, k, params=params)
    norms2 = np.einsum("ij,ij->i", queries, queries, dtype=np.float64)
    scores = ((norms2[:, None] + index.mips_norm2 - distances) / 2).astype(np.float32)
    scores[rows < 0] = -np.inf
    return scores, rows


def search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    exclude: Sequence[Collection[int]] | None = None,
    *,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` rows and scores per query, skipping each query's excluded rows and, with
    ``allowed`` (a packed little-endian bitmap over the index's rows), every row whose bit is 0.

    Returns ``(rows, scores)`` of shape ``(n_queries, k)``; rows are -1 (score -inf) where
    fewer than ``k`` items remain. Queries are searched in groups of equal fetch size
    (:func:`fetch_sizes`): one user with many exclusions does not make the whole batch fetch
    (and heap-sort) hundreds of neighbours. Disallowed rows are skipped inside the search
    (a FAISS ID selector) where the index takes one, else fetched past and filtered.

    >>> index = faiss.IndexFlatIP(2); index.add(np.array([[1, 0], [0.9, 0.1], [0, 1]], np.float32))
    >>> search(index, np.array([[1, 0]], np.float32), 2, allowed=np.packbits([0, 1, 1], bitorder="little"))[0].tolist()
    [[1, 2]]
    """
    queries = check_vectors(queries, "query vectors")
    n = len(queries)
    rows_out = np.full((n, k), -1, dtype=np.int64)
    scores_out = np.full((n, k), -np.inf, dtype=np.float32)
    if n == 0 or index.ntotal == 0:
        return rows_out, scores_out
    if queries.shape[1] != (index.mips_dim if is_euclidean(index) else index.d):
        raise ValueError(f"query vectors of dimension {queries.shape[1]} for an index of dimension {index.d}")
    use_blas_from(BLAS_FROM_QUERIES, index.d)
    n_excluded = np.zeros(n, dtype=np.int64) if exclude is None else np.fromiter(map(len, exclude), np.int64, count=n)
    params = None
    if allowed is not None:
        params = _selector_params(index, allowed)
        if params is None:  # no selector: treat the disallowed rows as every query's exclusions
            banned = set(np.flatnonzero(~np.unpackbits(allowed, count=index.ntotal, bitorder="little").astype(bool)).tolist())
            exclude = [banned | set(rows) for rows in (exclude or [()] * n)]
            n_excluded = np.fromiter(map(len, exclude), np.int64, count=n)
    for size, group in fetch_groups(fetch_sizes(k, n_excluded, index.ntotal)):
        whole = len(group) == n
        if whole:
            group = np.arange(n)
        scores, rows = inner_product_search(index, queries if whole else queries[group], size, params)
        if not n_excluded[group].any():
            width = min(k, size)
            rows_out[group, :width] = rows[:, :width]
            scores_out[group, :width] = scores[:, :width]
            continue
        for j, q in enumerate(group.tolist()):
            keep = rows[j] >= 0
            if n_excluded[q]:
                keep &= ~np.isin(rows[j], np.fromiter(exclude[q], np.int64, count=n_excluded[q]))
            kept = np.flatnonzero(keep)[:k]
            rows_out[q, : len(kept)] = rows[j, kept]
            scores_out[q, : len(kept)] = scores[j, kept]
    return rows_out, scores_out
