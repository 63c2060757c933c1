"""The whole loop on the real broker: events in, worker (either engine), FAISS top-k out."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import orjson
import pytest

from indexing.artifact import load_artifact
from indexing.train import TrainParams, interactions_from_events, train_model
from producers.publisher import EventPublisher
from producers.synthetic import SyntheticShop
from streamrec.contract import decode_dead_letter, decode_recommendation
from streamrec.core.interest import InterestParams, fold_events
from streamrec.harness.topics import read_topic
from streams.tables import read_user_states

pytestmark = pytest.mark.integration

N_USERS = 300


@pytest.fixture(scope="module")
def shop_model(tmp_path_factory):
    """A synthetic shop, a model trained on its first 30k events, and the next 6k events."""
    shop = SyntheticShop(items=1500, users=N_USERS, seed=11)
    stream = list(shop.events(36_000, start_ts=1_700_000_000.0))
    train, live = stream[:30_000], stream[30_000:]
    models = tmp_path_factory.mktemp("models")
    train_model(interactions_from_events(train), TrainParams(dim=32)).save(models)
    model = load_artifact(models, use_gpu=False)
    live = [e for e in live if e.item_id in model.row_of]
    return models, model, live


@pytest.mark.parametrize("engine", ["batch", "faust"])
def test_every_user_gets_exact_recommendations_and_bad_events_are_dead_lettered(
    bootstrap, topics, start_worker, shop_model, engine
):
    models, model, live = shop_model
    events = live
    users = {e.user_id for e in events}
    assert len(users) >= 200

    worker = start_worker(models, partitions=2, engine=engine)
    half = len(events) // 2
    broken = b'{"event_id": "broken", "user_id": '
    teleport = orjson.dumps({**events[half].to_dict(), "event_id": "teleport", "type": "teleport"})
    with EventPublisher(bootstrap, topics.events) as publisher:
        for event in events[:half]:
            publisher.publish(event)
        publisher.publish_raw(b"u-bad", broken)
        publisher.publish_raw(events[half].user_id.encode(), teleport)
        for event in events[half:]:
            publisher.publish(event)

    last_event = {}
    for event in events:
        last_event[event.user_id] = event.event_id

    def all_caught_up(messages):
        latest = {}
        for _, value in messages:
            rec = decode_recommendation(value)
            latest[rec.user_id] = rec.event_id
        return all(latest.get(u) == last_event[u] for u in users)

    messages = read_topic(bootstrap, topics.recommendations, done=all_caught_up, timeout=180)
    recs = [decode_recommendation(v) for _, v in messages]

    # Every user got a recommendation; each list is k long and best-first.
    by_user = defaultdict(list)
    for rec in recs:
        by_user[rec.user_id].append(rec)
    assert set(by_user) == users
    params = InterestParams()
    for rec in recs:
        assert len(rec.items) == params.k
        scores = [i.score for i in rec.items]
        assert scores == sorted(scores, reverse=True)
        assert rec.model_version == model.version

    # No list contains an item the user had purchased by the triggering event.
    position = {e.event_id: n for n, e in enumerate(events)}
    per_user_events = defaultdict(list)
    for event in events:
        per_user_events[event.user_id].append(event)
    for rec in recs:
        upto = position[rec.event_id]
        purchased = {e.item_id for e in per_user_events[rec.user_id] if e.type == "purchase" and position[e.event_id] <= upto}
        assert not purchased & {i.item_id for i in rec.items}, rec

    # The malformed messages are on the dead-letter topic with their reasons and bytes.
    letters = [decode_dead_letter(v) for _, v in read_topic(bootstrap, topics.dlq, done=lambda m: len(m) >= 2, timeout=60)]
    assert sorted((d["raw"], d["reason"]) for d in letters) == sorted([(broken, "malformed_json"), (teleport, "unknown_type")])

    # The table holds exactly the pure function applied to each user's events in order, and
    # the last recommendation equals an exact offline search with that vector.
    assert worker.stop() == 0
    states = read_user_states(worker.config.data_dir)
    assert set(states) == users
    target = model.index.reconstruct_n(0, model.n_items)
    for user_id in users:
        history = [(model.row_of[e.item_id], e.type, e.ts) for e in per_user_events[user_id]]
        expected, last_ts = fold_events(history, model.context, params)
        state = states[user_id]
        np.testing.assert_allclose(state.vector, expected, rtol=1e-5, atol=1e-5)
        assert state.last_ts == last_ts and state.n_events == len(history)
        scores = target @ expected
        # The repeat step, written out: the items of the user's last 32 events get
        # repeat_weight * lift * by_age[age] (age 0 = the newest event).
        for age, event in enumerate(reversed(per_user_events[user_id][-32:])):
            row = model.row_of[event.item_id]
            by_age = model.meta["training"]["repeat_by_age"]
            scores[row] += params.repeat_weight * model.extras["repeat"][row] * by_age[age]
        # The neighbour step, written out: each neighbour of the items of the user's last
        # knn_events events gets knn_weight * knn_decay ** age * its similarity; the pop_items
        # items with the most training events get pop_weight * count / the largest count.
        near, sims = model.extras["neighbours"], model.extras["neighbour_sims"]
        for age, event in enumerate(reversed(per_user_events[user_id][-params.knn_events:])):
            for j, s in zip(near[model.row_of[event.item_id]], sims[model.row_of[event.item_id]]):
                if j >= 0:
                    scores[j] += params.knn_weight * params.knn_decay**age * s
        counts = model.extras["popularity"]
        if params.pop_weight > 0:
            for j in np.argsort(-counts, kind="stable")[: params.pop_items]:
                scores[j] += params.pop_weight * counts[j] / counts.max()
        for item in {e.item_id for e in per_user_events[user_id] if e.type == "purchase"}:
            scores[model.row_of[item]] = -np.inf
        top = np.argsort(-scores, kind="stable")[: params.k]
        served = by_user[user_id][-1]
        np.testing.assert_allclose([i.score for i in served.items], scores[top], rtol=1e-4, atol=1e-5)
        # Same items, wherever the ranking is not a tie with the k-th score.
        clear = scores[top] > scores[top][-1] + 1e-4
        assert {i.item_id for i, c in zip(served.items, clear) if c} == {model.item_ids[r] for r, c in zip(top, clear) if c}
