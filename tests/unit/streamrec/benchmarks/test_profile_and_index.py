"""The profile summary and the index benchmark's pure parts."""

from __future__ import annotations

import numpy as np
import pytest

from indexing.index import choose_factory
from streamrec.benchmarks.index_bench import efforts_for, ivf_lists, make_catalog, recall_at_k
from streamrec.benchmarks.load import shop_item_vectors
from streamrec.benchmarks.profile import classify, summarise


def test_recall_counts_the_intersection_of_top_k():
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert recall_at_k(exact, exact, k=4) == 1.0
    assert recall_at_k(np.array([[4, 3, 9, -1], [5, 0, 0, 0]]), exact, k=4) == pytest.approx((2 + 1) / 8)


def test_ivf_lists_follow_the_auto_rule():
    assert choose_factory(1_000_000) == f"IVF{ivf_lists(1_000_000)},SQ8"
    assert ivf_lists(100) == 1024 and ivf_lists(10**12) == 65536


def test_efforts_are_swept_only_for_approximate_indexes():
    assert list(efforts_for("Flat")) == [None]
    assert len(efforts_for("IVF1024,SQ8")) > 1 and len(efforts_for("HNSW32")) > 1


def test_structural_vectors_are_finite_and_clustered():
    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(40), 25)
    categories = clusters % 4
    context, target = shop_item_vectors(categories, clusters, rng.random(1000) + 0.01, dim=16)
    assert context.shape == target.shape == (1000, 16) and context.dtype == np.float32
    assert np.isfinite(context).all()
    unit = target / np.linalg.norm(target, axis=1, keepdims=True)
    same = (unit[:25] @ unit[:25].T).mean()
    other = (unit[:25] @ unit[500:525].T).mean()
    assert same > other + 0.2


def test_the_exact_ground_truth_is_exact():
    catalog = make_catalog(2000, 64)
    scores = catalog.queries @ catalog.target.T
    best = np.argsort(-scores, axis=1)[:, :10]
    assert recall_at_k(catalog.exact, best) > 0.99


def test_profile_stacks_are_classified_by_the_outermost_known_call(tmp_path):
    agent = "recommend (streams/agents.py:90)"
    table_get = "Table.get (faust/tables/base.py:10)"
    raw = "\n".join([
        f"process 1:\"python\";thread (0x1);{agent};process_batch (streamrec/core/batch.py:5);search (indexing/index.py:120) 30",
        f"thread (0x1);{agent};process_batch (streamrec/core/batch.py:5);load (streams/agents.py:70);get (faust/tables/base.py:10);"
        "get (rocksdict/x.py:1) 20",
        f"thread (0x1);{agent};__setitem__ (faust/tables/table.py:9);send_changelog (faust/tables/base.py:3);"
        "send (faust/topics.py:1) 10",
        "thread (0x1);EpollSelector.select (selectors.py:468) 40",
    ])
    path = tmp_path / "p.txt"
    path.write_text(raw)
    summary = summarise(path)
    assert summary["samples"] == 100
    shares = summary["shares"]
    assert shares["FAISS search"] == 0.3
    assert shares["table read (Faust + RocksDB)"] == 0.2
    assert shares["table write (Faust + RocksDB + changelog)"] == 0.1
    assert shares["idle (waiting for the network)"] == 0.4
    assert classify([table_get]) == "table read (Faust + RocksDB)"
    assert classify(["frobnicate (mystery.py:1)"]) == "other"
