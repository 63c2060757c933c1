"""The naive baseline does the worker's work, only one event at a time."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from indexing.artifact import load_artifact, save_artifact
from producers.synthetic import SyntheticShop
from streamrec.benchmarks.naive_agent import handle_event
from streamrec.contract import encode_event
from streamrec.core.batch import Message, process_batch
from streamrec.core.interest import InterestParams

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def shop_model(tmp_path_factory):
    shop = SyntheticShop(items=200, users=30, seed=3)
    rng = np.random.default_rng(1)
    folder = tmp_path_factory.mktemp("m")
    save_artifact(folder, list(shop.item_ids), rng.standard_normal((200, 8)), rng.standard_normal((200, 8)))
    events = list(shop.events(400, start_ts=1_700_000_000.0))
    messages = [Message(e.user_id.encode(), encode_event(e), 0, n) for n, e in enumerate(events)]
    return load_artifact(folder, use_gpu=False), messages


def run_naive(messages, model, params):
    store, recs, outcomes = {}, {}, []
    for message in messages:
        outcome = handle_event(message, store.get, model, params, now=NOW)
        if outcome.state is not None:
            store[orjson.loads(message.value)["user_id"]] = outcome.state
        if outcome.recommendation is not None:
            recs[outcome.recommendation.event_id] = outcome.recommendation
        outcomes.append(outcome)
    return store, recs, outcomes


def run_worker(messages, model, params, batch):
    store, recs = {}, {}
    for start in range(0, len(messages), batch):
        result = process_batch(messages[start : start + batch], lambda u, _: store.get(u), model, params, now=NOW)
        store.update({user: state for user, (state, _) in result.states.items()})
        recs.update({r.event_id: r for r in result.recommendations})
    return store, recs


@pytest.mark.parametrize("batch", [1, 64])
def test_same_states_and_recommendations_as_the_worker_core(shop_model, batch):
    model, messages = shop_model
    params = InterestParams(k=5)
    naive_states, naive_recs, _ = run_naive(messages, model, params)
    states, recs = run_worker(messages, model, params, batch)
    assert naive_states.keys() == states.keys()
    for user, state in states.items():
        other = naive_states[user]
        np.testing.assert_allclose(other.vector, state.vector, rtol=1e-5, atol=1e-6)
        assert (other.recent, other.purchased, other.n_events, other.offset) == (
            state.recent, state.purchased, state.n_events, state.offset)
    assert set(recs) <= set(naive_recs)
    if batch == 1:
        assert set(recs) == set(naive_recs)
    for event_id, rec in recs.items():
        assert [i.item_id for i in naive_recs[event_id].items] == [i.item_id for i in rec.items]


def test_replayed_and_bad_events_are_handled_like_the_worker(shop_model):
    model, messages = shop_model
    params = InterestParams(k=5)
    store, _, _ = run_naive(messages[:50], model, params)
    replay = handle_event(messages[10], store.get, model, params, now=NOW)
    assert replay.duplicate and replay.state is None
    bad = handle_event(Message(b"u-x", b"{not json", 0, 999), store.get, model, params, now=NOW)
    assert bad.rejected is not None and bad.rejected.reason == "malformed_json"
    wrong_key = handle_event(Message(b"someone-else", messages[0].value, 0, 1000), store.get, model, params, now=NOW)
    assert wrong_key.rejected.reason == "key_mismatch"
