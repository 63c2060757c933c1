import numpy as np
import orjson
import pytest

from indexing.artifact import load_artifact, save_artifact
from streamrec.contract import Event, encode_event
from streamrec.core.batch import Message, process_batch
from streamrec.core.interest import InterestParams, fold_events

NOW = 1_800_000_000.0


@pytest.fixture
def model(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"sku-{i}" for i in range(30)]
    save_artifact(tmp_path / "m", ids, rng.standard_normal((30, 6)), rng.standard_normal((30, 6)))
    return load_artifact(tmp_path / "m", use_gpu=False)


def msg(event: Event, offset: int, partition: int = 0) -> Message:
    return Message(event.user_id.encode(), encode_event(event), partition, offset)


class Store(dict):
    def load(self, user_id, position):
        return self.get(user_id)

    def apply(self, result):
        for user_id, (state, _) in result.states.items():
            self[user_id] = state


def run(store, messages, model, params=None):
    result = process_batch(messages, store.load, model, params or InterestParams(k=5), now=NOW)
    store.apply(result)
    return result


def test_events_of_one_user_are_coalesced_and_match_the_pure_function(model):
    params = InterestParams(k=5)
    events = [Event(f"e{i}", "u1" if i % 2 else "u2", f"sku-{i}", "view", 100.0 + i) for i in range(6)]
    store = Store()
    result = run(store, [msg(e, n) for n, e in enumerate(events)], model, params)
    assert [r.user_id for r in result.recommendations] == ["u2", "u1"]
    assert [r.event_id for r in result.recommendations] == ["e4", "e5"]
    for user_id in ("u1", "u2"):
        history = [(model.row_of[e.item_id], e.type, e.ts) for e in events if e.user_id == user_id]
        expected, _ = fold_events(history, model.context, params)
        np.testing.assert_allclose(store[user_id].vector, expected, rtol=1e-6)
        assert store[user_id].n_events == 3


def test_purchased_items_are_never_recommended(model):
    store = Store()
    first = run(store, [msg(Event("e0", "u", "sku-1", "view", 1.0), 0)], model)
    top = [i.item_id for i in first.recommendations[0].items]
    purchases = [msg(Event(f"p{n}", "u", item, "purchase", 2.0 + n), 1 + n) for n, item in enumerate(top[:3])]
    result = run(store, purchases, model)
    items = {i.item_id for i in result.recommendations[0].items}
    assert not items & set(top[:3])
    assert len(items) == 5
    assert store["u"].purchased == tuple(top[:3])


def test_bad_messages_are_rejected_with_reasons_and_the_rest_processed(model):
    good = Event("e1", "u", "sku-2", "click", 5.0)
    messages = [
        Message(b"u", b"{oops", 0, 0),
        msg(good, 1),
        Message(b"someone-else", encode_event(Event("e2", "u", "sku-2", "click", 5.0)), 0, 2),
        msg(Event("e3", "u", "sku-999", "click", 6.0), 3),
        Message(b"u", orjson.dumps({**good.to_dict(), "event_id": "e4", "ts": NOW * 2}), 0, 4),
    ]
    result = run(Store(), messages, model)
    assert [(r.position, r.reason) for r in result.rejected] == [
        (0, "malformed_json"), (2, "key_mismatch"), (4, "future_timestamp")
    ]
    # sku-999 is not in the model: a new item, accepted (never dead-lettered for that)
    assert [r.event_id for r in result.recommendations] == ["e3"]


def test_a_resent_event_is_applied_once(model):
    store = Store()
    event = Event("e1", "u", "sku-3", "purchase", 10.0)
    run(store, [msg(event, 0)], model)
    once = store["u"].vector.copy()
    result = run(store, [msg(event, 1), msg(Event("e2", "u", "sku-4", "view", 11.0), 2), msg(event, 3)], model)
    assert result.duplicates == [0, 2]
    assert store["u"].n_events == 2
    expected, _ = fold_events([(3, "purchase", 10.0), (4, "view", 11.0)], model.context, InterestParams(k=5))
    np.testing.assert_allclose(store["u"].vector, expected, rtol=1e-6)
    alone, _ = fold_events([(3, "purchase", 10.0)], model.context, InterestParams(k=5))
    np.testing.assert_allclose(once, alone, rtol=1e-6)


def test_a_replayed_offset_is_skipped_and_the_last_list_re_emitted_identically(model):
    store = Store()
    events = [Event(f"e{n}", "u", f"sku-{n}", "view", float(n)) for n in range(3)]
    first = run(store, [msg(e, n, partition=1) for n, e in enumerate(events)], model)
    state = store["u"]
    # After a crash the same offsets come again: nothing changes, the same list comes out.
    again = run(store, [msg(e, n, partition=1) for n, e in enumerate(events)], model)
    assert again.duplicates == [0, 1, 2]
    assert store["u"] is state
    assert [r.event_id for r in again.recommendations] == ["e2"]
    assert again.recommendations[0].items == first.recommendations[0].items
    # A replay that stops before the state's last event re-emits nothing.
    partial = run(store, [msg(events[0], 0, partition=1)], model)
    assert partial.recommendations == [] and partial.duplicates == [0]


def test_a_new_model_version_rebuilds_the_vector_from_recent_events(model, tmp_path):
    store = Store()
    events = [Event(f"e{n}", "u", f"sku-{n}", "click", float(n)) for n in range(4)]
    run(store, [msg(e, n) for n, e in enumerate(events)], model)
    rng = np.random.default_rng(1)
    ids = [f"sku-{i}" for i in range(30)]
    save_artifact(tmp_path / "m", ids, rng.standard_normal((30, 6)), rng.standard_normal((30, 6)))
    newer = load_artifact(tmp_path / "m", use_gpu=False)
    assert newer.version == "v000002"
    result = run(store, [msg(Event("e9", "u", "sku-9", "view", 9.0), 9)], newer)
    history = [(newer.row_of[e.item_id], e.type, e.ts) for e in events] + [(9, "view", 9.0)]
    expected, _ = fold_events(history, newer.context, InterestParams(k=5))
    np.testing.assert_allclose(store["u"].vector, expected, rtol=1e-5)
    assert result.recommendations[0].model_version == "v000002"


def test_a_non_finite_update_is_rejected_and_never_stored(model):
    store = Store()
    run(store, [msg(Event("e0", "u", "sku-1", "view", 1.0), 0)], model)
    before = store["u"]
    huge = InterestParams(k=5, event_weights={"view": 3e38, "purchase": 3e38})
    result = run(store, [msg(Event("e1", "u", "sku-2", "view", 2.0), 1), msg(Event("e2", "v", "sku-2", "view", 2.0), 2),
                         msg(Event("e3", "u", "sku-3", "purchase", 3.0), 3)], model, huge)
    # Every update overflows: u's two (from a finite state) and v's first (from none).
    assert sorted((r.position, r.reason) for r in result.rejected) == [(n, "non_finite_vector") for n in range(3)]
    assert "v" not in store
    assert store["u"] is before
    assert all(np.isfinite(s.vector).all() for s in store.values())
