"""Building FAISS indexes over item vectors (inner product), calibrating their search effort,
and moving them to a GPU.

Indexes are described by FAISS factory strings (``"Flat"``, ``"IVF1024,Flat"``, ``"HNSW32"``,
``"IVF4096,PQ32x4fs,RFlat"``...) and built with ``faiss.index_factory``. ``"auto"`` picks one
from the catalog size (:func:`choose_factory`). An approximate index is *calibrated* when it is
built for serving (:func:`build_served_index`): its recall@10 against exact search is measured
on a sample of queries at increasing search effort (IVF ``nprobe``, HNSW ``efSearch``), and the
smallest effort that reaches the target recall is kept (:class:`Calibration`). Searching is
:mod:`streamrec.core.search`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import faiss
import numpy as np

from streamrec.core.search import (
    BLAS_FROM_QUERIES,
    check_vectors,
    euclidean_items,
    inner_product_search,
    is_euclidean,
    mark_euclidean,
    use_blas_from,
)

logger = logging.getLogger(__name__)

#: recall@10 the calibration aims for by default (setting ``index.target_recall``).
DEFAULT_TARGET_RECALL = 0.95
#: Catalogs up to this size are served exactly by ``auto`` (an approximate index gains little
#: there, and the issue allows one only at recall@10 >= 0.99: docs/performance.md).
EXACT_UP_TO = 50_000
#: From this many items ``auto`` would try 8-bit scalar codes first (IVF,SQ8, falling back to
#: IVF,Flat where their calibration cannot reach the target recall). Off since float vectors are
#: indexed on the Euclidean reduction: at 1M items IVF1024,Flat on it reached recall@10 0.96 at
#: nprobe 8 and served 12,542 events/s, against IVF1024,SQ8's nprobe 48 and 764 events/s
#: (docs/performance.md); a quarter of the memory is what SQ8 still offers.
SQ8_FROM = 10**12
#: Candidates an index with exact re-ranking (``...,RFlat``) fetches per wanted neighbour.
REFINE_K_FACTOR = 16
#: Effort used for a model saved before calibration existed (its meta.json has no "search").
LEGACY_EFFORT = 32
#: Queries the calibration measures recall on, and the neighbours compared.
CALIBRATION_QUERIES = 1000
K = 10


def ivf_lists(n_items: int) -> int:
    """Inverted lists for ``n_items``: about 4 sqrt(n), a power of two in [256, 65536].

    >>> ivf_lists(100_000), ivf_lists(1_000_000)
    (1024, 4096)
    """
    return 1 << int(np.clip(np.round(np.log2(4 * np.sqrt(n_items))), 8, 16))


def choose_factory(n_items: int) -> str:
    """The index used for ``factory="auto"``: exact up to :data:`EXACT_UP_TO` items, else IVF
    with about sqrt(n) lists (a power of two) over float vectors, built on the Euclidean
    reduction, its ``nprobe`` calibrated on the built index (:func:`build_served_index`); from
    :data:`SQ8_FROM` items (off) over 8-bit scalar codes. Chosen from the recall/QPS curves in
    docs/performance.md ("Indexes per catalog size"): IVF,Flat is the variant whose curve
    reaches any target on every catalog; fewer, fuller lists served more QPS than 4 sqrt(n) at
    the same recall; on the reduction it scans a few lists where SQ8 on raw vectors scanned
    dozens.

    >>> choose_factory(12_000), choose_factory(100_000), choose_factory(1_000_000)
    ('Flat', 'IVF256,Flat', 'IVF1024,Flat')
    """
    if n_items <= EXACT_UP_TO:
        return "Flat"
    lists = 1 << int(np.clip(np.round(np.log2(np.sqrt(n_items))), 8, 16))
    return f"IVF{lists},{'SQ8' if n_items >= SQ8_FROM else 'Flat'}"


def build_index(item_vectors: np.ndarray, factory: str = "Flat", *, seed: int = 0, nprobe: int | None = None,
                euclidean: bool = True) -> faiss.Index:
    """Build an inner-product index over ``item_vectors`` (trained first if the type needs it).

    ``nprobe``: a fixed search effort; none leaves FAISS's default (see
    :func:`build_served_index` for a calibrated one). ``euclidean``: an approximate index over
    float vectors (IVF,Flat, HNSW) is built on the Euclidean reduction of the items
    (:func:`streamrec.core.search.euclidean_items`); False, and quantised codes (SQ, PQ),
    build it on the raw vectors with inner product."""
    vectors = check_vectors(item_vectors)
    if factory == "auto":
        factory = choose_factory(len(vectors))
    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    m2 = None
    if euclidean and not is_exact(index) and not _coded(factory):
        # Approximate indexes partition and link items by distance: built on the Euclidean
        # reduction, whose nearest items are the items of largest inner product
        # (streamrec.core.search.euclidean_items; docs/performance.md).
        index, width = _euclidean_index(factory, vectors.shape[1])
        vectors, m2 = euclidean_items(vectors, width)
    if not index.is_trained:
        n_train = min(len(vectors), max(256 * 64, 50 * _n_lists(index)))
        sample = vectors[np.random.default_rng(seed).choice(len(vectors), n_train, replace=False)]
        index.train(sample)
    index.add(vectors)
    refine = faiss.downcast_index(index)
    if isinstance(refine, faiss.IndexRefine):
        refine.k_factor = REFINE_K_FACTOR
    if nprobe is not None:
        set_search_effort(index, nprobe)
    if m2 is not None:
        mark_euclidean(index, m2, len(item_vectors[0]))
    return index


def _coded(factory: str) -> bool:
    """Does ``factory`` store items as scalar or product-quantised codes (SQ, PQ)? Those are
    built on the raw vectors: the reduction's extra component widens every code's range, and
    at 1M items IVF1024,SQ8 on it did not reach recall@10 0.95 within 12 minutes of calibration
    (docs/performance.md).

    >>> _coded("IVF1024,SQ8"), _coded("IVF256,Flat"), _coded("IVF4096,PQ32x4fs,RFlat"), _coded("HNSW32")
    (True, False, True, False)
    """
    return any(part.startswith(("SQ", "PQ")) for part in factory.split(","))


def _euclidean_index(factory: str, dim: int) -> tuple[faiss.Index, int]:
    """An empty L2 index of ``factory`` for ``dim``-dimensional items and their norm component:
    ``dim + 1`` wide, or the next multiple of 8, 16, 32 or 64 where the factory's product
    quantizer needs its sub-vectors to divide the dimension (the padding is zeros)."""
    for width in (dim + 1, *(dim + 1 + (-(dim + 1)) % m for m in (8, 16, 32, 64))):
        try:
            return faiss.index_factory(width, factory, faiss.METRIC_L2), width
        except RuntimeError:
            continue
    raise ValueError(f"the factory {factory!r} cannot index {dim + 1}-dimensional vectors, even padded")


def _n_lists(index: faiss.Index) -> int:
    ivf = faiss.try_extract_index_ivf(index)
    return int(ivf.nlist) if ivf is not None else 1


def _hnsw(index: faiss.Index):
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexRefine):
        inner = faiss.downcast_index(inner.base_index)
    return getattr(inner, "hnsw", None)


def is_exact(index: faiss.Index) -> bool:
    """True for an index whose search is exhaustive and exact (a flat index)."""
    return isinstance(faiss.downcast_index(index), faiss.IndexFlat)


def effort_name(index: faiss.Index) -> str | None:
    """``"nprobe"``, ``"efSearch"`` or None (an index without a search effort)."""
    if faiss.try_extract_index_ivf(index) is not None:
        return "nprobe"
    return "efSearch" if _hnsw(index) is not None else None


def set_search_effort(index: faiss.Index, effort: int) -> None:
    """Set IVF ``nprobe`` / HNSW ``efSearch`` where the index has one."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = int(effort)
    hnsw = _hnsw(index)
    if hnsw is not None:
        hnsw.efSearch = int(effort)


