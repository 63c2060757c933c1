"""Building FAISS indexes over item vectors (inner product), and moving them to a GPU.

Indexes are described by FAISS factory strings (``"Flat"``, ``"IVF1024,Flat"``, ``"HNSW32"``,
``"IVF4096,SQ8"``...) and built with ``faiss.index_factory``. ``"auto"`` picks one from the
catalog size (:func:`choose_factory`). Searching is :mod:`streamrec.core.search`.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np

from streamrec.core.search import check_vectors

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
