"""``streamrec bench --index-only``: FAISS index types per catalog size, without Kafka.

For each catalog size: item vectors from a seeded synthetic shop (:func:`streamrec.benchmarks.load.
shop_item_vectors`), queries that are real user vectors (the shop's sessions folded with the
worker's update rule, :func:`streamrec.core.interest.update_batch`), exact top-10 by brute force as
ground truth, then per factory string and search effort (IVF ``nprobe``, HNSW ``efSearch``):
build time, memory per item (the serialised index's size / items), recall@10 against exact
search, and queries per second at each batch size. Indexes are built by
:func:`indexing.index.build_index`, the function that builds the worker's index.

recall@10 = |approximate top 10 ∩ exact top 10| / 10, averaged over the queries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from indexing.index import EXACT_UP_TO, build_index, choose_factory, set_search_effort
from streamrec.benchmarks.load import shop_item_vectors

logger = logging.getLogger(__name__)

DEFAULT_SIZES = (12_000, 100_000)
DEFAULT_BATCH_SIZES = (1, 64, 1024)
#: Search efforts tried per index family.
IVF_PROBES = (4, 8, 16, 32, 64, 128)
HNSW_EF = (16, 32, 64, 128)
K = 10


def ivf_lists(n_items: int) -> int:
    """Inverted lists for ``n_items``: about 4 sqrt(n), a power of two in [1024, 65536] (the
    rule ``indexing.index.choose_factory`` uses for its IVF pick).

    >>> ivf_lists(12_000), ivf_lists(1_000_000)
    (1024, 4096)
    """
    return 1 << int(np.clip(np.round(np.log2(4 * np.sqrt(n_items))), 10, 16))


def default_factories(n_items: int) -> list[str]:
    """Flat, HNSW32, and IVF with the auto rule's lists (Flat, SQ8, PQ32 codes) plus, where
    it differs, IVF with about sqrt(n) lists (fewer, fuller lists suit small catalogs)."""
    lists = ivf_lists(n_items)
    few = 1 << int(np.clip(np.round(np.log2(np.sqrt(n_items))), 4, 16))
    factories = ["Flat", "HNSW32"]
    if few != lists:
        factories += [f"IVF{few},Flat", f"IVF{few},SQ8"]
    return factories + [f"IVF{lists},Flat", f"IVF{lists},SQ8", f"IVF{lists},PQ32"]


def efforts_for(factory: str) -> Sequence[int | None]:
    if factory.startswith("IVF"):
        lists = int(factory[3:].split(",")[0])
        return [p for p in IVF_PROBES if p < lists] or [lists]
    if factory.startswith("HNSW"):
        return HNSW_EF
    return (None,)


def recall_at_k(found: np.ndarray, exact: np.ndarray, k: int = K) -> float:
    """Mean over queries of |found[:k] ∩ exact[:k]| / k (rows of item ids; -1 = none).

    >>> recall_at_k(np.array([[1, 2, 3], [4, 5, -1]]), np.array([[3, 2, 1], [4, 6, 7]]), k=3)
    0.6666666666666666
    """
    hits = 0
    for got, want in zip(found[:, :k], exact[:, :k], strict=True):
        hits += len(set(got[got >= 0].tolist()) & set(want.tolist()))
    return hits / (k * len(exact))


def user_queries(n_items: int, n_queries: int, context: np.ndarray, seed: int = 0,
                 row_of_item: np.ndarray | None = None) -> np.ndarray:
    """``n_queries`` user vectors: sessions of a synthetic shop folded by the worker's rule.

    ``row_of_item[i]`` is the model row of the shop's item ``i`` (-1: not in the model);
    by default item ``i`` is row ``i``.
    """
    from producers.synthetic import SyntheticShop
    from streamrec.core.interest import InterestParams, update_batch

    shop = SyntheticShop(items=n_items, users=n_queries, seed=seed + 1)
    columns = list(shop.event_columns(12 * n_queries, rate=50.0))
    users = np.concatenate([c.users for c in columns])
    items = np.concatenate([c.items for c in columns])
    types = np.concatenate([c.types for c in columns]).astype(np.int64)
    ts = np.concatenate([c.ts for c in columns])
    if row_of_item is not None:
        items = row_of_item[items]
        known = items >= 0
        users, items, types, ts = users[known], items[known], types[known], ts[known]
    vectors = np.zeros((n_queries, context.shape[1]), np.float32)
    last_ts = np.full(n_queries, np.nan)
    update_batch(vectors, last_ts, users.astype(np.int64), items.astype(np.int64), types, ts, context, InterestParams())
    active = np.isfinite(last_ts) & (np.abs(vectors).sum(axis=1) > 0)
    return np.ascontiguousarray(vectors[active])


@dataclass
class Catalog:
    n_items: int
    target: np.ndarray
    queries: np.ndarray
    exact: np.ndarray  # exact top-K rows per query
    vectors: str = "structural"


def make_catalog(n_items: int, n_queries: int, seed: int = 0, model_dir: Path | None = None) -> Catalog:
    """Item vectors and user queries: from a trained model (``model_dir``, its index must be
    exact so the target vectors can be read back) or structural ones for ``n_items``."""
    from producers.synthetic import SyntheticShop

    if model_dir is not None:
        from indexing.artifact import load_artifact

        model = load_artifact(model_dir, use_gpu=False)
        flat = faiss.downcast_index(model.index)
        if not isinstance(flat, faiss.IndexFlat):
            raise ValueError(f"model {model_dir} has a {type(flat).__name__}: its target vectors cannot be read back exactly")
        target = faiss.vector_to_array(flat.codes).view(np.float32).reshape(model.n_items, model.dim).copy()
        shop = SyntheticShop(items=n_items, users=1, seed=seed)
        row_of_item = np.array([model.row_of.get(i, -1) for i in shop.item_ids], dtype=np.int64)
        queries = user_queries(n_items, n_queries, model.context, seed, row_of_item)
        vectors = "trained"
        n_items = model.n_items
    else:
        shop = SyntheticShop(items=n_items, users=1, seed=seed)
        context, target = shop_item_vectors(shop.item_category, shop.item_cluster, shop.item_popularity, 128, seed)
        queries = user_queries(n_items, n_queries, context, seed)
        vectors = "structural"
    exact_index = faiss.IndexFlatIP(target.shape[1])
    exact_index.add(target)
    _, exact = exact_index.search(queries, K)
    return Catalog(n_items, target, queries, exact, vectors)


def measure_qps(index: faiss.Index, queries: np.ndarray, batch_size: int, budget_s: float = 0.5, rounds: int = 5) -> float:
    """Queries per second at ``batch_size`` (one search call per batch): the best of
    ``rounds`` windows of ``budget_s / rounds`` each (best, not mean: on a shared machine
    the slow windows measure the neighbours)."""
    n = len(queries)
    best = 0.0
    position = 0
    for _ in range(rounds):
        done = 0
        start = time.perf_counter()
        while True:
            batch = queries[position : position + batch_size]
            if len(batch) < batch_size:
                position = 0
                batch = queries[:batch_size]
            index.search(batch, K)
            done += len(batch)
            position = (position + batch_size) % max(n, 1)
            elapsed = time.perf_counter() - start
            if elapsed >= budget_s / rounds:
                break
        best = max(best, done / elapsed)
    return best


def run_index_bench(
    sizes: Sequence[int] = DEFAULT_SIZES,
    *,
    factories: Sequence[str] | None = None,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    n_queries: int = 2048,
    seed: int = 0,
    budget_s: float = 0.5,
    trained: dict[int, Path] | None = None,
    log: Callable[[str], None] = logger.info,
) -> list[dict[str, object]]:
    """One row per (catalog size, factory, search effort); see the module docstring.

    ``trained`` maps catalog sizes to model folders whose trained vectors are used instead
    of structural ones."""
    rows: list[dict[str, object]] = []
    for n_items in sizes:
        started = time.perf_counter()
        catalog = make_catalog(n_items, n_queries, seed, (trained or {}).get(n_items))
        log(f"{n_items} items ({catalog.vectors} vectors): {len(catalog.queries)} user queries and exact top-{K} "
            f"in {time.perf_counter() - started:.1f} s")
        auto = choose_factory(n_items)
        for factory in factories or default_factories(n_items):
            began = time.perf_counter()
            index = build_index(catalog.target, factory, seed=seed)
            build_s = time.perf_counter() - began
            bytes_per_item = faiss.serialize_index(index).nbytes / n_items
            log(f"  {factory}: built in {build_s:.1f} s, {bytes_per_item:.0f} bytes/item")
            for effort in efforts_for(factory):
                if effort is not None:
                    set_search_effort(index, effort)
                _, found = index.search(catalog.queries, K)
                recall = recall_at_k(found, catalog.exact)
                qps = {str(b): round(measure_qps(index, catalog.queries, b, budget_s), 1) for b in batch_sizes}
                rows.append({
                    "n_items": n_items,
                    "vectors": catalog.vectors,
                    "factory": factory,
                    "effort": effort,
                    "auto": factory == auto,
                    "build_s": round(build_s, 2),
                    "bytes_per_item": round(bytes_per_item, 1),
                    "recall_at_10": round(recall, 4),
                    "qps": qps,
                })
                log(f"    effort {effort}: recall@10 {recall:.3f}, QPS {qps}")
            del index
    return rows


def summary_rule() -> str:
    """The documented rule (``indexing.index.choose_factory``), for the report."""
    return (f"factory auto: exact Flat up to {EXACT_UP_TO:,} items, else "
            f"IVF<lists>,SQ8 with lists = 4 sqrt(n) rounded to a power of two in [1024, 65536]")


def threads() -> int:
    return int(faiss.omp_get_max_threads())
