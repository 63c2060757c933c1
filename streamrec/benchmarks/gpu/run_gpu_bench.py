#!/usr/bin/env python3
"""FAISS search on a GPU: QPS and recall@10 for a 1M-item catalog, and the worker's core rate.

The index mode needs only ``numpy`` and a FAISS build with GPU support (``faiss-gpu``:
``faiss.get_num_gpus()`` must be > 0); it does not import streamrec. Its catalog is either
structural (item vectors around category and cluster directions, norms growing with a Zipf
popularity; user queries as decayed sums of items of one or two clusters, like
``streamrec bench``'s above 50k items), or, with ``--grow-from real.npz``, grown from item
vectors trained on a real log (the ``real-*.npz`` that ``streamrec bench --index-only`` caches:
``target`` and ``users`` arrays; each new item = a real item plus noise of half its distance to
its 10th nearest real neighbour, as ``streamrec.benchmarks.index_bench.grow_vectors``), queried
by that log's real users' vectors. It computes the exact top 10 on the GPU, then for each index
type moves the CPU index to the GPU with ``faiss.index_cpu_to_gpu`` (as
``indexing.index.maybe_to_gpu`` does in the worker), finds the smallest ``nprobe`` reaching each
``--targets`` recall@10 (as ``indexing.index.calibrate`` does), and reports QPS per batch size.

``--core`` instead measures the worker's pure core end to end without Kafka: the bench's
workload of ``--items`` (``streamrec.benchmarks.load.prepare_workload``: the model, calibrated,
and encoded events), the model loaded by ``indexing.artifact.load_artifact`` (which moves the
index to the GPU), and ``streamrec.core.batch.process_batch`` over micro-batches: events/s.
That mode imports streamrec from this repository (see README.md for what it needs).

    python run_gpu_bench.py                       # 1M items, d=128, JSON lines + a table
    python run_gpu_bench.py --items 200000 --json out.json
    python run_gpu_bench.py --core --items 1000000 --events 200000 --json core.json

Refuses to run without a GPU, so no CPU number can pass for a GPU one; ``--allow-cpu`` runs
the same code on the CPU (small ``--items``) only to check the script itself, and labels its
numbers "cpu".
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

K = 10


def catalog(n_items: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(target item vectors, context item vectors, cluster of each item) with category/cluster structure."""
    rng = np.random.default_rng(seed)
    n_categories, cluster_size = 20, 25
    n_clusters = max(n_categories, n_items // cluster_size)
    cluster_category = rng.integers(0, n_categories, n_clusters)
    item_cluster = rng.permutation(np.r_[np.arange(n_clusters), rng.integers(0, n_clusters, n_items - n_clusters)])
    popularity = (rng.permutation(n_items) + 1.0) ** -0.8
    categories = rng.standard_normal((n_categories, dim), dtype=np.float32)
    clusters = categories[cluster_category] + 0.8 * rng.standard_normal((n_clusters, dim), dtype=np.float32)
    target = clusters[item_cluster] + 0.6 * rng.standard_normal((n_items, dim), dtype=np.float32)
    target /= np.linalg.norm(target, axis=1, keepdims=True)
    target *= ((popularity / popularity.max()) ** 0.15).astype(np.float32)[:, None]
    context = target + 0.1 * rng.standard_normal(target.shape, dtype=np.float32)
    return np.ascontiguousarray(target), np.ascontiguousarray(context), item_cluster


def user_queries(context: np.ndarray, item_cluster: np.ndarray, n_queries: int, seed: int) -> np.ndarray:
    """Decayed sums (newest weight 1, each older one halved) of 1-12 items from 1-2 clusters."""
    rng = np.random.default_rng(seed + 1)
    order = np.argsort(item_cluster, kind="stable")
    starts = np.searchsorted(item_cluster[order], np.arange(item_cluster.max() + 1))
    ends = np.r_[starts[1:], len(order)]
    queries = np.zeros((n_queries, context.shape[1]), np.float32)
    for q in range(n_queries):
        clusters = rng.integers(0, len(starts), 2)
        length = int(rng.integers(1, 13))
        for _ in range(length):
            c = clusters[int(rng.random() < 0.3)]
            item = order[rng.integers(starts[c], max(ends[c], starts[c] + 1))]
            queries[q] = 0.5 * queries[q] + context[item]
    return queries


def grow(real: np.ndarray, n_items: int, seed: int, spread: float = 0.5) -> np.ndarray:
    """``real``'s rows, then new rows each = a random real row plus Gaussian noise of expected
    length ``spread`` x that row's distance to its 10th nearest real neighbour."""
    import faiss

    real = np.ascontiguousarray(real, np.float32)
    l2 = faiss.IndexFlatL2(real.shape[1])
    l2.add(real)
    distances, _ = l2.search(real, min(11, len(real)))
    radius = np.sqrt(np.maximum(distances[:, -1], 0)).astype(np.float32)
    rng = np.random.default_rng(seed)
    grown = np.empty((max(n_items, len(real)), real.shape[1]), np.float32)
    grown[: len(real)] = real
    for start in range(len(real), n_items, 100_000):
        stop = min(start + 100_000, n_items)
        parents = rng.integers(0, len(real), stop - start)
        noise = rng.standard_normal((stop - start, real.shape[1]), dtype=np.float32)
        grown[start:stop] = real[parents] + noise * (spread * radius[parents] / np.sqrt(real.shape[1]))[:, None]
    return grown[:n_items]


def euclidean(target: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Euclidean reduction of inner-product search (as ``streamrec.core.search.euclidean_items``):
    each item gets sqrt(M² - |x|²) so that all norms are M, each query a 0; the nearest items
    are then the items of largest inner product."""
    norms2 = np.einsum("ij,ij->i", target, target, dtype=np.float64)
    items = np.zeros((len(target), target.shape[1] + 1), np.float32)
    items[:, :-1] = target
    items[:, -1] = np.sqrt(np.maximum(norms2.max() - norms2, 0.0))
    padded = np.zeros((len(queries), target.shape[1] + 1), np.float32)
    padded[:, :-1] = queries
    return items, padded


def effort_steps(n_lists: int, top: int = 2048) -> list[int]:
    """nprobe values tried in order: 1, 2, 3, 4, 6, 8, 12, ... up to the lists (at most ``top``,
    the GPU's limit)."""
    top = min(n_lists, top)
    return sorted({s for p in range(17) for s in (1 << p, 3 << max(p - 1, 0)) if s <= top} | {top})


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    hits = sum(len(set(a[a >= 0].tolist()) & set(b.tolist())) for a, b in zip(found[:, :K], exact[:, :K]))
    return hits / (K * len(exact))


def qps(index, queries: np.ndarray, batch: int, budget_s: float) -> float:  # noqa: ANN001
    index.search(queries[:batch], K)  # warm-up (kernels, memory pools)
    done, position, start = 0, 0, time.perf_counter()
    while True:
        chunk = queries[position : position + batch]
        if len(chunk) < batch:
            position, chunk = 0, queries[:batch]
        index.search(chunk, K)
        done += len(chunk)
        position += batch
        elapsed = time.perf_counter() - start
        if elapsed >= budget_s:
            return done / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--batch-sizes", default="1,16,64,256,1024,4096")
    parser.add_argument("--factories", default="Flat;IVF1024,Flat;IVF4096,Flat;IVF4096,SQ8;IVF16384,Flat",
                        help="';'-separated FAISS factory strings (GPU: Flat, IVF<n>,Flat / SQ8 / PQ<m>)")
    parser.add_argument("--targets", default="0.95,0.99", help="recall@10 targets: per IVF index, the smallest "
                        "nprobe reaching each is measured")
    parser.add_argument("--nprobe", help="IVF nprobe values to measure instead of calibrating to --targets")
    parser.add_argument("--grow-from", help="an .npz with 'target' item vectors and 'users' vectors trained on a real "
                        "log (streamrec bench --index-only caches them as real-<name>-*.npz): grow --items from it")
    parser.add_argument("--core", action="store_true", help="measure streamrec.core.batch.process_batch with the "
                        "model's index on the GPU (events/s, no Kafka) instead of the index alone")
    parser.add_argument("--users", type=int, default=100_000, help="--core: shoppers in the bench's shop")
    parser.add_argument("--events", type=int, default=200_000, help="--core: events driven through the core")
    parser.add_argument("--batch", type=int, default=20_000, help="--core: events per micro-batch (the worker's default)")
    parser.add_argument("--factory", default="auto", help="--core: the model's FAISS factory (auto: the project's rule)")
    parser.add_argument("--raw-ip", action="store_true", help="build IVF indexes on the raw vectors with inner "
                        "product, not on the Euclidean reduction the worker uses (streamrec.core.search.euclidean_items)")
    parser.add_argument("--budget-s", type=float, default=1.0, help="seconds of searching per measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gpu", type=int, default=0, help="GPU number")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU to test the script (labelled cpu)")
    args = parser.parse_args()

    import faiss

    n_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    on_gpu = n_gpus > 0
    if not on_gpu and not args.allow_cpu:
        print("no GPU visible to FAISS (faiss.get_num_gpus() == 0): install faiss-gpu on a machine with "
              "an NVIDIA GPU, or pass --allow-cpu to test the script on the CPU", file=sys.stderr)
        return 2
    device = f"gpu{args.gpu}" if on_gpu else "cpu"
    if args.core:
        return core_rate(args, device)
    resources = faiss.StandardGpuResources() if on_gpu else None
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    targets = [float(t) for t in args.targets.split(",")]

    started = time.perf_counter()
    if args.grow_from:
        with np.load(args.grow_from) as real:
            target = grow(real["target"], args.items, args.seed)
            users = real["users"]
        queries = np.ascontiguousarray(users[np.random.default_rng(args.seed).permutation(len(users))[: args.queries]])
        args.dim = target.shape[1]
        vectors = f"grown from {args.grow_from}"
    else:
        target, context, item_cluster = catalog(args.items, args.dim, args.seed)
        queries = user_queries(context, item_cluster, args.queries, args.seed)
        vectors = "structural"
    exact_cpu = faiss.IndexFlatIP(args.dim)
    exact_cpu.add(target)
    exact_index = faiss.index_cpu_to_gpu(resources, args.gpu, exact_cpu) if on_gpu else exact_cpu
    _, exact = exact_index.search(queries, K)
    print(f"# {args.items} items, d={args.dim}, {len(queries)} queries, device {device}, "
          f"ground truth in {time.perf_counter() - started:.1f} s", file=sys.stderr)

    rows = []
    euclidean_target, euclidean_queries = euclidean(target, queries)
    for factory in args.factories.split(";"):
        began = time.perf_counter()
        # IVF partitions items by distance: like the worker (indexing.index.build_index), build it on
        # the Euclidean reduction (items padded to equal norms, queries with a 0), unless --raw-ip.
        reduced = factory != "Flat" and not args.raw_ip
        items, searched = (euclidean_target, euclidean_queries) if reduced else (target, queries)
        metric = faiss.METRIC_L2 if reduced else faiss.METRIC_INNER_PRODUCT
        cpu_index = faiss.index_factory(items.shape[1], factory, metric)
        if not cpu_index.is_trained:
            ivf = faiss.extract_index_ivf(cpu_index)
            n_train = min(args.items, max(256 * 64, 50 * ivf.nlist))
            sample = items[np.random.default_rng(args.seed).choice(args.items, n_train, replace=False)]
            # Train on the GPU too where FAISS can (the coarse quantiser's k-means).
            if on_gpu:
                flat = faiss.IndexFlatL2(items.shape[1]) if reduced else faiss.IndexFlatIP(items.shape[1])
                ivf.clustering_index = faiss.index_cpu_to_gpu(resources, args.gpu, flat)
            cpu_index.train(sample)
        cpu_index.add(items)
        bytes_per_item = faiss.serialize_index(cpu_index).nbytes / args.items
        index = faiss.index_cpu_to_gpu(resources, args.gpu, cpu_index) if on_gpu else cpu_index
        build_s = time.perf_counter() - began
        ivf = faiss.try_extract_index_ivf(cpu_index)

        def set_nprobe(nprobe: int) -> None:
            if on_gpu:
                faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", nprobe)
            else:
                faiss.extract_index_ivf(index).nprobe = nprobe

        def recall_now() -> float:
            return recall_at_k(index.search(searched[:2000], K)[1], exact[:2000])

        if ivf is None:
            chosen = [(None, None)]
        elif args.nprobe:
            chosen = [(None, int(p)) for p in args.nprobe.split(",")]
        else:  # the smallest nprobe reaching each target, as indexing.index.calibrate
            chosen, curve = [], []
            pending = sorted(targets)
            for nprobe in effort_steps(int(ivf.nlist)):
                set_nprobe(nprobe)
                curve.append((nprobe, round(recall_now(), 4)))
                while pending and curve[-1][1] >= pending[0]:
                    chosen.append((pending.pop(0), nprobe))
                if not pending:
                    break
            chosen += [(target, max(curve, key=lambda point: point[1])[0]) for target in pending]
            print(f"# {factory}: recall curve {curve}", file=sys.stderr)
        for goal, nprobe in chosen:
            if nprobe is not None:
                set_nprobe(nprobe)
            _, found = index.search(searched, K)
            row = {
                "device": device,
                "vectors": vectors,
                "n_items": args.items,
                "factory": factory,
                "euclidean": reduced,
                "target_recall": goal,
                "nprobe": nprobe,
                "build_s": round(build_s, 2),
                "bytes_per_item": round(bytes_per_item, 1),
                "recall_at_10": round(recall_at_k(found, exact), 4),
                "qps": {str(b): round(qps(index, searched, b, args.budget_s), 1) for b in batch_sizes},
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        index = cpu_index = None  # frees the index (GPU memory) before the next factory
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": device, "faiss": faiss.__version__, "rows": rows}, handle, indent=2)
    print(f"\n{'factory':<18}{'target':>7}{'nprobe':>7}{'recall@10':>11}{'bytes/item':>12}" + "".join(f"{'QPS b=' + str(b):>16}" for b in batch_sizes))
    for row in rows:
        print(f"{row['factory']:<18}{row['target_recall'] or '-':>7}{row['nprobe'] or '-':>7}{row['recall_at_10']:>11.3f}{row['bytes_per_item']:>12.0f}"
              + "".join(f"{row['qps'][str(b)]:>16,.0f}" for b in batch_sizes))
    return 0


def core_rate(args: argparse.Namespace, device: str) -> int:
    """``--core``: events/s of ``process_batch`` over the bench's workload, index on ``device``."""
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # this repository's streamrec
    from indexing.artifact import load_artifact
    from streamrec.benchmarks.load import index_recall, prepare_workload
    from streamrec.core.batch import Message, process_batch
    from streamrec.core.interest import InterestParams

    cache = Path(tempfile.mkdtemp(prefix="streamrec-gpu-core-"))
    began = time.perf_counter()
    workload = prepare_workload(args.items, args.users, args.events, seed=args.seed, factory=args.factory,
                                cache_dir=cache, dim=args.dim, log=lambda text: print("#", text, file=sys.stderr))
    model = load_artifact(workload.model_dir, use_gpu=device != "cpu")
    index = index_recall(workload.model_dir, args.items, args.users, args.seed, 20_000.0)
    print(f"# workload and model in {time.perf_counter() - began:.0f} s; index {type(model.index).__name__}: {index}",
          file=sys.stderr)
    messages = [Message(k, v, 0, i) for i, (k, v) in enumerate(zip(workload.keys, workload.values, strict=True))]
    params = InterestParams()
    store: dict[str, object] = {}
    timed_events, timed_s, batches = 0, 0.0, []
    for number, start in enumerate(range(0, len(messages), args.batch)):
        batch = messages[start : start + args.batch]
        tick = time.perf_counter()
        result = process_batch(batch, lambda user, _: store.get(user), model, params)
        elapsed = time.perf_counter() - tick
        store.update({user: state for user, (state, _) in result.states.items()})
        batches.append(round(len(batch) / elapsed, 1))
        if number:  # the first batch warms the GPU and the caches up
            timed_events += len(batch)
            timed_s += elapsed
    row = {"device": device, "mode": "core", "n_items": args.items, "users": args.users, "events": len(messages),
           "batch": args.batch, "factory": model.meta.get("factory"), "index": index,
           "events_per_s": round(timed_events / timed_s, 1) if timed_s else None, "per_batch_events_per_s": batches}
    print(json.dumps(row), flush=True)
    if args.json:
        import faiss

        with open(args.json, "w") as handle:
            json.dump({"device": device, "faiss": faiss.__version__, "rows": [row]}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