def search_effort(index: faiss.Index) -> int | None:
    """The index's IVF ``nprobe`` / HNSW ``efSearch`` (None without one)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return int(ivf.nprobe)
    hnsw = _hnsw(index)
    return int(hnsw.efSearch) if hnsw is not None else None


def effort_steps(index: faiss.Index) -> list[int]:
    """The search efforts a calibration tries, in increasing order: 1, 2, 3, 4, 6, 8, 12, ...
    (powers of two and 1.5 times them) up to all lists (IVF), or from 12 up to 4,096 (HNSW efSearch).

    >>> effort_steps(faiss.index_factory(8, "IVF16,Flat"))
    [1, 2, 3, 4, 6, 8, 12, 16]
    """
    ivf = faiss.try_extract_index_ivf(index)
    top = int(ivf.nlist) if ivf is not None else 4096
    low = 1 if ivf is not None else K
    steps = sorted({s for p in range(17) for s in (1 << p, 3 << max(p - 1, 0)) if low <= s <= top} | {top})
    return steps


def recall_at_k(found: np.ndarray, exact: np.ndarray, k: int = K) -> float:
    """Mean over queries of |found[:k] ∩ exact[:k]| / k (rows of item ids; -1 = none).

    >>> recall_at_k(np.array([[1, 2, 3], [4, 5, -1]]), np.array([[3, 2, 1], [4, 6, 7]]), k=3)
    0.6666666666666666
    """
    found, exact = np.asarray(found)[:, :k], np.asarray(exact)[:, :k]
    if not len(exact):
        return 1.0
    hits = (found[:, :, None] == exact[:, None, :]) & (found[:, :, None] >= 0)
    return float(hits.any(axis=2).sum() / (k * len(exact)))


def exact_top(item_vectors: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """The exact top-``k`` rows per query, by brute force (inner product)."""
    flat = faiss.IndexFlatIP(item_vectors.shape[1])
    flat.add(check_vectors(item_vectors))
    use_blas_from(BLAS_FROM_QUERIES, flat.d)
    _, rows = flat.search(check_vectors(queries, "query vectors"), k)
    return rows


def session_queries(item_vectors: np.ndarray, n_queries: int = CALIBRATION_QUERIES, *, context: np.ndarray | None = None,
                    seed: int = 0) -> np.ndarray:
    """Synthetic user vectors for calibrating an index when no real ones are at hand: what the
    worker's rule makes of a short session, a sum of the viewed items' ``context`` vectors
    (default the item vectors themselves) with the newest weighted 1 and each older one
    halved. A session starts at a random item; each next item is, with probability 0.8, one
    of that first item's 50 nearest neighbours (the items a shopper browses together), else
    another random item (a second interest). Sessions are 1 to 8 items long.
    """
    vectors = check_vectors(item_vectors)
    context = vectors if context is None else check_vectors(context, "context vectors")
    rng = np.random.default_rng(seed)
    n_items = len(vectors)
    n_neighbours = min(50, n_items)
    starts = rng.integers(0, n_items, n_queries)
    neighbours = exact_top(vectors, context[starts], n_neighbours)
    queries = np.zeros((n_queries, vectors.shape[1]), np.float32)
    lengths = rng.integers(1, 9, n_queries)
    for q in range(n_queries):
        items = [int(starts[q])]
        for _ in range(int(lengths[q]) - 1):
            near = rng.random() < 0.8
            candidate = int(neighbours[q, rng.integers(0, n_neighbours)]) if near else int(rng.integers(0, n_items))
            items.append(candidate if candidate >= 0 else int(starts[q]))
        weights = 0.5 ** np.arange(len(items))[::-1]  # the last item viewed is the newest
        queries[q] = weights.astype(np.float32) @ context[items]
    return queries


@dataclass(frozen=True)
class Calibration:
    """How an index was calibrated: the effort chosen and the recall@10 measured at it."""

    factory: str
    effort_name: str | None  # "nprobe", "efSearch", or None (exact)
    effort: int | None
    recall_at_10: float
    target_recall: float
    reached: bool
    queries: str  # where the queries came from
    n_queries: int
    curve: tuple[tuple[int, float], ...] = ()  # (effort, recall@10) tried, in order
    seconds: float = 0.0
    #: Built on the Euclidean reduction of the items (:func:`streamrec.core.search.euclidean_items`).
    euclidean: bool = False

    def as_meta(self) -> dict[str, object]:
        """For meta.json and reports (JSON types only)."""
        meta = asdict(self)
        meta["curve"] = [list(point) for point in self.curve]
        return meta


def calibrate(
    index: faiss.Index,
    item_vectors: np.ndarray,
    queries: np.ndarray,
    target_recall: float = DEFAULT_TARGET_RECALL,
    *,
    factory: str = "",
    source: str = "given",
    steps: Sequence[int] | None = None,
) -> Calibration:
    """Set the smallest search effort at which ``index`` reaches ``target_recall`` (recall@10
    against exact search over ``item_vectors`` on ``queries``), trying :func:`effort_steps`
    in increasing order and stopping at the first that reaches it. Where none does, the index
    is left at the effort with the highest recall and ``reached`` is False (logged).
    An exact index, or one without a search effort, is measured once.
    """
    if not 0 < target_recall <= 1:
        raise ValueError(f"the target recall must be in (0, 1], got {target_recall}")
    began = time.perf_counter()
    queries = check_vectors(queries, "query vectors")
    if not len(queries):
        raise ValueError("calibrating an index needs at least one query")
    truth = exact_top(item_vectors, queries, K)
    name = effort_name(index)
    if name is None or is_exact(index):
        recall = 1.0 if is_exact(index) else recall_at_k(inner_product_search(index, queries, K)[1], truth)
        return Calibration(factory, None, None, round(recall, 4), target_recall, recall >= target_recall, source,
                           len(queries), (), round(time.perf_counter() - began, 2))
    curve: list[tuple[int, float]] = []
    for effort in steps or effort_steps(index):
        set_search_effort(index, effort)
        recall = recall_at_k(inner_product_search(index, queries, K)[1], truth)
        curve.append((int(effort), round(recall, 4)))
        if recall >= target_recall:
            break
    best_effort, best_recall = curve[-1]
    reached = best_recall >= target_recall
    if not reached:
        best_effort, best_recall = max(curve, key=lambda point: (point[1], -point[0]))
        logger.warning("index %s reaches recall@10 %.3f at best (%s %d), below the target %.3f",
                       factory or type(index).__name__, best_recall, name, best_effort, target_recall)
    set_search_effort(index, best_effort)
    calibration = Calibration(factory, name, best_effort, best_recall, target_recall, reached, source, len(queries),
                              tuple(curve), round(time.perf_counter() - began, 2))
    logger.info("calibrated %s: %s %d gives recall@10 %.3f (target %.3f, %d %s queries, %.1f s)",
                factory or type(index).__name__, name, best_effort, best_recall, target_recall, len(queries), source,
                calibration.seconds)
    return calibration


def build_served_index(
    item_vectors: np.ndarray,
    factory: str = "auto",
    *,
    target_recall: float = DEFAULT_TARGET_RECALL,
    context: np.ndarray | None = None,
    queries: np.ndarray | None = None,
    n_queries: int = CALIBRATION_QUERIES,
    seed: int = 0,
) -> tuple[faiss.Index, Calibration]:
    """The index a model is served with, and its calibration: every place that builds a
    served index (model artifacts, the trainer's candidates, the evaluation) comes here.

    ``queries``: user vectors to calibrate on (real users' vectors where the caller has them);
    by default :func:`session_queries` over ``context`` (the vectors users' interest vectors
    are made of; default ``item_vectors``).
    """
    vectors = check_vectors(item_vectors)
    auto = factory == "auto"
    if auto:
        factory = choose_factory(len(vectors))
    index = build_index(vectors, factory, seed=seed)
    if is_exact(index):
        return index, Calibration(factory, None, None, 1.0, target_recall, True, "exact", 0)
    if queries is None:
        queries, source = session_queries(vectors, n_queries, context=context, seed=seed), "sessions"
    else:
        source = "users"
    # The Euclidean reduction first; where it cannot reach the target (float32 loses the inner
    # products' differences when a few items' norms dwarf the rest's), the raw vectors; with
    # auto, SQ8 codes that cannot reach it give way to float ones.
    candidates = [(factory, False)] if _coded(factory) else [(factory, True), (factory, False)]
    if auto and factory.endswith(",SQ8"):
        fallback = factory.removesuffix(",SQ8") + ",Flat"
        candidates += [(fallback, True), (fallback, False)]
    best = None
    for attempt, (name, euclidean) in enumerate(candidates):
        if attempt:
            logger.info("%s cannot reach recall@10 %.3f; building %s%s instead", best[1].factory, target_recall, name,
                        "" if euclidean else " on the raw vectors")
            index = build_index(vectors, name, seed=seed, euclidean=euclidean)
        calibration = calibrate(index, vectors, queries, target_recall, factory=name, source=source)
        calibration = replace(calibration, euclidean=is_euclidean(index))
        if best is None or calibration.recall_at_10 > best[1].recall_at_10:
            best = (index, calibration)
        if calibration.reached:
            break
    index, calibration = best
    set_search_effort(index, calibration.effort)
    return index, calibration


def maybe_to_gpu(index: faiss.Index, *, use_gpu: bool = True) -> faiss.Index:
    """Move the index to GPU 0 when FAISS was built with GPU support and sees a GPU (its
    search effort goes with it); an index type the GPU cannot hold stays on the CPU, logged."""
    n_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if not use_gpu or n_gpus == 0:
        return index
    logger.info("moving the index to GPU (%d visible)", n_gpus)
    resources = faiss.StandardGpuResources()
    try:
        gpu_index = faiss.index_cpu_to_gpu(resources, 0, index)
    except RuntimeError as exc:
        logger.warning("the index %s cannot go to the GPU (%s); searching on the CPU", type(faiss.downcast_index(index)).__name__,
                       str(exc).splitlines()[0])
        return index
    # Kept alive as long as the index (FAISS refuses new attributes on its index objects).
    object.__setattr__(gpu_index, "referenced_resources", resources)
    if is_euclidean(index):
        mark_euclidean(gpu_index, index.mips_norm2, index.mips_dim)
    return gpu_index
