"""The neighbour step: items that follow the user's last items come in, never excluded or blocked ones."""

from dataclasses import replace

import faiss
import numpy as np
import pytest
import scipy.sparse as sp

from indexing.artifact import ArtifactError, load_artifact, save_artifact
from streamrec.contract import CatalogItem, Event
from streamrec.core.batch import BatchResult, PreparedBatch, recommend_one, search_bound
from streamrec.core.interest import InterestParams, fold_events
from streamrec.core.items import ItemsModel, LiveItems
from streamrec.core.neighbours import cooccurrence, neighbour_batch, popular_items, top_neighbours
from streamrec.core.search import euclidean_items
from streamrec.core.repeat import REPEAT_EVENTS


def test_the_similarity_is_the_windowed_co_occurrence_written_out():
    # user 0: a b a c; user 1: b c. window 2, gap decay 0.5, backward 0.25, damping count^0.5 * count^1.
    users, items = np.array([0, 0, 0, 0, 1, 1]), np.array([0, 1, 0, 2, 1, 2])
    sim = cooccurrence(users, items, 3, window=2, gap_decay=0.5, backward=0.25, alpha=0.5, beta=1.0).toarray()
    forward = np.zeros((3, 3))
    for a, b, w in [(0, 1, 1), (1, 0, 1), (0, 2, 1), (0, 0, 0.5), (1, 2, 0.5), (1, 2, 1)]:  # (first, then, decay)
        forward[a, b] += w
    cooc = forward + 0.25 * forward.T
    np.fill_diagonal(cooc, 0)
    counts = np.array([2.0, 2.0, 2.0])
    np.testing.assert_allclose(sim, cooc / counts[:, None] ** 0.5 / counts[None, :])


def test_neighbours_are_the_best_m_best_first_their_shares_summing_to_one():
    sim = sp.csr_matrix(np.array([[0, 1.0, 4.0, 3.0], [0, 0, 0, 0], [2.0, 0, 0, 2.0], [1.0, 0, 0, 0]]))
    rows, sims = top_neighbours(sim, 2)
    assert rows.tolist() == [[2, 3], [-1, -1], [0, 3], [0, -1]]  # ties: the smaller row first
    np.testing.assert_allclose(sims, [[4 / 7, 3 / 7], [0, 0], [0.5, 0.5], [1, 0]], rtol=1e-6)


def brute_force(vector, target, recent, neighbours, sims, weight, decay, skip, k):
    """Every item of the catalog scored with the bonus written out; the top k not skipped."""
    scores = target @ vector
    for age, source in enumerate(reversed(recent)):
        if 0 <= source < len(neighbours):
            for near, s in zip(neighbours[source], sims[source]):
                if near >= 0:
                    scores[near] += weight * decay**age * s
    allowed = [r for r in range(len(target)) if r not in skip]
    return sorted(allowed, key=lambda r: -scores[r])[:k], scores


