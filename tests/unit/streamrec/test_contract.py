import json
import math
from pathlib import Path

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.contract import (
    EVENT_TYPES,
    Event,
    InvalidEvent,
    Recommendation,
    ScoredItem,
    decode_dead_letter,
    decode_event,
    decode_recommendation,
    encode_dead_letter,
    encode_event,
    encode_recommendation,
)

SCHEMAS = Path(__file__).resolve().parents[3] / "docs" / "schemas"
NOW = 1_800_000_000.0


def schema(name):
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


GOOD = {"event_id": "e1", "user_id": "u1", "item_id": "sku-1", "type": "view", "ts": 1_700_000_000}


def test_round_trip_and_schema_agree():
    event = Event("e1", "u1", "sku-1", "add_to_cart", 1.7e9, session_id="s", price=9.5, category="c", query="q")
    raw = encode_event(event)
    jsonschema.validate(orjson.loads(raw), schema("event"))
    assert decode_event(raw, now=NOW) == event


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"type": "teleport"}, "unknown_type"),
        ({"ts": -1}, "bad_timestamp"),
        ({"ts": NOW + 3 * 86400}, "future_timestamp"),
        ({"ts": "yesterday"}, "wrong_type"),
        ({"ts": True}, "wrong_type"),
        ({"user_id": 17}, "wrong_type"),
        ({"user_id": ""}, "empty_string"),
        ({"user_id": "   "}, "empty_string"),
        ({"item_id": "x" * 300}, "string_too_long"),
        ({"price": -3}, "bad_price"),
        ({"colour": "red"}, "unknown_field"),
        ({"event_id": None}, "missing_field"),
    ],
)
def test_invalid_events_have_machine_readable_reasons(change, reason):
    payload = {**GOOD, **change}
    with pytest.raises(InvalidEvent) as info:
        decode_event(orjson.dumps(payload), now=NOW)
    assert info.value.reason == reason
    if reason == "future_timestamp":  # the schema cannot know the clock: it accepts any ts >= 0
        jsonschema.validate(payload, schema("event"))
    else:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(payload, schema("event"))


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"{not json", "malformed_json"),
        (b"\xff\xfe\x00garbage", "not_utf8"),
        (b"[1, 2]", "not_an_object"),
        (None, "empty_payload"),
        (b"", "empty_payload"),
        (b"x" * (1024 * 1024), "payload_too_large"),
        (b'{"event_id": "e", "user_id": "u", "item_id": "i", "type": "view", "ts": NaN}', "malformed_json"),
    ],
)
def test_bad_bytes(raw, reason):
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw, now=NOW)
    assert info.value.reason == reason


def test_nan_timestamp_is_rejected_when_parsed_as_float():
    from streamrec.contract import event_from_dict

    with pytest.raises(InvalidEvent) as info:
        event_from_dict({**GOOD, "ts": math.nan}, now=NOW)
    assert info.value.reason == "not_finite"


def test_recommendation_round_trip_matches_schema():
    rec = Recommendation("u1", (ScoredItem("a", 0.5), ScoredItem("b", 0.25)), "v000001", "e9", 1.7e9, 1.7e9 + 0.01)
    raw = encode_recommendation(rec)
    jsonschema.validate(orjson.loads(raw), schema("recommendation"))
    assert decode_recommendation(raw) == rec


def test_dead_letter_keeps_original_bytes():
    raw = b"\xff\x00 not an event"
    letter = encode_dead_letter(raw, "not_utf8", "bad bytes", topic="events", partition=2, offset=99)
    jsonschema.validate(orjson.loads(letter), schema("dead-letter"))
    back = decode_dead_letter(letter)
    assert back["raw"] == raw and back["reason"] == "not_utf8" and back["offset"] == 99


ids = st.text(min_size=1, max_size=40).filter(lambda s: s.strip())


@settings(max_examples=200, deadline=None)
@given(ids, ids, ids, st.sampled_from(EVENT_TYPES), st.floats(0, NOW, allow_nan=False))
def test_any_valid_event_round_trips(event_id, user_id, item_id, kind, ts):
    event = Event(event_id, user_id, item_id, kind, ts)
    assert decode_event(encode_event(event), now=NOW) == event


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_invalid_event(raw):
    try:
        decode_event(raw, now=NOW)
    except InvalidEvent as exc:
        assert exc.reason


from streamrec.contract import _decode_slowly, _fast_decode  # noqa: E402

fields = st.sampled_from(["event_id", "user_id", "item_id", "type", "ts", "session_id", "price", "category", "query", "x"])
values = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10**12), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5), st.text(min_size=250, max_size=260), st.sampled_from(["view", "purchase", " ", "\u00a0", "sku-1"]),
)


def outcome(fn, raw):
    try:
        return fn(raw, NOW)
    except InvalidEvent as exc:
        return exc.reason


@settings(max_examples=1500, deadline=None)
@given(st.dictionaries(fields, values, max_size=9), st.fixed_dictionaries({}, optional=GOOD.copy() and {
    k: st.just(v) for k, v in GOOD.items()}))
def test_fast_decoder_accepts_only_what_the_validator_accepts(extra, base):
    raw = orjson.dumps({**base, **extra})
    fast = _fast_decode(raw, NOW)
    slow = outcome(_decode_slowly, raw)
    if fast is not None:
        assert fast == slow


def test_fast_decoder_takes_well_formed_events():
    event = Event("e1", "u1", "sku-1", "purchase", 1.7e9, session_id="s", price=3, category="c")
    assert _fast_decode(encode_event(event), NOW) == event
    assert _fast_decode(orjson.dumps({**GOOD, "type": "teleport"}), NOW) is None
