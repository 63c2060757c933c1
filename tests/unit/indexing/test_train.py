import numpy as np

from indexing.train import TrainParams, factorise, interactions_from_arrays, train_item_vectors, transition_matrix


def chain_data(n_users=300, n_items=30, length=6, seed=0):
    """Users walk a ring of items: after item i comes item i + 1."""
    rng = np.random.default_rng(seed)
    users, items, types, ts = [], [], [], []
    for u in range(n_users):
        start = rng.integers(n_items)
        for step in range(length):
            users.append(f"u{u}")
            items.append(f"i{(start + step) % n_items:02d}")
            types.append(0)
            ts.append(float(step))
    return interactions_from_arrays(np.array(users), np.array(items), np.array(types), np.array(ts))


def test_grouping_orders_each_user_by_time():
    data = interactions_from_arrays(
        np.array(["b", "a", "b", "a"]), np.array(["x", "y", "y", "x"]), np.zeros(4), np.array([5.0, 2.0, 1.0, 1.0])
    )
    assert data.user_ids == ["a", "b"] and data.item_ids == ["x", "y"]
    assert data.user_ptr.tolist() == [0, 2, 4]
    assert data.items.tolist() == [0, 1, 1, 0]  # a: x@1, y@2; b: y@1, x@5


def test_transition_matrix_weights_forward_and_backward():
    params = TrainParams(window=2, gap_decay=0.5, backward_weight=0.25, popularity_alpha=0.0, popularity_beta=0.0,
                         event_weights={"view": 1.0})
    data = interactions_from_arrays(np.array(["u"] * 3), np.array(["a", "b", "c"]), np.zeros(3), np.arange(3.0))
    m = transition_matrix(data, params).toarray()
    assert m[0, 1] == 1.0 and m[1, 2] == 1.0 and m[0, 2] == 0.5
    assert m[1, 0] == 0.25 and m[2, 0] == 0.125
    assert m[0, 0] == 0.0


def test_consecutive_repeats_are_collapsed():
    params = TrainParams(window=1, popularity_alpha=0.0, popularity_beta=0.0)
    data = interactions_from_arrays(np.array(["u"] * 3), np.array(["a", "a", "b"]), np.zeros(3), np.arange(3.0))
    assert transition_matrix(data, params).toarray()[0, 0] == 0.0


def test_factorise_dense_reconstructs_low_rank_matrix():
    rng = np.random.default_rng(0)
    import scipy.sparse as sp

    low = rng.standard_normal((50, 3)) @ rng.standard_normal((3, 50))
    context, target = factorise(sp.csr_matrix(low), 5)
    assert context.shape == (50, 5)
    np.testing.assert_allclose(context @ target.T, low, atol=1e-4)


def test_trained_vectors_predict_the_next_item_on_a_ring():
    data = chain_data()
    context, target, summary = train_item_vectors(data, TrainParams(dim=16))
    scores = context @ target.T
    np.fill_diagonal(scores, -np.inf)
    nxt = np.argmax(scores, axis=1)
    n = data.n_items
    hits = np.mean(nxt == (np.arange(n) + 1) % n)
    assert hits > 0.9
    assert summary["items"] == 30 and summary["events"] == 1800


def test_impressions_are_not_training_data():
    from indexing.train import interactions_from_events
    from indexing.trainer import EventWindow
    from streamrec.contract import Event

    actions = [Event(f"e{n}", f"u{n % 3}", f"i{n % 5}", "view", float(n)) for n in range(12)]
    shown = [Event(f"s{n}", "u0", "i9", "impression", float(n), list_id="L") for n in range(4)]
    with_shown = interactions_from_events(actions[:6] + shown + actions[6:])
    alone = interactions_from_events(actions)
    assert with_shown.item_ids == alone.item_ids and np.array_equal(with_shown.items, alone.items)
    window = EventWindow(100)
    for event in actions + shown:
        window.append(event)
    assert len(window) == len(actions)
