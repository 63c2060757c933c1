"""Calibrating an approximate index's search effort to a target recall@10 (indexing.index)."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from indexing.artifact import load_artifact, save_artifact
from indexing.index import (
    EXACT_UP_TO,
    build_index,
    build_served_index,
    calibrate,
    choose_factory,
    effort_steps,
    search_effort,
    session_queries,
    set_search_effort,
)
from streamrec.core.search import inner_product_search, search


def clustered(n_items: int, dim: int = 16, n_clusters: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    return (centres[rng.integers(0, n_clusters, n_items)] + 0.5 * rng.standard_normal((n_items, dim))).astype(np.float32)


def brute_recall(index: faiss.Index, items: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    """recall@10 judged by numpy's own full sort, not by FAISS."""
    truth = np.argsort(-(queries @ items.T), axis=1, kind="stable")[:, :k]
    _, found = inner_product_search(index, queries, k)
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / k for f, t in zip(found, truth, strict=True)]))


@pytest.fixture(scope="module")
def catalog():
    items = clustered(4000)
    rng = np.random.default_rng(1)
    queries = items[rng.integers(0, len(items), 600)] + 0.3 * rng.standard_normal((600, 16)).astype(np.float32)
    return items, queries[:300].copy(), queries[300:].copy()


def test_calibration_meets_the_target_with_the_smallest_effort(catalog):
    items, calibration_queries, held_out = catalog
    index = build_index(items, "IVF64,Flat")
    result = calibrate(index, items, calibration_queries, 0.9, factory="IVF64,Flat")
    assert result.reached and result.effort_name == "nprobe"
    assert search_effort(index) == result.effort
    assert brute_recall(index, items, calibration_queries) >= 0.9
    assert brute_recall(index, items, held_out) >= 0.85  # queries the calibration never saw
    steps = effort_steps(index)
    below = steps[steps.index(result.effort) - 1]
    set_search_effort(index, below)
    assert brute_recall(index, items, calibration_queries) < 0.9  # one step less misses the target


@pytest.mark.parametrize("factory", ["IVF64,Flat", "IVF64,SQ8", "HNSW16", "IVF64,PQ8x4fs,RFlat"])
def test_a_higher_target_never_gets_a_smaller_effort(catalog, factory):
    items, queries, _ = catalog
    index = build_index(items, factory)
    efforts = [calibrate(index, items, queries, target).effort for target in (0.5, 0.8, 0.9)]
    assert efforts == sorted(efforts)
    recalls = []
    for effort in efforts:
        set_search_effort(index, effort)
        recalls.append(brute_recall(index, items, queries))
    assert recalls == sorted(recalls) and recalls[-1] >= 0.9


def test_an_unreachable_target_keeps_the_best_effort_and_says_so(catalog, caplog):
    items, queries, _ = catalog
    index = build_index(items, "IVF16,PQ2x4")  # one byte per item: never exact
    with caplog.at_level("WARNING"):
        result = calibrate(index, items, queries, 0.999, factory="IVF16,PQ2x4")
    assert not result.reached and "below the target" in caplog.text
    assert result.recall_at_10 == max(recall for _, recall in result.curve)
    assert search_effort(index) == result.effort


def test_small_catalogs_are_served_exactly():
    assert choose_factory(12_000) == "Flat" and choose_factory(EXACT_UP_TO) == "Flat"
    assert choose_factory(EXACT_UP_TO + 1).startswith("IVF")
    index, calibration = build_served_index(clustered(500), "auto")
    assert isinstance(faiss.downcast_index(index), faiss.IndexFlat)
    assert calibration.effort is None and calibration.recall_at_10 == 1.0


def test_session_queries_look_like_users():
    items = clustered(2000)
    queries = session_queries(items, 100, seed=3)
    assert queries.shape == (100, 16) and np.isfinite(queries).all()
    assert not np.allclose(queries[0], queries[1])


