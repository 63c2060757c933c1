"""The trainer's gate on served lists (streamrec/evaluation/gate.py)."""

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from indexing.artifact import load_artifact
from indexing.gate import gate_cases, next_item_hits, split_holdout
from indexing.index import build_index
from indexing.train import TrainedModel, TrainParams, interactions_from_arrays, train_model
from streamrec.contract import EVENT_TYPES
from streamrec.core.interest import InterestParams
from streamrec.evaluation.gate import served_hits, window_log
from streamrec.evaluation.served import ServedModel

PARAMS = TrainParams(dim=12, refine_epochs=1, factors=6, factor_iterations=5)
INTEREST = InterestParams(factor_weight=1.0, factor_depth=20)
PURCHASE = EVENT_TYPES.index("purchase")


@pytest.fixture(scope="module")
def shop(make_log):
    """A window as the trainer holds it (integer codes in arrival order, arrival a little out of
    time order), its held-out part and cases, and a version trained on the rest."""
    base = make_log(n_users=150, seed=11)
    rng = np.random.default_rng(3)
    n = len(base)
    ts = np.sort(rng.uniform(1.6e9, 1.6e9 + 20 * 86400, n)) + rng.normal(0, 600, n)  # not quite sorted
    types = rng.choice([0, 0, 0, 1, 2, EVENT_TYPES.index("purchase")], n).astype(np.int8)
    window = SimpleNamespace(users=base.users.astype(np.int64), items=base.items.astype(np.int64), types=types,
                             ts=ts, item_keys=np.asarray(base.item_ids, dtype=object))
    train_rows, holdout = split_holdout(ts, 0.2)
    train_rows = np.sort(train_rows)
    data = interactions_from_arrays(np.asarray([str(u) for u in window.users[train_rows]]),
                                    window.item_keys[window.items[train_rows]].astype(str), types[train_rows],
                                    ts[train_rows])
    trained = train_model(data, PARAMS, INTEREST)
    cases = gate_cases(window.users, window.items, ts, holdout, max_cases=10_000)
    return window, holdout, cases, trained


def expected_hits(window, cases, trained: TrainedModel, k: int) -> np.ndarray:
    """Written out, case by case: a fresh served model given the version and every window event
    before the case (by time, ties by arrival), then the user's list with what they bought left out."""
    log, position = window_log(window.users, window.items, window.types, window.ts, window.item_keys)
    hits = []
    for case in cases.tolist():
        before = log.take(slice(0, position[case]))
        model = ServedModel(TrainParams(dim=trained.context.shape[1]), INTEREST)
        model.serve_version(trained, before)
        user = log.users[position[case]]
        bought = np.unique(before.items[(before.users == user) & (before.types == PURCHASE)])
        top = model.recommend(np.array([user]), k, [bought])[0]
        hits.append(log.items[position[case]] in top.tolist())
    return np.array(hits)


def test_the_gate_scores_each_case_on_the_list_the_worker_would_publish(shop):
    window, holdout, cases, trained = shop
    assert len(cases) > 100
    hits = served_hits(trained, window, holdout, cases, 10, interest=INTEREST)
    some = cases[:: max(1, len(cases) // 40)]
    np.testing.assert_array_equal(served_hits(trained, window, holdout, some, 10, interest=INTEREST),
                                  expected_hits(window, some, trained, 10))
    np.testing.assert_array_equal(hits[np.searchsorted(cases, some)], expected_hits(window, some, trained, 10))
    assert 0.05 < hits.mean() < 0.95


def test_the_served_gate_sees_steps_the_search_alone_does_not(shop):
    """A version whose factor list is noise, at a weight that lets it lead: the search alone
    scores it as before, the served lists much lower."""
    window, holdout, cases, trained = shop
    noisy = replace(trained, factors=np.random.default_rng(0).standard_normal(trained.factors.shape).astype(np.float32),
                    summary={**trained.summary, "factors": {**trained.summary["factors"], "weight": 8.0}})
    auto = replace(INTEREST, factor_weight="auto")
    good = served_hits(replace(trained, summary={**trained.summary, "factors": {**trained.summary["factors"], "weight": 0.0}}),
                       window, holdout, cases, 10, interest=auto)
    bad = served_hits(noisy, window, holdout, cases, 10, interest=auto)
    assert bad.mean() < good.mean() - 0.1, (bad.mean(), good.mean())
    row_of = {item: row for row, item in enumerate(trained.item_ids)}
    rows = np.array([row_of.get(str(key), -1) for key in window.item_keys])[window.items]
    index = build_index(trained.target, "Flat")
    search_good = next_item_hits(trained.context, index, rows, window.users, window.types, window.ts, cases,
                                 params=auto)
    search_bad = next_item_hits(noisy.context, index, rows, window.users, window.types, window.ts, cases, params=auto)
    np.testing.assert_array_equal(search_good, search_bad)  # the search cannot tell them apart


def test_a_saved_version_is_served_back_as_trained(shop, tmp_path):
    window, holdout, cases, trained = shop
    loaded = TrainedModel.from_artifact(load_artifact(trained.save(tmp_path), use_gpu=False))
    assert loaded.item_ids == trained.item_ids and loaded.summary["factors"] == trained.summary["factors"]
    for name in ("context", "target", "popularity", "repeat", "neighbours", "neighbour_sims", "factors"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(trained, name))
    np.testing.assert_array_equal(served_hits(loaded, window, holdout, cases, 10, interest=INTEREST),
                                  served_hits(trained, window, holdout, cases, 10, interest=INTEREST))


def test_the_held_out_events_must_be_the_newest(shop):
    window, holdout, cases, trained = shop
    with pytest.raises(ValueError, match="newest"):
        served_hits(trained, window, np.arange(len(holdout)), cases, 10, interest=INTEREST)
    assert not served_hits(trained, window, holdout, cases[:0], 10, interest=INTEREST).size
