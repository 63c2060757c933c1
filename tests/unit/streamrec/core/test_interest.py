import math

import numpy as np
import pytest

from streamrec.core.interest import InterestParams, decay_factor, fold_events, update_batch, update_vector


def test_first_event_is_weighted_context_vector():
    params = InterestParams()
    item = np.array([1.0, -2.0, 0.5], np.float32)
    vector, ts = update_vector(np.full(3, 9.0, np.float32), None, item, "purchase", 100.0, params)
    np.testing.assert_allclose(vector, 3.0 * item)
    assert ts == 100.0


def test_decay_combines_event_and_time_decay():
    params = InterestParams(event_decay=0.8, half_life_s=10.0)
    assert decay_factor(0.0, 10.0, params) == pytest.approx(0.4)
    assert decay_factor(0.0, 20.0, params) == pytest.approx(0.2)
    # Out-of-order events do not grow the vector.
    assert decay_factor(50.0, 40.0, params) == pytest.approx(0.8)
    assert decay_factor(None, 40.0, params) == 0.0


def test_known_answer_two_events():
    params = InterestParams(event_decay=0.5, half_life_s=math.inf, event_weights={"view": 1.0, "purchase": 2.0})
    contexts = np.eye(2, dtype=np.float32)
    vector, last = fold_events([(0, "view", 1.0), (1, "purchase", 2.0), (0, "view", 3.0)], contexts, params)
    # ((0.5 * [1, 0]) + [0, 2]) * 0.5 + [1, 0] = [1.25, 1.0]
    np.testing.assert_allclose(vector, [1.25, 1.0])
    assert last == 3.0


def test_unweighted_type_only_decays():
    params = InterestParams(event_weights={"view": 1.0, "click": 0.0}, event_decay=0.5, half_life_s=math.inf)
    contexts = np.eye(2, dtype=np.float32)
    vector, _ = fold_events([(0, "view", 1.0), (1, "click", 2.0)], contexts, params)
    np.testing.assert_allclose(vector, [0.5, 0.0])


@pytest.mark.parametrize("bad", [{"event_decay": 0.0}, {"event_decay": 1.5}, {"half_life_s": 0.0}, {"k": 0},
                                 {"event_weights": {"teleport": 1.0}}])
def test_bad_params_are_rejected(bad):
    with pytest.raises(ValueError):
        InterestParams(**bad)


def test_batch_update_equals_sequential_updates():
    rng = np.random.default_rng(3)
    params = InterestParams(event_decay=0.7, half_life_s=50.0)
    contexts = rng.standard_normal((40, 8)).astype(np.float32)
    types = ["view", "click", "add_to_cart", "favorite", "purchase"]
    n_users, n_events = 6, 200
    users = rng.integers(0, n_users, n_events)
    rows = rng.integers(0, 40, n_events)
    codes = rng.integers(0, 5, n_events)
    ts = np.sort(rng.uniform(0, 1000, n_events))
    ts[::7] -= 30  # some out-of-order events
    # Start half the users from an existing state.
    vectors = np.zeros((n_users, 8), np.float32)
    last = np.full(n_users, np.nan)
    vectors[:3] = rng.standard_normal((3, 8)).astype(np.float32)
    last[:3] = -5.0
    expected = []
    for u in range(n_users):
        start = (vectors[u].copy(), None if np.isnan(last[u]) else float(last[u]))
        events = [(int(rows[j]), types[codes[j]], float(ts[j])) for j in range(n_events) if users[j] == u]
        expected.append(fold_events(events, contexts, params, start=start))
    update_batch(vectors, last, users, rows, codes, ts, contexts, params)
    for u in range(n_users):
        np.testing.assert_allclose(vectors[u], expected[u][0], rtol=1e-6, atol=1e-6)
        assert last[u] == pytest.approx(expected[u][1])
