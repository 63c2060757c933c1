import numpy as np
import pytest

from indexing.index import build_index, choose_factory
from streamrec.core.search import check_vectors, search


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    return rng.standard_normal((500, 16)).astype(np.float32)


def exact_top(vectors, queries, k, exclude=None):
    scores = queries @ vectors.T
    if exclude is not None:
        for q, banned in enumerate(exclude):
            scores[q, list(banned)] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def test_flat_search_is_exact(vectors):
    index = build_index(vectors, "Flat")
    queries = np.random.default_rng(1).standard_normal((20, 16)).astype(np.float32)
    rows, scores = search(index, queries, 10)
    np.testing.assert_array_equal(rows, exact_top(vectors, queries, 10))
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ vectors.T, rows, axis=1), rtol=1e-5)


def test_exclusions_are_never_returned_and_list_is_refilled(vectors):
    index = build_index(vectors, "Flat")
    queries = np.random.default_rng(2).standard_normal((5, 16)).astype(np.float32)
    first = exact_top(vectors, queries, 10)
    exclude = [set(first[q, :4].tolist()) for q in range(5)]
    rows, _ = search(index, queries, 10, exclude)
    for q in range(5):
        assert not exclude[q] & set(rows[q].tolist())
        assert (rows[q] >= 0).all()
    np.testing.assert_array_equal(rows, exact_top(vectors, queries, 10, exclude))


def test_fewer_items_than_k_pads_with_minus_one():
    index = build_index(np.eye(3, dtype=np.float32), "Flat")
    rows, scores = search(index, np.ones((1, 3), np.float32), 5, [{0}])
    assert sorted(rows[0, :2].tolist()) == [1, 2]
    assert rows[0, 2:].tolist() == [-1, -1, -1]
    assert np.isneginf(scores[0, 2:]).all()


@pytest.mark.parametrize("factory", ["HNSW32", "IVF16,Flat", "IVF16,SQ8"])
def test_approximate_indexes_have_high_recall(vectors, factory):
    index = build_index(vectors, factory, nprobe=16)
    queries = np.random.default_rng(3).standard_normal((50, 16)).astype(np.float32)
    rows, _ = search(index, queries, 10)
    truth = exact_top(vectors, queries, 10)
    recall = np.mean([len(set(rows[q]) & set(truth[q])) / 10 for q in range(50)])
    assert recall >= 0.9


def test_non_finite_vectors_are_an_error():
    bad = np.ones((4, 3), np.float32)
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match="1 row"):
        check_vectors(bad)
    with pytest.raises(ValueError):
        build_index(bad)


def test_choose_factory_by_catalog_size():
    assert choose_factory(1000) == "Flat"
    assert choose_factory(1_000_000).startswith("IVF")


def test_search_groups_queries_by_exclusions_and_matches_brute_force():
    rng = np.random.default_rng(3)
    items = rng.standard_normal((500, 8)).astype(np.float32)
    queries = rng.standard_normal((40, 8)).astype(np.float32)
    index = build_index(items, "Flat")
    exclude = [set(rng.choice(500, size=int(rng.choice([0, 0, 1, 5, 60])), replace=False).tolist()) for _ in queries]
    rows, scores = search(index, queries, 10, exclude)
    full = queries @ items.T
    for q, banned in enumerate(exclude):
        order = [r for r in np.argsort(-full[q], kind="stable") if r not in banned][:10]
        assert rows[q].tolist() == order
        np.testing.assert_allclose(scores[q], full[q, order], rtol=1e-5)


def test_search_on_a_tiny_catalog_pads_with_minus_one():
    index = build_index(np.eye(3, dtype=np.float32), "Flat")
    rows, scores = search(index, np.ones((2, 3), np.float32), 5, [{1}, set()])
    assert rows[0].tolist()[:2] in ([0, 2], [2, 0]) and rows[0, 2:].tolist() == [-1, -1, -1]
    assert sorted(rows[1, :3].tolist()) == [0, 1, 2] and np.isneginf(scores[1, 3:]).all()
