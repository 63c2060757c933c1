"""``streamrec bench --index-only``: FAISS index types per catalog, measured recall/QPS curves.

Catalogs (:class:`Catalog`: item vectors, user queries, the exact top 10 by brute force):

- **trained on real logs** (:func:`real_catalog`): the served model (:func:`indexing.train.train_model`)
  trained on a dataset in the shared datasets folder (Amazon Beauty, YooChoose, the Taobao slice,
  Online Retail, read where they lie), queries = that log's users' vectors, each user's events
  folded in time order by the worker's rule (:func:`streamrec.core.interest.update_batch`);
- **grown from real-log vectors** (:func:`grown_catalog`): a larger catalog made from a trained
  one: its real items, then new items each = a random real item's vector plus Gaussian noise of
  half its distance to its 10th nearest real neighbour (so every new item lies in a real item's
  neighbourhood and the catalog keeps the real one's cluster structure); queries = the real
  users' vectors;
- **structural** (:func:`make_catalog`): the bench's synthetic shop, item vectors around
  category and cluster directions (:func:`streamrec.benchmarks.load.shop_item_vectors`, what
  ``streamrec bench`` uses above 50k items), queries = the shop's sessions folded by the
  worker's rule.

Per catalog and factory string: build time, memory per item (the serialised index's size /
items), then the calibration of :func:`indexing.index.calibrate` (the recall@10 curve over
increasing ``nprobe`` / ``efSearch`` until each target recall is reached) and, at the effort
chosen for each target, queries per second at each batch size. Indexes are built by
:func:`indexing.index.build_index`, the function that builds the worker's index.

recall@10 = |approximate top 10 ∩ exact top 10| / 10, averaged over the queries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from indexing.index import (
    EXACT_UP_TO,
    K,
    SQ8_FROM,
    build_index,
    calibrate,
    choose_factory,
    effort_name,
    exact_top,
    ivf_lists,
    recall_at_k,
    set_search_effort,
)
from streamrec.benchmarks.load import shop_item_vectors, shop_user_vectors
from streamrec.core.search import inner_product_search, is_euclidean, use_blas_from

logger = logging.getLogger(__name__)

__all__ = ["K", "Catalog", "efforts_for", "ivf_lists", "make_catalog", "real_catalog", "grown_catalog", "recall_at_k",
           "run_index_bench", "pick_cheapest"]

DEFAULT_SIZES = (12_000, 100_000)
DEFAULT_BATCH_SIZES = (1, 64, 1024)
DEFAULT_TARGETS = (0.95, 0.99)
#: Search efforts of the older fixed sweep (kept for ``efforts_for``).
IVF_PROBES = (4, 8, 16, 32, 64, 128)
HNSW_EF = (16, 32, 64, 128)
#: Real logs: name -> (path under the datasets folder, reader format).
REAL_DATASETS = {
    "amazon-beauty": ("amazon-beauty/Beauty.txt", "amazon-seq"),
    "yoochoose": ("yoochoose-clicks-100k/yoochoose-clicks-100k_train_full.txt", "yoochoose"),
    "taobao": ("taobao-userbehavior-slice/UserBehavior_slice.csv", "taobao"),
    "online-retail": ("online-retail/online-retail.csv.gz", "online-retail"),
}
#: The real catalog larger catalogs are grown from.
GROW_FROM = "amazon-beauty"
#: HNSW is not built above this many items (its construction takes tens of minutes on one core).
HNSW_UP_TO = 200_000


def default_factories(n_items: int) -> list[str]:
    """Flat; HNSW32 up to :data:`HNSW_UP_TO` items; IVF with about sqrt(n) and 4 sqrt(n) lists
    over float vectors (Flat), 8-bit scalar codes (SQ8), and 4-bit fast-scan PQ re-ranked
    exactly (``PQ32x4fs,RFlat``)."""
    few = 1 << int(np.clip(np.round(np.log2(np.sqrt(n_items))), 4, 16))
    many = ivf_lists(n_items)
    factories = ["Flat"] + (["HNSW32"] if n_items <= HNSW_UP_TO else [])
    for lists in sorted({few, many}):
        if lists * 8 <= n_items:
            factories += [f"IVF{lists},Flat", f"IVF{lists},SQ8", f"IVF{lists},PQ32x4fs,RFlat"]
    return factories


def efforts_for(factory: str) -> Sequence[int | None]:
    """The fixed sweep of earlier runs (IVF nprobe below the lists, HNSW efSearch)."""
    if factory.startswith("IVF"):
        lists = int(factory[3:].split(",")[0])
        return [p for p in IVF_PROBES if p < lists] or [lists]
    if factory.startswith("HNSW"):
        return HNSW_EF
    return (None,)


@dataclass
class Catalog:
    n_items: int
    target: np.ndarray
    queries: np.ndarray
    exact: np.ndarray  # exact top-K rows per query
    vectors: str = "structural"


def _with_truth(target: np.ndarray, queries: np.ndarray, vectors: str) -> Catalog:
    return Catalog(len(target), target, queries, exact_top(target, queries, K), vectors)


def user_queries(n_items: int, n_queries: int, context: np.ndarray, seed: int = 0,
                 row_of_item: np.ndarray | None = None) -> np.ndarray:
    """User vectors of ``n_queries`` shoppers of the seeded synthetic shop whose catalog the
    vectors describe (same ``seed``, so its sessions follow the catalog's clusters), after 12
    events each on average (:func:`shop_user_vectors`)."""
    from producers.synthetic import SyntheticShop

    shop = SyntheticShop(items=n_items, users=n_queries, seed=seed)
    return shop_user_vectors(shop, 12 * n_queries, context, row_of_item=row_of_item)


def make_catalog(n_items: int, n_queries: int, seed: int = 0, model_dir: Path | None = None) -> Catalog:
    """Item vectors and user queries: from a trained model (``model_dir``, its index must be
    exact so the target vectors can be read back) or structural ones for ``n_items``."""
    from producers.synthetic import SyntheticShop

    if model_dir is not None:
        from indexing.artifact import load_artifact

        model = load_artifact(model_dir, use_gpu=False)
        target = model.extras.get("target")
        if target is None:
            raise ValueError(f"model {model_dir} has no target.npy: its item vectors cannot be read back exactly")
        shop = SyntheticShop(items=n_items, users=1, seed=seed)
        row_of_item = np.array([model.row_of.get(i, -1) for i in shop.item_ids], dtype=np.int64)
        queries = user_queries(n_items, n_queries, model.context, seed, row_of_item)
        return _with_truth(np.ascontiguousarray(target, np.float32), queries, "trained (synthetic shop)")
    shop = SyntheticShop(items=n_items, users=1, seed=seed)
    context, target = shop_item_vectors(shop.item_category, shop.item_cluster, shop.item_popularity, 128, seed)
    return _with_truth(target, user_queries(n_items, n_queries, context, seed), "structural")


@dataclass
class RealModel:
    """Item vectors trained on a real log, and its users' vectors."""

    name: str
    context: np.ndarray
    target: np.ndarray
    user_vectors: np.ndarray


def real_model(name: str, datasets_dir: Path, cache_dir: Path, *, dim: int = 128, seed: int = 0,
               log: Callable[[str], None] = logger.info) -> RealModel:
    """Train the served model on the real log ``name`` (:data:`REAL_DATASETS`) and fold every
    user's events, in time order, into a user vector with the worker's rule; cached in
    ``cache_dir`` (the log itself is read where it lies, never copied)."""
    from dataclasses import replace

    from indexing.train import TrainParams, interactions_from_arrays, train_model
    from streamrec.core.interest import InterestParams, update_batch
    from streamrec.evaluation.data import load_log

    relative, fmt = REAL_DATASETS[name]
    path = Path(datasets_dir) / relative
    if not path.is_file():
        raise FileNotFoundError(f"dataset {name}: {path} does not exist (set STREAMREC_DATASETS_DIR)")
    key = hashlib.sha256(json.dumps([name, path.stat().st_size, dim, seed, 1]).encode()).hexdigest()[:10]
    cached = Path(cache_dir) / f"real-{name}-{key}.npz"
    if cached.is_file():
        with np.load(cached) as arrays:
            return RealModel(name, arrays["context"], arrays["target"], arrays["users"])
    began = time.perf_counter()
    events = load_log(path, fmt)
    data = interactions_from_arrays(np.asarray(events.user_ids)[events.users], np.asarray(events.item_ids)[events.items],
                                    events.types, events.ts)
    params = replace(TrainParams(), dim=dim, seed=seed)
    trained = train_model(data, params)
    row_of = {item: row for row, item in enumerate(trained.item_ids)}
    rows = np.array([row_of.get(item, -1) for item in events.item_ids], dtype=np.int64)[events.items]
    known = rows >= 0
    vectors = np.zeros((events.n_users, dim), np.float32)
    last_ts = np.full(events.n_users, np.nan)
    update_batch(vectors, last_ts, events.users[known], rows[known], events.types[known].astype(np.int64),
                 events.ts[known], trained.context, InterestParams())
    active = np.isfinite(last_ts) & (np.abs(vectors).sum(axis=1) > 0)
    users = np.ascontiguousarray(vectors[active])
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    np.savez(cached, context=trained.context, target=trained.target, users=users)
    log(f"{name}: trained {len(trained.item_ids):,} items x d={dim} on {len(events):,} events, "
        f"{len(users):,} user vectors, in {time.perf_counter() - began:.0f} s")
    return RealModel(name, trained.context, trained.target, users)


def _sample(vectors: np.ndarray, n: int, seed: int) -> np.ndarray:
    if len(vectors) <= n:
        return vectors
    return np.ascontiguousarray(vectors[np.sort(np.random.default_rng(seed).choice(len(vectors), n, replace=False))])


def real_catalog(model: RealModel, n_queries: int, seed: int = 0) -> Catalog:
    """The real model's items, queried by (a sample of) its real users' vectors."""
    return _with_truth(np.ascontiguousarray(model.target), _sample(model.user_vectors, n_queries, seed),
                       f"trained: {model.name}")


def grow_vectors(target: np.ndarray, n_items: int, *, seed: int = 0, spread: float = 0.5) -> np.ndarray:
    """``n_items`` vectors: ``target``'s rows, then new rows each = a random row plus Gaussian
    noise whose expected length is ``spread`` times that row's distance to its 10th nearest
    neighbour in ``target`` (see the module docstring).

    >>> grown = grow_vectors(np.eye(20, dtype=np.float32), 50)
    >>> grown.shape, bool((grown[:20] == np.eye(20)).all())
    ((50, 20), True)
    """
    real = np.ascontiguousarray(target, np.float32)
    if n_items <= len(real):
        return real[:n_items].copy()
    l2 = faiss.IndexFlatL2(real.shape[1])
    l2.add(real)
    distances, _ = l2.search(real, min(11, len(real)))
    radius = np.sqrt(np.maximum(distances[:, -1], 0)).astype(np.float32)
    rng = np.random.default_rng(seed)
    grown = np.empty((n_items, real.shape[1]), np.float32)
    grown[: len(real)] = real
    chunk = 100_000
    for start in range(len(real), n_items, chunk):
        stop = min(start + chunk, n_items)
        parents = rng.integers(0, len(real), stop - start)
        noise = rng.standard_normal((stop - start, real.shape[1]), dtype=np.float32)
        grown[start:stop] = real[parents] + noise * (spread * radius[parents] / np.sqrt(real.shape[1]))[:, None]
    return grown


def grown_catalog(model: RealModel, n_items: int, n_queries: int, seed: int = 0) -> Catalog:
    """A catalog of ``n_items`` grown from the real model's items, queried by its real users."""
    return _with_truth(grow_vectors(model.target, n_items, seed=seed), _sample(model.user_vectors, n_queries, seed),
                       f"grown from {model.name}")


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
            inner_product_search(index, batch, K)
            done += len(batch)
            position = (position + batch_size) % max(n, 1)
            elapsed = time.perf_counter() - start
            if elapsed >= budget_s / rounds:
                break
        best = max(best, done / elapsed)
    return best


def measure_factory(catalog: Catalog, factory: str, *, targets: Sequence[float] = DEFAULT_TARGETS, euclidean: bool = True,
                    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, seed: int = 0, budget_s: float = 0.5,
                    log: Callable[[str], None] = logger.info) -> list[dict[str, object]]:
    """One row per target recall (one row for an exact index): the calibrated effort, its
    recall@10, the curve that led there, and QPS at each batch size."""
    use_blas_from(16, catalog.target.shape[1])  # as streamrec.core.search does for the worker
    began = time.perf_counter()
    index = build_index(catalog.target, factory, seed=seed, euclidean=euclidean)
    build_s = time.perf_counter() - began
    bytes_per_item = faiss.serialize_index(index).nbytes / catalog.n_items
    log(f"  {factory}: built in {build_s:.1f} s, {bytes_per_item:.0f} bytes/item")
    rows = []
    exact = effort_name(index) is None
    for target in (targets[:1] if exact else targets):
        calibration = calibrate(index, catalog.target, catalog.queries, target, factory=factory, source=catalog.vectors)
        if calibration.effort is not None:
            set_search_effort(index, calibration.effort)
        recall = recall_at_k(inner_product_search(index, catalog.queries, K)[1], catalog.exact)
        qps = {str(b): round(measure_qps(index, catalog.queries, b, budget_s), 1) for b in batch_sizes}
        rows.append({
            "n_items": catalog.n_items, "vectors": catalog.vectors, "n_queries": len(catalog.queries),
            "factory": factory, "euclidean": is_euclidean(index), "auto": factory == choose_factory(catalog.n_items), "target_recall": None if exact else target,
            "effort_name": calibration.effort_name, "effort": calibration.effort, "reached": bool(recall >= target),
            "recall_at_10": round(recall, 4), "curve": [list(p) for p in calibration.curve],
            "build_s": round(build_s, 2), "bytes_per_item": round(bytes_per_item, 1), "qps": qps,
        })
        log(f"    target {target}: {calibration.effort_name or 'exact'} {calibration.effort or '-'}, "
            f"recall@10 {recall:.3f}, QPS {qps}")
        if exact:
            break
    del index
    return rows


def pick_cheapest(rows: Sequence[dict[str, object]], target: float, batch_size: int = 1024) -> dict[str, object] | None:
    """Of the rows of one catalog that reach ``target`` (exact rows always do), the one with
    the most queries per second at ``batch_size``.

    >>> rows = [{"factory": "Flat", "effort": None, "recall_at_10": 1.0, "target_recall": None, "qps": {"1024": 10.0}},
    ...         {"factory": "IVF8,Flat", "effort": 2, "recall_at_10": 0.96, "target_recall": 0.95, "qps": {"1024": 30.0}},
    ...         {"factory": "IVF8,SQ8", "effort": 1, "recall_at_10": 0.90, "target_recall": 0.95, "qps": {"1024": 90.0}}]
    >>> pick_cheapest(rows, 0.95)["factory"], pick_cheapest(rows, 0.99)["factory"]
    ('IVF8,Flat', 'Flat')
    """
    good = [r for r in rows if float(r["recall_at_10"]) >= target  # type: ignore[arg-type]
            and r["target_recall"] in (None, target)]
    return max(good, key=lambda r: float(r["qps"][str(batch_size)]), default=None)  # type: ignore[index]


def run_index_bench(
    sizes: Sequence[int] = DEFAULT_SIZES,
    *,
    factories: Sequence[str] | None = None,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    targets: Sequence[float] = DEFAULT_TARGETS,
    n_queries: int = 2048,
    seed: int = 0,
    budget_s: float = 0.5,
    trained: dict[int, Path] | None = None,
    datasets: Sequence[str] = (),
    datasets_dir: Path | None = None,
    grow: bool = False,
    structural: bool = True,
    cache_dir: Path | None = None,
    euclidean: bool = True,
    log: Callable[[str], None] = logger.info,
) -> dict[str, object]:
    """Measure every catalog asked for; returns ``{"rows": [...], "picks": [...]}``: one row per
    (catalog, factory, target recall), and per catalog the cheapest factory reaching each target.

    ``datasets``: real logs (:data:`REAL_DATASETS`) whose trained catalogs are measured at their
    own size; ``grow``: also catalogs of each of ``sizes`` grown from :data:`GROW_FROM`;
    ``structural``: the bench's structural catalogs of each of ``sizes`` (a size listed in
    ``trained`` uses that bench model's trained vectors instead); ``euclidean``: approximate
    indexes on the Euclidean reduction, as served (False: on the raw vectors, to compare)."""
    plans: list[Callable[[], Catalog]] = []
    cache = Path(cache_dir) if cache_dir is not None else Path(".")
    models: dict[str, RealModel] = {}

    def model(name: str) -> RealModel:
        if name not in models:
            models[name] = real_model(name, Path(datasets_dir or "."), cache, seed=seed, log=log)
        return models[name]

    for name in datasets:
        plans.append(lambda name=name: real_catalog(model(name), n_queries, seed))
    for n_items in sizes:
        if grow and n_items > len(model(GROW_FROM).target):
            plans.append(lambda n_items=n_items: grown_catalog(model(GROW_FROM), n_items, n_queries, seed))
        if structural:
            plans.append(lambda n_items=n_items: make_catalog(n_items, n_queries, seed, (trained or {}).get(n_items)))
    rows: list[dict[str, object]] = []
    picks: list[dict[str, object]] = []
    for plan in plans:
        started = time.perf_counter()
        catalog = plan()
        log(f"{catalog.n_items:,} items ({catalog.vectors}): {len(catalog.queries)} user queries and exact top-{K} "
            f"in {time.perf_counter() - started:.1f} s")
        catalog_rows = []
        for factory in factories or default_factories(catalog.n_items):
            catalog_rows += measure_factory(catalog, factory, targets=targets, batch_sizes=batch_sizes, seed=seed,
                                            budget_s=budget_s, euclidean=euclidean, log=log)
        rows += catalog_rows
        for target in targets:
            best = pick_cheapest(catalog_rows, target, max(batch_sizes))
            if best is not None:
                picks.append({"n_items": catalog.n_items, "vectors": catalog.vectors, "target_recall": target,
                              "factory": best["factory"], "effort": best["effort"], "recall_at_10": best["recall_at_10"],
                              "qps": best["qps"]})
                log(f"  cheapest at recall >= {target}: {best['factory']} ({best['effort_name'] or 'exact'} "
                    f"{best['effort'] or '-'}), QPS {best['qps']}")
        del catalog
    return {"rows": rows, "picks": picks}


def summary_rule() -> str:
    """The documented rule (``indexing.index.choose_factory``), for the report."""
    return (f"factory auto: exact Flat up to {EXACT_UP_TO:,} items, else IVF<lists>,Flat with lists = sqrt(n) rounded "
            "to a power of two in [256, 65536], on the Euclidean reduction of the item vectors"
            + (f" (IVF<lists>,SQ8 from {SQ8_FROM:,} items, IVF,Flat where SQ8 cannot reach the target)"
               if SQ8_FROM < 10**9 else "") + "; nprobe calibrated per index to index.target_recall")


def threads() -> int:
    return int(faiss.omp_get_max_threads())
