"""The served-model adapter must be the worker: same vectors, same lists, same model swaps."""

from dataclasses import replace

import numpy as np
import pytest

from indexing.artifact import load_artifact, save_artifact
from indexing.train import TrainParams, fit_targets, interactions_from_arrays
from streamrec.contract import EVENT_TYPES, encode_event
from streamrec.core.batch import Message, process_batch
from streamrec.core.interest import InterestParams, fold_events
from streamrec.evaluation.data import EventLog, leave_one_out
from streamrec.evaluation.served import ServedModel

NOW = 2_000_000_000.0
PARAMS = TrainParams(dim=12, solver="randomized")


@pytest.fixture
def mixed_log(make_log) -> EventLog:
    """The toy shop with every event type and uneven gaps (so time decay matters)."""
    base = make_log(n_users=120, seed=4)
    rng = np.random.default_rng(5)
    types = [EVENT_TYPES[t] for t in rng.integers(0, len(EVENT_TYPES), len(base))]
    ts = np.sort(rng.uniform(1.6e9, 1.6e9 + 40 * 86400, len(base)))
    return EventLog.from_arrays(
        [base.user_ids[u] for u in base.users], [base.item_ids[i] for i in base.items], types, ts, base.event_ids
    )


class Store(dict):
    def load(self, user_id, position):
        return self.get(user_id)


def worker_run(store: Store, log: EventLog, model, params: InterestParams, batch: int = 64) -> dict:
    """Feed ``log``'s events on the model's items to the worker's process_batch; the last
    recommendation per user. The adapter serves a fixed catalog (events on items the model does
    not know are not applied); the worker's new items are tested in tests/unit/streams."""
    latest = {}
    events = [e for e in log.events() if e.item_id in model.row_of]
    for start in range(0, len(events), batch):
        messages = [Message(e.user_id.encode(), encode_event(e), 0, start + n) for n, e in enumerate(events[start : start + batch])]
        result = process_batch(messages, store.load, model, params, now=NOW)
        for user_id, (state, _) in result.states.items():
            store[user_id] = state
        for rec in result.recommendations:
            latest[rec.user_id] = [i.item_id for i in rec.items]
    return latest


def artifact(tmp_path, served: ServedModel):
    extras = {"repeat": served.trained.repeat, "popularity": served.trained.popularity}
    if served.trained.taste is not None:
        extras["taste"] = served.trained.taste
    if served.trained.neighbours is not None:
        extras["neighbours"], extras["neighbour_sims"] = served.trained.neighbours, served.trained.neighbour_sims
    if served.trained.factors is not None:
        extras["factors"] = served.trained.factors
    save_artifact(tmp_path, served.model_item_ids, served.context, served.target, training=served.summary,
                  extras=extras)
    return load_artifact(tmp_path, use_gpu=False)


def same_lists(log: EventLog, latest: dict, users: np.ndarray, ours: np.ndarray) -> int:
    """Assert the worker's last list equals the adapter's for every user the worker listed;
    how many were compared."""
    compared = 0
    for user, rows in zip(users.tolist(), ours):
        if log.user_ids[user] in latest:
            assert latest[log.user_ids[user]] == [log.item_ids[r] for r in rows if r >= 0]
            compared += 1
    return compared


def purchased(log: EventLog, user: int) -> np.ndarray:
    mine = (log.users == user) & (log.types == EVENT_TYPES.index("purchase"))
    return np.unique(log.items[mine])


def test_user_vectors_are_the_pure_update_rule_over_each_history(mixed_log):
    log = mixed_log
    served = ServedModel(PARAMS)
    cut = len(log) // 2
    served.fit(log.take(slice(0, cut)))
    served.observe(log.take(slice(cut, None)))
    for user in range(log.n_users):
        mine = np.flatnonzero(log.users == user)
        history = [(int(served.model_row[log.items[n]]), EVENT_TYPES[log.types[n]], float(log.ts[n]))
                   for n in mine if served.model_row[log.items[n]] >= 0]
        expected, _ = fold_events(history, served.context, served.interest_params)
        np.testing.assert_allclose(served.user_vector(user), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("taste_decay", "knn_weight", "factor_weight", "factor_repeats"),
                         [(0.0, 0.0, 0.0, False), (0.9, 0.0, 0.0, False), (0.0, 0.5, 0.0, False), (0.9, 0.5, 0.0, False),
                          (0.0, 0.0, 1.0, False), (0.0, 0.5, 2.0, False), (0.0, 0.5, 2.0, True)])
def test_recommendations_equal_the_worker_including_a_model_swap(tmp_path, mixed_log, taste_decay, knn_weight,
                                                                 factor_weight, factor_repeats):
    log = mixed_log
    params = InterestParams(k=10, taste_decay=taste_decay, knn_weight=knn_weight, factor_weight=factor_weight,
                            factor_depth=20, factor_repeats=factor_repeats)
    a, b = len(log) // 3, 2 * len(log) // 3
    served = ServedModel(replace(PARAMS, factors=6, factor_iterations=5), params)
    served.fit(log.take(slice(0, a)))
    served.observe(log.take(slice(a, b)))
    first = artifact(tmp_path / "models", served)
    assert (first.extras.get("taste") is not None) == (taste_decay > 0)
    assert (first.extras.get("factors") is not None) == (factor_weight > 0)

    store = Store()
    latest = worker_run(store, log.take(slice(0, b)), first, params)
    users = np.array(sorted({int(u) for u in log.users[:b]}))
    ours = served.recommend(users, 10, [purchased(log.take(slice(0, b)), u) for u in users])
    unknown = [u for u in users if not any(served.model_row[log.items[:b][log.users[:b] == u]] >= 0)]
    compared = 0
    for user, rows in zip(users.tolist(), ours):
        if user in unknown:
            continue  # all its events were on unknown items: not fed to the worker
        assert latest[log.user_ids[user]] == [log.item_ids[r] for r in rows if r >= 0]
        compared += 1
    assert compared > 80
    for name in ("knn_weight", "factor_weight", "factor_repeats"):  # each changes lists: the equality covers it
        if getattr(params, name):
            served.interest_params = replace(params, **{name: False if name == "factor_repeats" else 0.0})
            plain = served.recommend(users, 10, [purchased(log.take(slice(0, b)), u) for u in users])
            served.interest_params = params
            assert (plain != ours).any(axis=1).sum() > 10

    # A new version trained on everything so far; then more events.
    served.fit(log.take(slice(0, b)))
    second = artifact(tmp_path / "models", served)
    assert second.version != first.version
    served.observe(log.take(slice(b, None)))
    latest = worker_run(store, log.take(slice(b, None)), second, params)
    touched = np.array(sorted({int(u) for u in log.users[b:]}))
    ours = served.recommend(touched, 10, [purchased(log, u) for u in touched])
    assert same_lists(log, latest, touched, ours) > 20


