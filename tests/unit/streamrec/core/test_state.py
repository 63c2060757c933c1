import numpy as np
import pytest

from streamrec.core.state import RecentEvent, StateDecodeError, UserState, decode_state, encode_state


def test_round_trip_keeps_everything():
    state = UserState(
        vector=np.arange(5, dtype=np.float32) / 3,
        last_ts=1700000000.25,
        n_events=42,
        model_version="v000003",
        recent=(RecentEvent("e1", "sku-1", "view", 1.0), RecentEvent("e2", "skü-2", "purchase", 2.5)),
        purchased=("skü-2",),
        partition=3,
        offset=123456789012,
    )
    back = decode_state(encode_state(state))
    np.testing.assert_array_equal(back.vector, state.vector)
    assert (back.last_ts, back.n_events, back.model_version) == (state.last_ts, 42, "v000003")
    assert back.recent == state.recent
    assert back.purchased == state.purchased
    assert (back.partition, back.offset) == (3, 123456789012)


def test_empty_state_round_trip():
    state = UserState(np.zeros(3, np.float32), None, 0, "v000001")
    back = decode_state(encode_state(state))
    assert back.last_ts is None and back.recent == () and back.purchased == ()
    assert (back.partition, back.offset) == (-1, -1)


def test_non_finite_vector_is_refused():
    with pytest.raises(ValueError, match="finite"):
        UserState(np.array([np.nan, 1.0], np.float32), None, 0, "v1")


@pytest.mark.parametrize("raw", [b"", b"garbage", b"\x00" * 40])
def test_garbage_is_a_decode_error(raw):
    with pytest.raises(StateDecodeError):
        decode_state(raw)


# --------------------------------------------------------------------------- the columnar history

import struct  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from streamrec.core.state import History  # noqa: E402

TYPES = ("view", "click", "add_to_cart", "favorite", "purchase")
ids = st.text(min_size=1, max_size=6).filter(lambda s: s.strip() and not any(c < " " for c in s))
events = st.lists(st.builds(RecentEvent, ids, ids, st.sampled_from(TYPES), st.floats(0, 2e9)), max_size=12)


@settings(max_examples=300, deadline=None)
@given(events, events, st.integers(1, 10))
def test_history_behaves_like_the_list_of_its_events(old, new, limit):
    """The column operations agree with a plain list of events (the independent expectation)."""
    history = History.of(old).extended([e.event_id for e in new], [e.item_id for e in new],
                                       bytes(TYPES.index(e.type) for e in new), [e.ts for e in new], limit=limit)
    expected = (old + new)[-limit:] if new else old
    assert list(history) == expected and history == tuple(expected) and len(history) == len(expected)
    assert history.last_event_id == (expected[-1].event_id if expected else None)
    for probe in {e.event_id for e in old + new} | {"x", "e"}:
        assert history.has_event(probe) == any(e.event_id == probe for e in expected)
    state = UserState(np.ones(2, np.float32), 1.0, len(expected), "v1", recent=expected)
    assert decode_state(encode_state(state)).recent == history


def encode_format_2(state: UserState) -> bytes:
    """The previous layout (event and item ids interleaved in one list), written independently."""
    version = state.model_version.encode()
    ids = "\x1f".join(part for e in state.recent for part in (e.event_id, e.item_id)).encode()
    header = struct.pack("<HHIQdiqHHH", 0x5352, 2, len(state.vector), state.n_events, state.last_ts, state.partition,
                         state.offset, len(version), len(state.recent), len(state.purchased))
    return b"".join([header, version, state.vector.astype(np.float32).tobytes(),
                     bytes(TYPES.index(e.type) for e in state.recent),
                     struct.pack(f"<{len(state.recent)}d", *(e.ts for e in state.recent)),
                     struct.pack("<I", len(ids)), ids, "\x1f".join(state.purchased).encode()])


def test_states_of_the_previous_format_are_still_read():
    state = UserState(np.arange(3, dtype=np.float32), 5.0, 2, "v7",
                      recent=(RecentEvent("e1", "a", "view", 1.0), RecentEvent("e2", "b", "purchase", 2.0)),
                      purchased=("b",), partition=1, offset=9)
    back = decode_state(encode_format_2(state))
    assert back.recent == state.recent and back.purchased == ("b",) and (back.partition, back.offset) == (1, 9)


def test_a_truncated_state_is_a_decode_error():
    raw = encode_state(UserState(np.ones(4, np.float32), 1.0, 1, "v1", recent=(RecentEvent("e1", "a", "view", 1.0),)))
    for cut in range(1, len(raw) - 1, 3):
        with pytest.raises(StateDecodeError):
            decode_state(raw[:cut])


def test_taste_vector_round_trips_and_a_state_without_one_keeps_format_3():
    base = UserState(np.arange(4, dtype=np.float32), 5.0, 2, "v000001",
                     recent=(RecentEvent("e1", "sku-1", "view", 1.0),), purchased=("sku-9",))
    plain = encode_state(base)
    assert plain[2:4] == (3).to_bytes(2, "little")  # the format without taste, byte for byte
    assert encode_state(UserState(**{**base.__dict__, "taste": np.ones(4, np.float32)}))[2:4] == (4).to_bytes(2, "little")
    assert decode_state(plain).taste is None
    tasted = UserState(**{**base.__dict__, "taste": np.array([0.5, -1.0, 2.0, 0.0], np.float32)})
    raw = encode_state(tasted)
    back = decode_state(raw)
    np.testing.assert_array_equal(back.taste, [0.5, -1.0, 2.0, 0.0])
    np.testing.assert_array_equal(back.vector, base.vector)
    assert (back.recent, back.purchased, back.last_ts) == (base.recent, base.purchased, 5.0)
    with pytest.raises(StateDecodeError):
        decode_state(raw[: len(raw) - len(plain) + 20])  # cut inside the taste vector


def test_non_finite_taste_is_refused():
    with pytest.raises(ValueError, match="taste"):
        UserState(np.zeros(2, np.float32), None, 0, "v1", taste=np.array([np.inf, 0.0], np.float32))