@pytest.mark.parametrize("seed", range(20))
def test_the_union_of_search_and_neighbours_is_the_catalog_wide_top_k(seed):
    rng = np.random.default_rng(seed)
    n, d, k, users, last = 50, 5, 6, 30, 4
    target = rng.standard_normal((n, d))
    vectors = rng.standard_normal((users, d))
    sim = sp.random(n, n, density=0.3, random_state=seed, format="csr")
    sim.setdiag(0)
    neighbours, sims = top_neighbours(sim, 5)
    recent = rng.integers(-1, n + 3, (users, last))  # -1: none; >= n: a new item without neighbours
    skip = [set(rng.choice(n, 4, replace=False).tolist()) for _ in range(users)]
    rows = np.full((users, k), -1)
    scores = np.full((users, k), -np.inf)
    for u in range(users):
        all_scores = target @ vectors[u]
        found = [r for r in np.argsort(-all_scores) if r not in skip[u]][:k]
        rows[u], scores[u] = found, all_scores[found]

    def banned(slots, candidates):
        return np.array([int(r) in skip[s] for s, r in zip(slots, candidates)], bool)

    out, out_scores = neighbour_batch(rows, scores, k, vectors, recent, neighbours, sims, target.__getitem__,
                                      weight=1.5, decay=0.6, banned=banned)
    for u in range(users):
        expected, expected_scores = brute_force(vectors[u], target, recent[u], neighbours, sims, 1.5, 0.6, skip[u], k)
        assert out[u].tolist() == expected
        np.testing.assert_allclose(out_scores[u], expected_scores[expected], rtol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_equal_scores_keep_the_lists_order_then_the_added_items(seed):
    """Scores and bonuses are small binary fractions, so many totals are exactly equal. The
    expectation is written out in Python: the candidates in order (the list, then each recent
    item's neighbours newest source first and best neighbour first, then the popular items), one
    entry per item at its first place with its bonuses summed, sorted by total, ties by place."""
    rng = np.random.default_rng(seed)
    n, d, k, width, users, last = 40, 3, 8, 6, 25, 3
    target = rng.integers(-2, 3, (n, d)).astype(np.float64)
    vectors = rng.integers(-1, 2, (users, d)).astype(np.float64)
    neighbours = np.array([rng.permutation(n)[:4] for _ in range(n)])
    sims = rng.integers(0, 5, (n, 4)) / 4.0
    recent = rng.integers(-1, n, (users, last))
    popular = (rng.permutation(n)[:3], rng.integers(0, 3, 3) / 2.0)
    rows = np.array([rng.permutation(n)[:width] for _ in range(users)])
    rows[rng.random(rows.shape) < 0.2] = -1  # some lists are short
    scores = np.where(rows >= 0, np.einsum("uld,ud->ul", target[rows], vectors), -np.inf)
    scores[0, 0] = -np.inf if rows[0, 0] >= 0 else scores[0, 0]  # a listed item scored -inf stays listed
    out, out_scores = neighbour_batch(rows, scores, k, vectors, recent, neighbours, sims, target.__getitem__,
                                      weight=1.0, decay=0.5, popular=popular)
    for u in range(users):
        entries: dict[int, list[float]] = {}  # item -> [place, base, bonus]
        for place, (row, score) in enumerate(zip(rows[u].tolist(), scores[u].tolist())):
            if row >= 0:
                entries.setdefault(row, [place, score, 0.0])
        place = width
        for age, source in enumerate(recent[u][::-1].tolist()):
            for near, sim in zip(neighbours[source].tolist(), sims[source].tolist()):
                if source >= 0:
                    entry = entries.setdefault(near, [place, float(target[near] @ vectors[u]), 0.0])
                    entry[2] += sim * 0.5 ** age
                place += 1
        for row, bonus in zip(*popular):
            entries.setdefault(int(row), [place, float(target[row] @ vectors[u]), 0.0])[2] += bonus
            place += 1
        ranked = sorted(entries.items(), key=lambda e: (-(e[1][1] + e[1][2]), e[1][0]))[:k]
        expected = [row for row, _ in ranked] + [-1] * (k - len(ranked))
        assert out[u].tolist() == expected
        assert out_scores[u].tolist() == [base + bonus for _, (_, base, bonus) in ranked] + [-np.inf] * (k - len(ranked))


def exact_lists(vectors, target, width):
    """Every user's exact top ``width`` by float32 inner product, as a flat index returns them."""
    scores = vectors @ target.T
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :width]
    return rows, np.take_along_axis(scores, rows, axis=1)


