"""Erasure requests in the pure core: the user is forgotten at the request's place in the batch."""

import numpy as np
import pytest

from indexing.artifact import load_artifact, save_artifact
from streamrec.contract import ErasureRequest, Event, encode_erasure, encode_event
from streamrec.core.batch import Message, decode_batch, process_batch
from streamrec.core.interest import InterestParams, fold_events

NOW = 1_800_000_000.0
PARAMS = InterestParams(k=5)


@pytest.fixture
def model(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"sku-{i}" for i in range(30)]
    save_artifact(tmp_path / "m", ids, rng.standard_normal((30, 6)), rng.standard_normal((30, 6)))
    return load_artifact(tmp_path / "m", use_gpu=False)


def event_msg(event: Event, offset: int) -> Message:
    return Message(event.user_id.encode(), encode_event(event), 0, offset)


def erase_msg(user_id: str, offset: int, key: bytes | None = None) -> Message:
    return Message(user_id.encode() if key is None else key, encode_erasure(ErasureRequest(user_id, NOW)), 0, offset)


def run(store: dict, messages, model):
    result = process_batch(messages, lambda user_id, position: store.get(user_id), model, PARAMS, now=NOW)
    for user_id, (state, _) in result.states.items():
        store[user_id] = state
    for user_id in result.erased:
        store.pop(user_id, None)
    return result


def test_an_erasure_forgets_the_stored_state_and_the_events_before_it_and_later_events_start_afresh(model):
    store: dict = {}
    old = [Event(f"old{n}", "u1", f"sku-{n}", "purchase", 10.0 + n) for n in range(3)]
    run(store, [event_msg(e, n) for n, e in enumerate(old)], model)
    assert store["u1"].n_events == 3
    before = Event("b", "u1", "sku-5", "view", 20.0)
    after = [Event("a1", "u1", "sku-7", "view", 30.0), Event("a2", "u1", "sku-8", "click", 31.0)]
    other = Event("o", "u2", "sku-9", "view", 21.0)
    messages = [event_msg(before, 3), event_msg(other, 4), erase_msg("u1", 5), *(event_msg(e, 6 + n) for n, e in enumerate(after))]
    result = run(store, messages, model)
    assert result.erased == {} and not result.rejected
    state = store["u1"]
    expected, last_ts = fold_events([(model.row_of[e.item_id], e.type, e.ts) for e in after], model.context, PARAMS)
    np.testing.assert_allclose(state.vector, expected, rtol=1e-6)
    assert state.n_events == 2 and state.last_ts == last_ts and state.purchased == ()
    assert [r.event_id for r in state.recent] == ["a1", "a2"]
    assert {r.user_id: r.event_id for r in result.recommendations} == {"u1": "a2", "u2": "o"}
    # The fresh profile equals a never-seen user's with the same events.
    fresh = run({}, [event_msg(e, 6 + n) for n, e in enumerate(after)], model)
    assert fresh.recommendations[0].items == next(r for r in result.recommendations if r.user_id == "u1").items


def test_an_erasure_with_no_event_after_it_deletes_the_user_and_sends_no_list(model):
    store: dict = {}
    run(store, [event_msg(Event("e0", "u1", "sku-1", "view", 1.0), 0)], model)
    result = run(store, [event_msg(Event("e1", "u1", "sku-2", "view", 2.0), 1), erase_msg("u1", 2)], model)
    assert result.erased == {"u1": 1} and "u1" not in store
    assert result.recommendations == [] and result.states == {}
    # Forgetting a user nobody knows is harmless: the same deletion.
    assert run(store, [erase_msg("nobody", 3)], model).erased == {"nobody": 0}


def test_erasure_requests_that_break_the_contract_are_rejected(model):
    bad_json = Message(b"u1", b'{"erase_user_id": "u1", "requested_at": ', 0, 0)
    no_time = Message(b"u1", b'{"erase_user_id": "u1"}', 0, 1)
    extra = Message(b"u1", b'{"erase_user_id": "u1", "requested_at": 1, "why": "x"}', 0, 2)
    result = process_batch([erase_msg("u1", 3, key=b"u2"), bad_json, no_time, extra], lambda u, p: None, model, PARAMS,
                           now=NOW)
    assert [(r.position, r.reason) for r in result.rejected] == [
        (0, "key_mismatch"), (1, "malformed_json"), (2, "missing_field"), (3, "unknown_field")]
    assert result.erased == {}
    # Where only events are read (serve's trending counts), a request is not an event.
    _, rejected = decode_batch([erase_msg("u1", 0)], now=NOW)
    assert [r.reason for r in rejected] == ["erasure_request"]
