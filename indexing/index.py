"""Building and searching FAISS indexes over item vectors (inner product).

Indexes are described by FAISS factory strings (``"Flat"``, ``"IVF1024,Flat"``, ``"HNSW32"``,
``"IVF4096,SQ8"``...) and built with ``faiss.index_factory``. ``"auto"`` picks one from the
catalog size (:func:`choose_factory`). Searches are batched and exclude, per query, the rows
a user must not be shown (purchased items) by over-fetching and filtering.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

import faiss
import numpy as np

logger = logging.getLogger(__name__)

#: Catalog sizes up to this use exact search when the factory is "auto".
EXACT_UP_TO = 200_000


def choose_factory(n_items: int) -> str:
    """The index used for ``factory="auto"``: exact for small catalogs, IVF with 8-bit
    scalar quantisation (a quarter of the memory of float32) for large ones.

    >>> choose_factory(12_000), choose_factory(1_000_000)
    ('Flat', 'IVF4096,SQ8')
    """
    if n_items <= EXACT_UP_TO:
        return "Flat"
    n_lists = 1 << int(np.clip(np.round(np.log2(4 * np.sqrt(n_items))), 10, 16))
    return f"IVF{n_lists},SQ8"


def check_vectors(vectors: np.ndarray, what: str = "item vectors") -> np.ndarray:
    """Return ``vectors`` as C-contiguous float32 ``(n, d)``; raise ValueError if not finite."""
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array).all(axis=1)))
        raise ValueError(f"{what} contain NaN or infinite values in {bad} row(s)")
    return array


def build_index(item_vectors: np.ndarray, factory: str = "Flat", *, seed: int = 0, nprobe: int = 32) -> faiss.Index:
    """Build an inner-product index over ``item_vectors`` (trained first if the type needs it)."""
    vectors = check_vectors(item_vectors)
    if factory == "auto":
        factory = choose_factory(len(vectors))
    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        n_train = min(len(vectors), max(256 * 64, 50 * _n_lists(index)))
        sample = vectors[np.random.default_rng(seed).choice(len(vectors), n_train, replace=False)]
        index.train(sample)
    index.add(vectors)
    set_search_effort(index, nprobe)
    return index


def _n_lists(index: faiss.Index) -> int:
    ivf = faiss.try_extract_index_ivf(index)
    return int(ivf.nlist) if ivf is not None else 1


def set_search_effort(index: faiss.Index, effort: int) -> None:
    """Set IVF ``nprobe`` / HNSW ``efSearch`` where the index has one."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = effort
    hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
    if hnsw is not None:
        hnsw.efSearch = max(effort, 16)


def maybe_to_gpu(index: faiss.Index, *, use_gpu: bool = True) -> faiss.Index:
    """Move the index to GPU 0 when FAISS was built with GPU support and sees a GPU."""
    n_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if not use_gpu or n_gpus == 0:
        return index
    logger.info("moving the index to GPU (%d visible)", n_gpus)
    resources = faiss.StandardGpuResources()
    gpu_index = faiss.index_cpu_to_gpu(resources, 0, index)
    gpu_index.referenced_resources = resources  # keep alive as long as the index
    return gpu_index


def search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    exclude: Sequence[Collection[int]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` rows and scores per query, skipping each query's excluded rows.

    Returns ``(rows, scores)`` of shape ``(n_queries, k)``; rows are -1 (score -inf) where
    fewer than ``k`` items remain.
    """
    queries = check_vectors(queries, "query vectors")
    n = len(queries)
    rows_out = np.full((n, k), -1, dtype=np.int64)
    scores_out = np.full((n, k), -np.inf, dtype=np.float32)
    if n == 0:
        return rows_out, scores_out
    extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
    fetch = min(k + extra, index.ntotal)
    scores, rows = index.search(queries, fetch)
    if exclude is None or not extra:
        width = min(k, fetch)
        rows_out[:, :width] = rows[:, :width]
        scores_out[:, :width] = scores[:, :width]
        return rows_out, scores_out
    for q, banned in enumerate(exclude):
        keep = [j for j in range(fetch) if rows[q, j] >= 0 and int(rows[q, j]) not in banned][:k]
        rows_out[q, : len(keep)] = rows[q, keep]
        scores_out[q, : len(keep)] = scores[q, keep]
    return rows_out, scores_out
