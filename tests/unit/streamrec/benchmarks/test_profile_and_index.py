"""The profile summary and the index benchmark's pure parts."""

from __future__ import annotations

import numpy as np
import pytest

from indexing.index import choose_factory
from streamrec.benchmarks.index_bench import efforts_for, grow_vectors, ivf_lists, make_catalog, pick_cheapest, recall_at_k
from streamrec.benchmarks.load import shop_item_vectors
from streamrec.benchmarks.profile import classify, summarise


def test_recall_counts_the_intersection_of_top_k():
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert recall_at_k(exact, exact, k=4) == 1.0
    assert recall_at_k(np.array([[4, 3, 9, -1], [5, 0, 0, 0]]), exact, k=4) == pytest.approx((2 + 1) / 8)


def test_ivf_lists_follow_the_auto_rule():
    assert choose_factory(1_000_000) == "IVF1024,Flat" and choose_factory(100_000) == "IVF256,Flat"  # about sqrt(n) lists
    assert ivf_lists(100) == 256 and ivf_lists(10**12) == 65536


def test_grown_catalogs_keep_the_real_items_and_their_neighbourhoods():
    rng = np.random.default_rng(0)
    real = (np.repeat(rng.standard_normal((20, 8)), 30, axis=0) + 0.05 * rng.standard_normal((600, 8))).astype(np.float32)
    grown = grow_vectors(real, 3000, seed=1)
    np.testing.assert_array_equal(grown[:600], real)
    # every new item lies nearer its closest real item than the real clusters lie to each other
    nearest = np.sqrt(((grown[600:, None, :] - real[None, :, :]) ** 2).sum(axis=2)).min(axis=1)
    centres = real.reshape(20, 30, 8).mean(axis=1)
    gaps = np.sqrt(((centres[:, None] - centres[None]) ** 2).sum(axis=2))
    assert nearest.max() < gaps[gaps > 0].min() / 2


def test_the_cheapest_index_reaching_the_target_is_picked():
    rows = [{"factory": "Flat", "effort": None, "recall_at_10": 1.0, "target_recall": None, "qps": {"1024": 5.0}},
            {"factory": "A", "effort": 8, "recall_at_10": 0.951, "target_recall": 0.95, "qps": {"1024": 20.0}},
            {"factory": "B", "effort": 4, "recall_at_10": 0.94, "target_recall": 0.95, "qps": {"1024": 50.0}},
            {"factory": "A", "effort": 32, "recall_at_10": 0.992, "target_recall": 0.99, "qps": {"1024": 7.0}}]
    assert pick_cheapest(rows, 0.95)["factory"] == "A"
    assert pick_cheapest(rows, 0.99)["effort"] == 32
    assert pick_cheapest(rows, 0.999)["factory"] == "Flat"


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
