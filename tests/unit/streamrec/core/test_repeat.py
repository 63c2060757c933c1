"""The repeat step: recent items come back by lift and learnt recency, never excluded or blocked ones."""

import numpy as np
import pytest

from streamrec.contract import CatalogItem, Event
from streamrec.core.interest import InterestParams
from streamrec.core.items import ItemsModel, LiveItems
from streamrec.core.repeat import REPEAT_EVENTS, repeat_rates, with_repeats


def brute_force(vector, target, lift, recent, weight, by_age, skip, k):
    """Score every item of the catalog with the bonus written out, top k."""
    scores = target @ vector
    for age, row in enumerate(reversed(recent[-REPEAT_EVENTS:])):
        if row not in skip:
            scores[row] += weight * lift[row] * by_age[age]
    allowed = [r for r in range(len(target)) if r not in skip]
    return sorted(allowed, key=lambda r: -scores[r])[:k]


@pytest.mark.parametrize("seed", range(20))
def test_the_union_of_search_and_recent_items_is_the_catalog_wide_top_k(seed):
    rng = np.random.default_rng(seed)
    n, d, k = 40, 5, 6
    target, vector = rng.standard_normal((n, d)), rng.standard_normal(d)
    lift = rng.uniform(0, 3, n)
    by_age = rng.uniform(0, 0.5, REPEAT_EVENTS)
    recent = rng.integers(0, n, rng.integers(1, 40)).tolist()
    skip = set(rng.choice(n, 3, replace=False).tolist())
    scores = target @ vector
    allowed = np.array([r for r in np.argsort(-scores) if r not in skip])[:k]
    rows, _ = with_repeats(allowed, scores[allowed], k, vector, recent, target.__getitem__, lift.__getitem__,
                           weight=2.0, by_age=by_age, skip=skip)
    assert rows.tolist() == brute_force(vector, target, lift, recent, 2.0, by_age, skip, k)


def test_weight_zero_and_no_recent_items_leave_the_list_unchanged():
    rows, scores = np.array([3, 1, -1]), np.array([0.5, 0.2, -np.inf])
    target = np.eye(4)
    for weight, recent in ((0.0, [2]), (1.0, [])):
        out, out_scores = with_repeats(rows, scores, 3, np.ones(4), recent, target.__getitem__,
                                       lambda r: np.ones(len(r)), weight, np.array([0.5]))
        assert out is rows and out_scores is scores


def test_a_short_list_is_filled_with_recent_items_and_padded():
    target = np.zeros((5, 2))
    rows, scores = with_repeats(np.array([0, -1, -1, -1]), np.array([1.0, -np.inf, -np.inf, -np.inf]), 4,
                                np.ones(2), [4, 3], target.__getitem__, lambda r: np.full(len(r), 0.9), 1.0,
                                np.array([1.0, 0.5]))
    assert rows.tolist() == [0, 3, 4, -1]  # the search's 0 (1.0), then 3 (newest: 0.9), 4 (0.45)
    assert scores.tolist()[:3] == pytest.approx([1.0, 0.9, 0.45]) and scores[3] == -np.inf


def test_recency_sums_the_learnt_weights_of_the_last_events_only():
    recent = [9] + [1] * REPEAT_EVENTS  # 9 is one event too old
    by_age = 0.5 ** np.arange(REPEAT_EVENTS)
    target = np.zeros((10, 2))
    rows, scores = with_repeats(np.array([-1, -1, -1]), np.full(3, -np.inf), 3, np.ones(2), recent,
                                target.__getitem__, lambda r: np.ones(len(r)), 1.0, by_age)
    assert rows.tolist() == [1, -1, -1]
    assert scores[0] == pytest.approx(by_age.sum())


def test_lift_and_by_age_are_the_shares_written_out():
    rng = np.random.default_rng(3)
    users = np.sort(rng.integers(0, 30, 400))
    items = rng.integers(0, 12, 400)
    lift, by_age = repeat_rates(users, items, 12, prior=5.0, window=4)
    hits, totals = np.zeros(12), np.zeros(12)
    same, pairs = np.zeros(4), np.zeros(4)
    for n in range(400):
        later = [m for m in range(n + 1, min(n + 5, 400)) if users[m] == users[n]]
        if n + 1 < 400 and users[n + 1] == users[n]:
            totals[items[n]] += 1
            hits[items[n]] += any(items[m] == items[n] for m in later)
        for m in later:
            pairs[m - n - 1] += 1
            same[m - n - 1] += items[m] == items[n]
    rate = hits.sum() / totals.sum()
    np.testing.assert_allclose(by_age, same / pairs)
    np.testing.assert_allclose(lift, (hits + 5.0 * rate) / (totals + 5.0) / rate, rtol=1e-6)