@pytest.mark.parametrize("seed", range(3))
def test_a_bound_drops_only_candidates_that_could_never_be_shown(seed):
    """With the search's bound the step scores far fewer added candidates and its lists are
    bitwise the same; a bound that lies (below what an unlisted item scores) changes lists, so
    the comparison can fail."""
    rng = np.random.default_rng(seed)
    n, d, k, width, users = 2000, 32, 10, 20, 300
    target = (rng.standard_normal((n, d)) / d).astype(np.float32)  # scores of about 0.2: the bonuses matter
    vectors = rng.standard_normal((users, d)).astype(np.float32)
    neighbours = np.array([rng.permutation(n)[:20] for _ in range(n)])
    sims = np.sort(rng.dirichlet(np.ones(20), n), axis=1)[:, ::-1]
    recent = rng.integers(0, n, (users, 5))
    popular = popular_items(rng.integers(0, 1000, n).astype(float), 20, 0.05)
    rows, scores = exact_lists(vectors, target, width)
    scored = []

    def target_of(r):
        scored.append(len(r))
        return target[r]

    def run(bound):
        scored.clear()
        out = neighbour_batch(rows, scores, k, vectors, recent, neighbours, sims, target_of, weight=2.0, decay=0.7,
                              popular=popular, bound=bound)
        return out, sum(scored)

    (plain_rows, plain_scores), every = run(None)
    unit = d * 2.0**-24
    margin = 4 * unit / (1 - unit) * np.linalg.norm(vectors, axis=1) * np.linalg.norm(target, axis=1).max()
    (bound_rows, bound_scores), fewer = run(scores[:, -1].astype(np.float64) + margin)
    np.testing.assert_array_equal(bound_rows, plain_rows)
    np.testing.assert_array_equal(bound_scores, plain_scores)
    assert any(set(r) - set(l) for r, l in zip(plain_rows.tolist(), rows.tolist()))  # neighbours came in
    assert fewer < 0.5 * every
    (lying_rows, _), _ = run(scores[:, -1].astype(np.float64) - 1.0)
    assert (lying_rows != plain_rows).any()


def test_the_search_bound_holds_for_exact_flat_searches_only(tmp_path):
    rng = np.random.default_rng(4)
    n, d = 200, 16
    ids = [f"sku-{i}" for i in range(n)]
    context, target = (rng.standard_normal((n, d)).astype(np.float32) for _ in range(2))
    save_artifact(tmp_path / "m", ids, context, target)
    items = LiveItems(ItemsModel.from_artifact(load_artifact(tmp_path / "m", use_gpu=False)))
    vectors = rng.standard_normal((50, d)).astype(np.float32)
    excluded = [set(rng.choice(n, 5, replace=False).tolist()) for _ in vectors]
    prepared = PreparedBatch(BatchResult(), [f"u{i}" for i in range(len(vectors))], vectors, excluded, [None] * len(vectors),
                             items, 10, view=items.view())
    rows, scores = prepared.view.search(vectors, 10, excluded)
    rows[0, -3:], scores[0, -3:] = -1, -np.inf  # a short list: no bound
    bound = search_bound(prepared, rows, scores)
    assert np.isposinf(bound[0]) and np.isfinite(bound[1:]).all()
    for u in range(1, len(vectors)):  # every item outside the list and not excluded scores at most the bound
        rest = np.setdiff1d(np.arange(n), np.r_[rows[u], list(excluded[u])])
        assert np.einsum("ij,j->i", target[rest], vectors[u]).max() <= bound[u]
        assert bound[u] - scores[u, -1] < 1e-3 * max(1.0, abs(scores[u, -1]))  # and is not loose
    hnsw = faiss.IndexHNSWFlat(d, 8, faiss.METRIC_INNER_PRODUCT)
    euclidean = faiss.IndexFlatL2(d + 1)  # as the Euclidean reduction is searched
    euclidean.add(euclidean_items(target)[0])
    for index in (hnsw, euclidean):
        other = PreparedBatch(BatchResult(), prepared.users, vectors, excluded, [None] * len(vectors), items, 10,
                              view=replace(prepared.view, index=index))
        assert search_bound(other, rows, scores) is None


def test_weight_zero_and_no_sources_only_cut_the_list():
    rows, scores = np.array([[3, 1, 2]]), np.array([[0.5, 0.2, 0.1]])
    neighbours, sims = np.array([[1], [2], [0], [0]]), np.ones((4, 1))
    for weight, recent in ((0.0, [[0]]), (1.0, [[-1]]), (1.0, [[7]])):
        out, out_scores = neighbour_batch(rows, scores, 2, np.ones((1, 2)), np.array(recent), neighbours, sims,
                                          lambda r: np.ones((len(r), 2)), weight=weight, decay=0.5)
        assert out.tolist() == [[3, 1]] and out_scores.tolist() == [[0.5, 0.2]]


