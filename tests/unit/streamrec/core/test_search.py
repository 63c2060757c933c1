"""Searching: the Euclidean reduction of inner-product search that approximate indexes are built on."""

import faiss
import numpy as np
import pytest

from streamrec.core.search import euclidean_items, fetch_groups, inner_product_search, mark_euclidean, search


def euclidean_ivf(items: np.ndarray, n_lists: int) -> faiss.Index:
    vectors, m2 = euclidean_items(items)
    index = faiss.index_factory(vectors.shape[1], f"IVF{n_lists},Flat", faiss.METRIC_L2)
    index.train(vectors)
    index.add(vectors)
    mark_euclidean(index, m2, items.shape[1])
    faiss.extract_index_ivf(index).nprobe = n_lists  # every list: as exact as the reduction
    return index


def test_the_euclidean_reduction_finds_the_largest_inner_products_and_gives_them_back():
    rng = np.random.default_rng(3)
    # Norms spread over a factor of ten, as popular items' vectors are longer.
    items = (rng.standard_normal((2000, 16)) * rng.uniform(0.1, 1.0, (2000, 1))).astype(np.float32)
    queries = rng.standard_normal((50, 16)).astype(np.float32)
    index = euclidean_ivf(items, 8)
    excluded = [set(), {int(np.argmax(items @ queries[1]))}] + [set()] * 48
    rows, scores = search(index, queries, 10, excluded)
    truth = items @ queries.T  # the independent expectation: brute-force inner products
    for q in range(len(queries)):
        ranked = [r for r in np.argsort(-truth[:, q]) if r not in excluded[q]][:10]
        assert rows[q].tolist() == ranked
        np.testing.assert_allclose(scores[q], truth[ranked, q], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="dimension"):
        search(index, queries[:, :15], 10)


def test_a_plain_inner_product_index_is_searched_as_before():
    items = np.eye(4, dtype=np.float32)
    flat = faiss.IndexFlatIP(4)
    flat.add(items)
    scores, rows = inner_product_search(flat, items[:1] * 2, 2)
    assert rows[0, 0] == 0 and scores[0, 0] == 2.0


@pytest.mark.parametrize("seed", range(30))
def test_fetch_groups_cover_every_query_once_and_fetch_enough(seed):
    rng = np.random.default_rng(seed)
    fetch = rng.choice([10, 11, 12, 14, 18, 26, 42, 74, 138, 1000], size=rng.integers(1, 80))
    groups = fetch_groups(fetch, min_group=16, max_growth=4)
    members = np.concatenate([group for _, group in groups])
    assert sorted(members.tolist()) == list(range(len(fetch)))
    for size, group in groups:
        assert (fetch[group] <= size).all() and (size <= 4 * fetch[group]).all()
        assert size in fetch[group]


def test_a_small_batch_with_exclusions_finds_the_same_lists_as_a_search_per_user():
    rng = np.random.default_rng(7)
    items = rng.standard_normal((500, 8)).astype(np.float32)
    index = faiss.IndexFlatIP(8)
    index.add(items)
    queries = rng.standard_normal((20, 8)).astype(np.float32)
    exclude = [set(rng.choice(500, rng.integers(0, 6), replace=False).tolist()) for _ in range(20)]
    rows, _ = search(index, queries, 10, exclude)
    for q in range(20):
        scores = items @ queries[q]
        expected = [r for r in np.argsort(-scores).tolist() if r not in exclude[q]][:10]
        assert rows[q].tolist() == expected