# ---------------------------------------------------------------------------- in the worker's core

@pytest.fixture
def model(line_model):
    """The line model (conftest) with repeat propensities: only the repeat step can list sku-9."""
    repeat = np.full(10, 0.5, np.float32)
    by_age = [0.7**a for a in range(REPEAT_EVENTS)]
    return line_model(extras={"repeat": repeat}, training={"repeat_by_age": by_age})


def test_the_worker_brings_back_a_recently_viewed_item_the_inner_product_never_lists(model, last_list):
    events = [Event("e0", "u", "sku-9", "view", 100.0), Event("e1", "u", "sku-2", "view", 101.0)]
    on = last_list(events, model, InterestParams(k=3, repeat_weight=1.0))
    off = last_list(events, model, InterestParams(k=3, repeat_weight=0.0))
    assert "sku-9" in on and "sku-9" not in off
    assert on[0] == "sku-2"  # its own score 0.89 + 0.5 bonus


def test_purchased_and_unavailable_items_never_come_back(model, last_list):
    events = [Event("e0", "u", "sku-9", "purchase", 100.0), Event("e1", "u", "sku-8", "view", 101.0),
              Event("e2", "u", "sku-2", "view", 102.0)]
    items = LiveItems(ItemsModel.from_artifact(model))
    items.apply_catalog("sku-8", CatalogItem("sku-8", available=False))
    listed = last_list(events, items, InterestParams(k=5, repeat_weight=5.0))
    assert "sku-9" not in listed and "sku-8" not in listed
    assert listed[0] == "sku-2"


def test_a_new_item_gets_the_shops_average_lift(model):
    items = LiveItems(ItemsModel.from_artifact(model))
    row = items.row("brand-new")
    assert items.repeat_lift(np.array([0, row])).tolist() == pytest.approx([0.5, 1.0])


def reference_list(rows, scores, k, vector, recent, target, lift, weight, by_age):
    """The repeat step for one user, written plainly: the independent expectation."""
    bonus = {}
    for age, row in enumerate(reversed(recent[-len(by_age):])):
        if row >= 0:
            bonus[row] = bonus.get(row, 0.0) + by_age[age]
    candidates = [(float(s), r) for r, s in zip(rows, scores) if r >= 0 and r not in bonus]
    candidates += [(float(target[r] @ vector) + weight * lift[r] * b, r) for r, b in bonus.items()]
    ranked = sorted(candidates, key=lambda c: -c[0])[:k]  # stable: search order, then newest recent first
    return [r for _, r in ranked] + [-1] * (k - len(ranked))


def test_the_batched_step_equals_the_plain_one_user_by_user():
    from streamrec.core.repeat import recent_matrix, repeat_batch

    rng = np.random.default_rng(5)
    n_items, k, users = 40, 5, 300
    target = rng.standard_normal((n_items, 6))
    lift = rng.uniform(0.2, 3.0, n_items)
    by_age = np.sort(rng.uniform(0, 0.3, 12))[::-1]
    vectors = rng.standard_normal((users, 6))
    scores_all = vectors @ target.T
    rows = np.argsort(-scores_all, axis=1)[:, :k]
    scores = np.take_along_axis(scores_all, rows, axis=1).astype(np.float32)
    rows[::7, -2:] = -1  # some short lists
    scores[::7, -2:] = -np.inf
    recent = [rng.integers(-1, n_items, rng.integers(0, 20)).tolist() for _ in range(users)]
    out, out_scores = repeat_batch(rows, scores, k, vectors, recent_matrix(recent, by_age), target.__getitem__,
                                   lift.__getitem__, 0.7, by_age)
    for u in range(users):
        assert out[u].tolist() == reference_list(rows[u], scores[u], k, vectors[u], recent[u], target, lift, 0.7, by_age)
