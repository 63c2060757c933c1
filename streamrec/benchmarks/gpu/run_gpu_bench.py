#!/usr/bin/env python3
"""FAISS search on a GPU: QPS and recall@10 for a 1M-item catalog (self-contained).

Needs only ``numpy`` and a FAISS build with GPU support (``faiss-gpu``: ``faiss.get_num_gpus()``
must be > 0); it does not import streamrec. It builds the same kind of catalog as
``streamrec bench --index-only`` (item vectors around category and cluster directions, norms
growing with a Zipf popularity; user queries as decayed sums of items of one or two
clusters), computes the exact top 10 on the GPU, then for each index type moves the CPU
index to the GPU with ``faiss.index_cpu_to_gpu`` (as ``indexing.index.maybe_to_gpu`` does in
the worker) and reports search QPS per batch size and recall@10 against exact search.

    python run_gpu_bench.py                       # 1M items, d=128, JSON lines + a table
    python run_gpu_bench.py --items 200000 --json out.json

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
    parser.add_argument("--batch-sizes", default="1,64,1024,8192")
    parser.add_argument("--factories", default="Flat;IVF4096,Flat;IVF4096,SQ8;IVF4096,PQ32",
                        help="';'-separated FAISS factory strings")
    parser.add_argument("--nprobe", default="16,32,64,128", help="IVF nprobe values to sweep")
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
    resources = faiss.StandardGpuResources() if on_gpu else None
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    started = time.perf_counter()
    target, context, item_cluster = catalog(args.items, args.dim, args.seed)
    queries = user_queries(context, item_cluster, args.queries, args.seed)
    exact_cpu = faiss.IndexFlatIP(args.dim)
    exact_cpu.add(target)
    exact_index = faiss.index_cpu_to_gpu(resources, args.gpu, exact_cpu) if on_gpu else exact_cpu
    _, exact = exact_index.search(queries, K)
    print(f"# {args.items} items, d={args.dim}, {len(queries)} queries, device {device}, "
          f"ground truth in {time.perf_counter() - started:.1f} s", file=sys.stderr)

    rows = []
    for factory in args.factories.split(";"):
        began = time.perf_counter()
        cpu_index = faiss.index_factory(args.dim, factory, faiss.METRIC_INNER_PRODUCT)
        if not cpu_index.is_trained:
            ivf = faiss.extract_index_ivf(cpu_index)
            n_train = min(args.items, max(256 * 64, 50 * ivf.nlist))
            sample = target[np.random.default_rng(args.seed).choice(args.items, n_train, replace=False)]
            # Train on the GPU too where FAISS can (the coarse quantiser's k-means).
            if on_gpu:
                ivf.clustering_index = faiss.index_cpu_to_gpu(resources, args.gpu, faiss.IndexFlatIP(args.dim))
            cpu_index.train(sample)
        cpu_index.add(target)
        bytes_per_item = faiss.serialize_index(cpu_index).nbytes / args.items
        index = faiss.index_cpu_to_gpu(resources, args.gpu, cpu_index) if on_gpu else cpu_index
        build_s = time.perf_counter() - began
        efforts = [int(p) for p in args.nprobe.split(",")] if factory.startswith("IVF") else [None]
        for nprobe in efforts:
            if nprobe is not None:
                if on_gpu:
                    faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", nprobe)
                else:
                    faiss.extract_index_ivf(index).nprobe = nprobe
            _, found = index.search(queries, K)
            row = {
                "device": device,
                "n_items": args.items,
                "factory": factory,
                "nprobe": nprobe,
                "build_s": round(build_s, 2),
                "bytes_per_item": round(bytes_per_item, 1),
                "recall_at_10": round(recall_at_k(found, exact), 4),
                "qps": {str(b): round(qps(index, queries, b, args.budget_s), 1) for b in batch_sizes},
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": device, "faiss": faiss.__version__, "rows": rows}, handle, indent=2)
    print(f"\n{'factory':<18}{'nprobe':>7}{'recall@10':>11}{'bytes/item':>12}" + "".join(f"{'QPS b=' + str(b):>16}" for b in batch_sizes))
    for row in rows:
        print(f"{row['factory']:<18}{row['nprobe'] or '-':>7}{row['recall_at_10']:>11.3f}{row['bytes_per_item']:>12.0f}"
              + "".join(f"{row['qps'][str(b)]:>16,.0f}" for b in batch_sizes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