def test_regression_targets_equal_a_direct_least_squares_fit(mixed_log):
    log = mixed_log
    data = interactions_from_arrays(
        np.asarray(log.user_ids)[log.users], np.asarray(log.item_ids)[log.items], log.types, log.ts
    )
    rng = np.random.default_rng(0)
    context = rng.standard_normal((data.n_items, 6)).astype(np.float32)
    params = replace(PARAMS, targets="regression", ridge=0.05, popularity_beta=0.3)
    interest = InterestParams()
    got = fit_targets(data, context, params, interest)

    samples, answers = [], []
    for user in range(len(data.user_ids)):
        lo, hi = data.user_ptr[user], data.user_ptr[user + 1]
        events = [(int(data.items[n]), EVENT_TYPES[data.types[n]], float(data.ts[n])) for n in range(lo, hi)]
        for t in range(1, len(events)):
            if events[t][0] == events[t - 1][0]:
                continue  # a repeat of the previous item is not a sample
            samples.append(fold_events(events[:t], context, interest)[0])
            answers.append(events[t][0])
    z = np.array(samples, dtype=np.float64)
    y = np.zeros((len(answers), data.n_items))
    y[np.arange(len(answers)), answers] = 1.0
    gram = z.T @ z
    ridge = 0.05 * np.trace(gram) / 6
    expected = np.linalg.solve(gram + ridge * np.eye(6), z.T @ y).T
    counts = np.bincount(data.items, minlength=data.n_items)
    expected /= counts[:, None] ** 0.3
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)


def test_served_model_learns_the_toy_shop(toy_log):
    split = leave_one_out(toy_log)
    for params in (PARAMS, replace(PARAMS, targets="regression")):
        from streamrec.evaluation.protocols import run_leave_one_out

        outcome = run_leave_one_out(ServedModel(params), toy_log, split=split)
        assert outcome.metrics["HR@10"] > 0.4, params


def test_a_grid_over_serving_settings_trains_each_version_once(mixed_log):
    from streamrec.evaluation.served import trained_once

    data = interactions_from_arrays(np.asarray(mixed_log.user_ids)[mixed_log.users],
                                    np.asarray(mixed_log.item_ids)[mixed_log.items], mixed_log.types, mixed_log.ts)
    first = trained_once(data, PARAMS, InterestParams())
    assert trained_once(data, PARAMS, InterestParams(knn_weight=0.5, repeat_weight=1.0, pop_items=3)) is first
    assert trained_once(data, PARAMS, InterestParams(event_decay=0.7)) is not first  # the targets' fit reads it
    assert trained_once(data, replace(PARAMS, ridge=1.0), InterestParams()) is not first
    fewer = interactions_from_arrays(np.asarray(mixed_log.user_ids)[mixed_log.users][:-1],
                                     np.asarray(mixed_log.item_ids)[mixed_log.items][:-1], mixed_log.types[:-1],
                                     mixed_log.ts[:-1])
    assert trained_once(fewer, PARAMS, InterestParams()) is not first
    branded = {item_id: (("brand", item_id[:1]),) for item_id in data.item_ids}  # the catalog's features count too
    assert trained_once(replace(data, item_features=branded), PARAMS, InterestParams()) is not first


def test_auto_serves_the_weight_each_version_carries(tmp_path, mixed_log):
    log = mixed_log
    params = InterestParams(k=10, factor_weight="auto", factor_depth=20)
    b = 2 * len(log) // 3
    served = ServedModel(replace(PARAMS, factors=6, factor_iterations=5), params)
    served.fit(log.take(slice(0, b)))
    assert served.summary["factors"]["choice"]["users"] > 50  # chosen on the log's held-out events
    users = np.array(sorted({int(u) for u in log.users[:b]}))
    exclude = [purchased(log.take(slice(0, b)), u) for u in users]
    lists = {}
    for weight, repeats in ((0.0, False), (1.0, False), (1.0, True)):  # as if the choice had been each: the
        served.summary = {**served.summary,  # worker reads the version's own
                          "factors": {**served.summary["factors"], "weight": weight, "repeats": repeats}}
        version = artifact(tmp_path / f"models-{weight}-{repeats}", served)
        latest = worker_run(Store(), log.take(slice(0, b)), version, params)
        lists[weight, repeats] = served.recommend(users, 10, exclude)
        assert same_lists(log, latest, users, lists[weight, repeats]) > 80
    assert (lists[0.0, False] != lists[1.0, False]).any(axis=1).sum() > 10
    assert (lists[1.0, True] != lists[1.0, False]).any(axis=1).sum() > 10
