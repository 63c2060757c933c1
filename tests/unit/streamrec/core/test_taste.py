"""The long-term taste vector: the batched update is the per-event rule, and the fitted map
reads a planted long-term preference back."""

import numpy as np
import scipy.sparse as sp

from streamrec.contract import EVENT_TYPES
from streamrec.core.interest import InterestParams
from streamrec.core.taste import TasteStats, direction, fit_transform, fold_taste, query, update_taste


def test_batched_taste_update_equals_the_per_event_rule():
    rng = np.random.default_rng(1)
    context = rng.standard_normal((30, 5)).astype(np.float32)
    params = InterestParams(taste_decay=0.9)
    users = rng.integers(0, 6, 80)
    items = rng.integers(0, 30, 80)
    kinds = rng.integers(0, len(EVENT_TYPES), 80)
    ts = np.sort(rng.uniform(0, 1e7, 80))
    taste = np.zeros((6, 5), np.float32)
    last_ts = np.full(6, np.nan)
    update_taste(taste, last_ts, users, items, kinds, ts, context, params)
    assert np.isnan(last_ts).all()  # the interest update owns the users' times
    for user in range(6):
        mine = np.flatnonzero(users == user)
        # By hand: s <- 0.9 s + w c, no time decay.
        expected = np.zeros(5)
        for n in mine:
            expected = 0.9 * expected + params.event_weights[EVENT_TYPES[kinds[n]]] * context[items[n]]
        np.testing.assert_allclose(taste[user], expected, rtol=1e-5, atol=1e-5)
        history = [(int(items[n]), EVENT_TYPES[kinds[n]], float(ts[n])) for n in mine]
        np.testing.assert_allclose(fold_taste(history, context, params), expected, rtol=1e-5, atol=1e-5)


def test_taste_off_leaves_the_query_alone():
    v = np.ones((2, 3), np.float32)
    taste = np.zeros((2, 3), np.float32)
    update_taste(taste, np.full(2, np.nan), np.array([0]), np.array([0]), np.array([0]), np.array([1.0]),
                 np.ones((1, 3), np.float32), InterestParams(taste_decay=0.0))
    assert not taste.any()
    assert query(v, taste, None) is v
    np.testing.assert_allclose(direction(np.array([[0.0, 0.0], [3.0, 4.0]])), [[0, 0], [0.6, 0.8]], rtol=1e-6)


def test_fitted_map_recovers_a_long_term_preference_the_interest_vector_lacks():
    # Items 0..3; the next item is the user's long-term favourite f (its taste direction is
    # e_f), whatever their interest vector z (noise). The interest-only regression cannot
    # predict it; with the map, T (z + W t) ranks f first.
    rng = np.random.default_rng(0)
    n, dim = 2000, 4
    favourite = rng.integers(0, 4, n)
    z = rng.standard_normal((n, dim))
    t = np.eye(dim)[favourite]
    answers = sp.csr_matrix((np.ones(n), (favourite, np.arange(n))), shape=(4, n))
    stats = TasteStats(4, dim)
    stats.add(z, t, answers)
    gram, sums = z.T @ z, answers @ z
    transform, target, solve = fit_transform(stats, gram, sums, np.ones(4), ridge=0.01)
    scores = (z + t @ transform.T.astype(np.float64)) @ target.T.astype(np.float64)
    assert (scores.argmax(axis=1) == favourite).mean() > 0.95
    plain = z @ (sums @ np.linalg.inv(gram + 0.01 * np.eye(dim))).T
    assert (plain.argmax(axis=1) == favourite).mean() < 0.45
    assert solve.shape == (dim, dim) and np.allclose(solve, solve.T)
