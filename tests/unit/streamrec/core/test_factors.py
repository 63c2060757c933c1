"""The factor step (streamrec/core/factors.py): the fold-in is implicit's, the search is a sort,
the fusion is the reciprocal-rank sum written out."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from streamrec.core.factors import factor_batch, fold_in, fuse, solved, top_rows


@pytest.fixture(scope="module")
def als():
    implicit = pytest.importorskip("implicit.cpu.als")
    matrix = sp.random(300, 120, density=0.06, random_state=1, format="csr", dtype=np.float32)
    matrix.data[:] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        model = implicit.AlternatingLeastSquares(factors=16, regularization=2.0, alpha=5.0, iterations=5, random_state=0)
        model.fit(matrix, show_progress=False)
    return model, matrix


def test_the_fold_in_is_implicits_least_squares_for_one_user(als):
    model, matrix = als
    factors = np.asarray(model.item_factors, np.float32)
    users = np.arange(12)
    expected = np.asarray(model.recalculate_user(users, matrix[users]))
    histories = [matrix[u].indices.tolist() for u in users]
    ours = fold_in(histories, factors, solved(factors, 2.0), confidence=5.0)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)


def test_the_fold_in_ignores_repeats_and_rows_it_does_not_know(als):
    model, matrix = als
    factors = np.asarray(model.item_factors, np.float32)
    history = matrix[3].indices.tolist()
    plain = fold_in([history], factors, solved(factors, 2.0), confidence=5.0)
    noisy = fold_in([[-1, *history, history[0], len(factors) + 7]], factors, solved(factors, 2.0),
                    confidence=5.0)
    np.testing.assert_array_equal(plain, noisy)
    assert not fold_in([[], [-1, 10_000]], factors, solved(factors, 2.0), confidence=5.0).any()


def test_the_factor_list_is_the_best_scores_with_exclusions():
    rng = np.random.default_rng(0)
    factors = rng.normal(size=(50, 4)).astype(np.float32)
    users = rng.normal(size=(3, 4))
    users[1] = 0.0  # knows nothing: lists nothing
    banned = {0: np.array([5, 7]), 2: np.array([], np.int64)}
    rows = top_rows(users, factors, 8, lambda slot: banned.get(slot))
    for slot in (0, 2):
        scores = users[slot] @ factors.astype(np.float64).T
        order = [r for r in np.argsort(-scores, kind="stable") if r not in banned[slot]][:8]
        assert rows[slot].tolist() == order
    assert (rows[1] == -1).all()
    # ties: the lower row first; fewer allowed items than the depth pad with -1
    flat = top_rows(np.ones((1, 2)), np.ones((4, 2), np.float32), 6, lambda slot: np.array([2]))
    assert flat.tolist() == [[0, 1, 3, -1, -1, -1]]


def test_the_fused_order_is_the_reciprocal_rank_sum_written_out():
    first, second = [4, 0, 7, 2], [7, 9, 4, 1]
    for weight in (0.0, 0.5, 2.0):
        totals = {}
        for share, ranking in ((1.0, first), (weight, second)):
            for rank, item in enumerate(ranking):
                totals[item] = totals.get(item, 0.0) + share / (10 + rank)
        expected = sorted(totals, key=lambda i: (-totals[i], (first + second).index(i)))[:5]
        rows, scores = fuse(np.array([first]), np.array([second]), 5, weight=weight)
        assert rows.tolist() == [expected]
        np.testing.assert_allclose(scores[0], [totals[i] for i in expected], rtol=1e-6)
    # weight 0 keeps the first list's order in front; a huge weight puts the second's in front
    assert fuse(np.array([first]), np.array([second]), 4, weight=0.0)[0].tolist() == [first]
    assert fuse(np.array([first]), np.array([second]), 4, weight=1e9)[0].tolist() == [second]


def test_short_lists_are_padded_and_padding_scores_nothing():
    rows, scores = fuse(np.array([[3, -1]]), np.array([[-1, -1]]), 3, weight=1.0)
    assert rows.tolist() == [[3, -1, -1]]
    assert np.isneginf(scores[0, 1:]).all()


def test_a_user_without_known_items_keeps_the_served_list():
    rng = np.random.default_rng(1)
    factors = rng.normal(size=(30, 3)).astype(np.float32)
    rows = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    scores = np.array([[4.0, 3.0, 2.0, 1.0], [9.0, 8.0, 7.0, 6.0]], np.float32)
    out_rows, out_scores = factor_batch(rows, scores, 3, [[10, 11], [-1]], factors, solved(factors, 1.0),
                                        confidence=5.0, weight=1.0, depth=4, banned=lambda slot: None)
    assert out_rows[1].tolist() == [5, 6, 7] and out_scores[1].tolist() == [9.0, 8.0, 7.0]
    x = fold_in([[10, 11]], factors, solved(factors, 1.0), confidence=5.0)
    second = top_rows(x, factors, 4, lambda slot: np.array([10, 11]))  # the recent items are not listed again
    assert out_rows[0].tolist() == fuse(rows[:1], second, 3, weight=1.0)[0][0].tolist()


def test_with_repeats_the_factor_list_may_hold_recent_items_but_never_banned_ones():
    rng = np.random.default_rng(2)
    factors = rng.normal(size=(40, 3)).astype(np.float32)
    factors[[10, 11]] *= 6.0  # the user's recent items are the factor model's favourites
    rows = np.array([[1, 2, 3, 4, 5, 6]])
    scores = np.linspace(6, 1, 6, dtype=np.float32)[None]
    history = [[10, 11, 12]]
    x = fold_in(history, factors, solved(factors, 1.0), confidence=5.0)
    for repeats, banned in ((False, np.array([], np.int64)), (True, np.array([], np.int64)), (True, np.array([11]))):
        out_rows, _ = factor_batch(rows, scores, 6, history, factors, solved(factors, 1.0), confidence=5.0,
                                   weight=3.0, depth=6, banned=lambda slot: banned, repeats=repeats)
        left_out = np.concatenate([banned, [] if repeats else [10, 11, 12]]).astype(np.int64)
        second = [r for r in np.argsort(-(x[0] @ factors.astype(np.float64).T), kind="stable") if r not in left_out][:6]
        assert out_rows[0].tolist() == fuse(rows, np.array([second]), 6, weight=3.0)[0][0].tolist()
        assert not set(banned.tolist()) & set(out_rows[0].tolist())
        assert bool({10, 11, 12} & set(out_rows[0].tolist()) - set(banned.tolist())) == repeats