def test_the_calibrated_effort_travels_with_the_artifact(tmp_path, catalog):
    items, queries, _ = catalog
    ids = [f"i{n}" for n in range(len(items))]
    folder = save_artifact(tmp_path, ids, items, items, factory="IVF64,SQ8", target_recall=0.9, queries=queries)
    meta = json.loads((folder / "meta.json").read_text())["search"]
    assert meta["effort_name"] == "nprobe" and meta["recall_at_10"] >= 0.9 and meta["queries"] == "users"
    model = load_artifact(tmp_path, use_gpu=False)
    assert search_effort(model.index) == meta["effort"]
    assert brute_recall(model.index, items, queries) >= 0.9
    assert search_effort(load_artifact(tmp_path, use_gpu=False, nprobe=3).index) == 3  # an explicit override wins


def test_refined_fast_scan_search_honours_the_allowed_rows(catalog):
    items, queries, _ = catalog
    index = build_index(items, "IVF64,PQ8x4fs,RFlat", nprobe=16)
    allowed = np.packbits((np.arange(len(items)) % 3 != 0).astype(np.uint8), bitorder="little")
    rows, scores = search(index, queries[:50], 10, allowed=allowed)
    assert (rows >= 0).all() and not (rows % 3 == 0).any()
    np.testing.assert_allclose(scores, np.take_along_axis(queries[:50] @ items.T, rows, axis=1), rtol=1e-4)


def test_the_trainer_calibrates_on_its_window_users_folded_by_the_worker_rule():
    from indexing.trainer import WindowArrays, window_user_vectors
    from streamrec.contract import EVENT_TYPE_CODES
    from streamrec.core.interest import InterestParams, fold_events

    context = np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32)
    # window item keys in another order than the model's rows; key "gone" is not in the model
    window = WindowArrays(users=np.array([0, 1, 0, 0, 1]), items=np.array([0, 1, 2, 3, 0]),
                          types=np.array([EVENT_TYPE_CODES[t] for t in ("view", "view", "purchase", "view", "click")]),
                          ts=np.array([1.0, 2.0, 50.0, 60.0, 900.0]), item_keys=np.array(["b", "c", "a", "gone"]))
    users = window_user_vectors(window, np.arange(5), ["a", "b", "c"], context)
    row = {"a": 0, "b": 1, "c": 2}
    user0, _ = fold_events([(row["b"], "view", 1.0), (row["a"], "purchase", 50.0)], context, InterestParams())
    user1, _ = fold_events([(row["c"], "view", 2.0), (row["b"], "click", 900.0)], context, InterestParams())
    np.testing.assert_allclose(users, np.stack([user0, user1]), rtol=1e-5)


def test_auto_falls_back_from_sq8_to_flat_codes_where_sq8_cannot_reach_the_target(monkeypatch):
    import indexing.index as index_module

    monkeypatch.setattr(index_module, "EXACT_UP_TO", 100)
    monkeypatch.setattr(index_module, "SQ8_FROM", 100)
    rng = np.random.default_rng(7)
    items = clustered(3000)
    items[0, 0] = 1e6  # one outlier stretches dimension 0's 8-bit range: SQ8 loses it for every other item
    queries = rng.standard_normal((200, 16)).astype(np.float32)
    queries[:, 0] = -8 * np.abs(queries[:, 0])  # rankings hinge on dimension 0
    assert choose_factory(3000) == "IVF256,SQ8"
    index, calibration = build_served_index(items, "auto", target_recall=0.95, queries=queries)
    assert calibration.factory == "IVF256,Flat" and calibration.reached
    assert brute_recall(index, items, queries) >= 0.95
    clean = clustered(3000)  # without the outlier SQ8 reaches the target and is kept
    _, kept = build_served_index(clean, "auto", target_recall=0.95, queries=queries)
    assert kept.factory == "IVF256,SQ8" and kept.reached