def test_a_short_list_is_filled_by_neighbours_and_padded():
    neighbours, sims = np.array([[2, 1], [-1, -1], [-1, -1]]), np.array([[0.8, 0.2], [0, 0], [0, 0]])
    target = np.zeros((3, 2))
    out, out_scores = neighbour_batch(np.array([[-1, -1, -1, -1]]), np.full((1, 4), -np.inf), 4, np.ones((1, 2)),
                                      np.array([[0]]), neighbours, sims, target.__getitem__, weight=1.0, decay=0.5)
    assert out.tolist() == [[2, 1, -1, -1]]
    assert out_scores[0, :2].tolist() == pytest.approx([0.8, 0.2]) and np.isneginf(out_scores[0, 2:]).all()


# ---------------------------------------------------------------------------- in the worker's core

@pytest.fixture
def model(line_model):
    """The line model (conftest) where sku-9 is sku-1's and sku-8's only neighbour."""
    neighbours = np.full((10, 2), -1, np.int32)
    sims = np.zeros((10, 2), np.float32)
    neighbours[[1, 8], 0], sims[[1, 8], 0] = 9, 1.0
    return line_model(extras={"neighbours": neighbours, "neighbour_sims": sims})


def test_the_worker_lists_a_neighbour_of_a_recent_item_the_inner_product_never_lists(model, last_list):
    events = [Event("e0", "u", "sku-1", "view", 100.0), Event("e1", "u", "sku-2", "view", 101.0)]
    on = last_list(events, model, InterestParams(k=3, repeat_weight=0.0, knn_weight=2.0, knn_decay=0.5))
    off = last_list(events, model, InterestParams(k=3, repeat_weight=0.0, knn_weight=0.0, pop_weight=0.0))
    assert "sku-9" not in off
    assert on[0] == "sku-9"  # 0 + 2.0 * 0.5 (sku-1 is one event old) = 1.0 > sku-2's 0.89


def test_purchased_and_unavailable_neighbours_never_come_in(model, last_list):
    events = [Event("e0", "u", "sku-9", "purchase", 100.0), Event("e1", "u", "sku-1", "view", 101.0)]
    listed = last_list(events, model, InterestParams(k=5, repeat_weight=0.0, knn_weight=5.0))
    assert "sku-9" not in listed
    items = LiveItems(ItemsModel.from_artifact(model))
    items.apply_catalog("sku-9", CatalogItem("sku-9", available=False))
    events = [Event("e0", "u", "sku-8", "view", 100.0), Event("e1", "u", "sku-1", "view", 101.0)]
    assert "sku-9" not in last_list(events, items, InterestParams(k=5, repeat_weight=0.0, knn_weight=5.0))
    assert "sku-9" in last_list(events, model, InterestParams(k=5, repeat_weight=0.0, knn_weight=5.0))


def test_a_version_without_neighbours_loads_and_serves_without_the_step(tmp_path, last_list):
    ids = [f"sku-{i}" for i in range(4)]
    save_artifact(tmp_path / "m", ids, np.eye(4, dtype=np.float32), np.eye(4, dtype=np.float32))
    old = load_artifact(tmp_path / "m", use_gpu=False)
    assert not LiveItems(ItemsModel.from_artifact(old)).has_neighbours
    events = [Event("e0", "u", "sku-1", "view", 100.0)]
    assert last_list(events, old, InterestParams(k=2, knn_weight=3.0)) == last_list(events, old, InterestParams(k=2, knn_weight=0.0))


def test_neighbours_naming_rows_outside_the_catalog_are_refused(tmp_path):
    ids = [f"sku-{i}" for i in range(4)]
    save_artifact(tmp_path / "m", ids, np.eye(4, dtype=np.float32), np.eye(4, dtype=np.float32),
                  extras={"neighbours": np.full((4, 2), 4, np.int32), "neighbour_sims": np.ones((4, 2), np.float32)})
    with pytest.raises(ArtifactError, match="neighbours.npy"):
        load_artifact(tmp_path / "m", use_gpu=False)


