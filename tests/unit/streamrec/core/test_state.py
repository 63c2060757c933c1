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


def test_taste_vector_round_trips_and_a_state_without_one_keeps_format_2():
    base = UserState(np.arange(4, dtype=np.float32), 5.0, 2, "v000001",
                     recent=(RecentEvent("e1", "sku-1", "view", 1.0),), purchased=("sku-9",))
    plain = encode_state(base)
    assert plain[2:4] == (2).to_bytes(2, "little")  # the format before taste, byte for byte
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