@pytest.mark.parametrize("seed", range(5))
def test_repeat_and_neighbour_steps_together_are_the_catalog_wide_top_k(tmp_path, seed, last_list):
    """The worker's list equals every item scored with both bonuses written out."""
    rng = np.random.default_rng(seed)
    n, d, k = 30, 6, 5
    ids = [f"sku-{i}" for i in range(n)]
    context = rng.standard_normal((n, d)).astype(np.float32)
    target = rng.standard_normal((n, d)).astype(np.float32)
    lift = rng.uniform(0.2, 2.0, n).astype(np.float32)
    by_age = np.sort(rng.uniform(0, 0.4, 8))[::-1]
    sim = sp.random(n, n, density=0.3, random_state=seed, format="csr")
    sim.setdiag(0)
    neighbours, sims = top_neighbours(sim, 4)
    save_artifact(tmp_path / "m", ids, context, target, training={"repeat_by_age": by_age.tolist()},
                  extras={"repeat": lift, "neighbours": neighbours, "neighbour_sims": sims})
    model = load_artifact(tmp_path / "m", use_gpu=False)
    params = InterestParams(k=k, repeat_weight=0.8, knn_weight=1.3, knn_decay=0.6, knn_events=3)
    rows = rng.integers(0, n, 12).tolist()
    types = ["purchase" if t else "view" for t in rng.random(12) < 0.2]
    events = [Event(f"e{m}", "u", ids[r], t, 100.0 + m) for m, (r, t) in enumerate(zip(rows, types))]
    vector, _ = fold_events([(r, t, e.ts) for r, t, e in zip(rows, types, events)], context, params)
    scores = target.astype(np.float64) @ vector
    skip = {r for r, t in zip(rows, types) if t == "purchase"}
    for age, r in enumerate(reversed(rows[-min(REPEAT_EVENTS, len(by_age)):])):
        if r not in skip:
            scores[r] += 0.8 * lift[r] * by_age[age]
    for age, r in enumerate(reversed(rows[-3:])):
        for near, s in zip(neighbours[r], sims[r]):
            if near >= 0:
                scores[near] += 1.3 * 0.6**age * s
    expected = [ids[r] for r in sorted((r for r in range(n) if r not in skip), key=lambda r: -scores[r])[:k]]
    assert last_list(events, model, params) == expected


def test_popular_items_join_every_list_with_their_bonus_never_banned_ones():
    target = np.zeros((6, 2))
    counts = np.array([1.0, 8.0, 0.0, 4.0, 2.0, 0.0])
    popular = popular_items(counts, 3, 0.5)  # rows 1, 3, 4 with 0.5, 0.25, 0.125
    rows, scores = np.array([[0, 5], [0, 5]]), np.array([[0.3, 0.2], [0.3, 0.2]])
    out, out_scores = neighbour_batch(rows, scores, 3, np.ones((2, 2)), np.full((2, 1), -1), np.zeros((0, 0), int),
                                      np.zeros((0, 0)), target.__getitem__, weight=0.0, decay=0.5,
                                      banned=lambda slots, r: (slots == 1) & (r == 1), popular=popular)
    assert out.tolist() == [[1, 0, 3], [0, 3, 5]]
    np.testing.assert_allclose(out_scores, [[0.5, 0.3, 0.25], [0.3, 0.25, 0.2]])


def test_a_vector_that_says_nothing_gets_the_trending_backfill_not_the_training_popular_items(line_model):
    """A never-seen user (serve) has no list of its own: the popular-items bonus must not make one."""
    items = LiveItems(ItemsModel.from_artifact(line_model(extras={"popularity": np.arange(10, dtype=np.float32)})))
    assert len(items.model.popular(3, 0.5)[0]) == 3
    trigger = Event("e0", "u", "sku-0", "view", 100.0)
    params = InterestParams(k=3, repeat_weight=0.0, knn_weight=0.0, pop_weight=0.5, pop_items=3)
    silent = recommend_one(items, "u", np.zeros(10, np.float32), trigger, [], k=3, excluded=set(), params=params)
    assert {item.source for item in silent.items} == {"trending"}
    speaking = recommend_one(items, "u", np.eye(10, dtype=np.float32)[0], trigger, [], k=3, excluded=set(),
                             params=params)
    assert "sku-9" in [item.item_id for item in speaking.items]  # popular (count 9), zero inner product
