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
    event_from_dict,
    list_id_for,
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
    event = Event("e1", "u1", "sku-1", "add_to_cart", 1.7e9, session_id="s", price=9.5, category="c", query="q",
                  quantity=12)
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
        ({"quantity": 0}, "bad_quantity"),
        ({"quantity": -2}, "bad_quantity"),
        ({"quantity": "12"}, "wrong_type"),
        ({"colour": "red"}, "unknown_field"),
        ({"event_id": None}, "missing_field"),
        ({"quantity": 0}, "bad_quantity"),
        ({"quantity": 2_000_000}, "bad_quantity"),
        ({"quantity": True}, "wrong_type"),
        ({"list_id": 7}, "wrong_type"),
        ({"type": "impresion"}, "unknown_type"),
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
    rec = Recommendation("u1", (ScoredItem("a", 0.5), ScoredItem("b", 0.25)), "v000001", "e9", 1.7e9, 1.7e9 + 0.01,
                         list_id_for("u1", "e9", "v000001"))
    raw = encode_recommendation(rec)
    jsonschema.validate(orjson.loads(raw), schema("recommendation"))
    assert decode_recommendation(raw) == rec
    stamped = Recommendation("u1", rec.items, "v000001", "e9", 1.7e9, 1.7e9, "abc", experiment="ab-1", variant="control")
    raw = encode_recommendation(stamped)
    jsonschema.validate(orjson.loads(raw), schema("recommendation"))
    assert decode_recommendation(raw) == stamped


def test_attribution_fields_and_impressions_round_trip_and_match_schema():
    for event in (Event("e1", "u1", "sku-1", "purchase", 1.7e9, price=9.5, list_id="0123abcd", quantity=3),
                  Event("e2", "u1", "sku-1", "impression", 1.7e9, list_id="0123abcd")):
        raw = encode_event(event)
        jsonschema.validate(orjson.loads(raw), schema("event"))
        assert decode_event(raw, now=NOW) == event
        assert event_from_dict(orjson.loads(raw), now=NOW) == event  # the slow path agrees


def test_dead_letter_keeps_original_bytes():
    raw = b"\xff\x00 not an event"
    letter = encode_dead_letter(raw, "not_utf8", "bad bytes", topic="events", partition=2, offset=99)
    jsonschema.validate(orjson.loads(letter), schema("dead-letter"))
    back = decode_dead_letter(letter)
    assert back["raw"] == raw and back["reason"] == "not_utf8" and back["offset"] == 99


ids = st.text(min_size=1, max_size=40).filter(lambda s: s.strip() and not any(c < "\x20" for c in s))


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

fields = st.sampled_from(["event_id", "user_id", "item_id", "type", "ts", "session_id", "price", "category", "query", "quantity", "x"])
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


# --------------------------------------------------------------------------- catalog records

from streamrec.contract import (  # noqa: E402
    MAX_CATALOG_BYTES,
    CatalogItem,
    InvalidCatalogItem,
    catalog_item_from_dict,
    decode_catalog_item,
    encode_catalog_item,
)

ITEM = {"item_id": "sku-1"}


def test_catalog_round_trip_and_schema_agree():
    item = CatalogItem(
        "sku-1", title="Rose hand cream", category=("Beauty", "Skin Care", "Hands"), brand="Acme", price=9.5,
        currency="GBP", available=False, attributes={"size": "50 ml", "scent": "rose"}, updated_at=1.7e9,
    )
    raw = encode_catalog_item(item)
    jsonschema.validate(orjson.loads(raw), schema("catalog-item"))
    assert decode_catalog_item(b"sku-1", raw) == item
    minimal = decode_catalog_item(b"sku-2", b'{"item_id": "sku-2"}')
    assert minimal == CatalogItem("sku-2") and minimal.available is True
    assert orjson.loads(encode_catalog_item(minimal)) == {"item_id": "sku-2", "available": True}
    jsonschema.validate(orjson.loads(encode_catalog_item(minimal)), schema("catalog-item"))


def test_catalog_shorthands_and_nulls_are_accepted_like_the_schema_says():
    # a single category string is a one-level path; a null optional field is an absent one
    payload = {"item_id": "sku-1", "category": "Beauty", "title": None, "price": 0, "attributes": None}
    jsonschema.validate(payload, schema("catalog-item"))
    item = catalog_item_from_dict(payload)
    assert item.category == ("Beauty",) and item.price == 0.0 and item.attributes == {}
    assert orjson.loads(encode_catalog_item(item))["category"] == ["Beauty"]


@pytest.mark.parametrize(
    "payload, reason",
    [
        (["sku-1"], "not_an_object"),
        ({**ITEM, "colour": "red"}, "unknown_field"),
        ({}, "missing_field"),
        ({"item_id": None}, "missing_field"),
        ({"item_id": 17}, "wrong_type"),
        ({"item_id": ""}, "empty_string"),
        ({"item_id": " \t"}, "empty_string"),
        ({"item_id": "x" * 257}, "string_too_long"),
        ({**ITEM, "title": 3}, "wrong_type"),
        ({**ITEM, "title": "t" * 1025}, "string_too_long"),
        ({**ITEM, "brand": "b" * 257}, "string_too_long"),
        ({**ITEM, "currency": ["GBP"]}, "wrong_type"),
        ({**ITEM, "category": 5}, "wrong_type"),
        ({**ITEM, "category": {"top": "Beauty"}}, "wrong_type"),
        ({**ITEM, "category": ["Beauty", 1]}, "wrong_type"),
        ({**ITEM, "category": ["Beauty", None]}, "wrong_type"),
        ({**ITEM, "category": ["Beauty", ""]}, "empty_string"),
        ({**ITEM, "category": "  "}, "empty_string"),
        ({**ITEM, "category": ["c" * 257]}, "string_too_long"),
        ({**ITEM, "category": ["level"] * 17}, "category_too_deep"),
        ({**ITEM, "attributes": ["size", "50 ml"]}, "wrong_type"),
        ({**ITEM, "attributes": {"size": 50}}, "wrong_type"),
        ({**ITEM, "attributes": {"size": None}}, "wrong_type"),
        ({**ITEM, "attributes": {"k" * 257: "v"}}, "string_too_long"),
        ({**ITEM, "attributes": {"size": "v" * 257}}, "string_too_long"),
        ({**ITEM, "attributes": {f"a{i}": "v" for i in range(65)}}, "too_many_attributes"),
        ({**ITEM, "price": "9.50"}, "wrong_type"),
        ({**ITEM, "price": True}, "wrong_type"),
        ({**ITEM, "price": -0.01}, "bad_price"),
        ({**ITEM, "available": "yes"}, "wrong_type"),
        ({**ITEM, "available": 1}, "wrong_type"),
        ({**ITEM, "available": None}, "wrong_type"),
        ({**ITEM, "updated_at": "yesterday"}, "wrong_type"),
        ({**ITEM, "updated_at": -1}, "bad_timestamp"),
    ],
)
def test_invalid_catalog_records_have_machine_readable_reasons(payload, reason):
    with pytest.raises(InvalidCatalogItem) as info:
        decode_catalog_item(b"sku-1", orjson.dumps(payload))
    assert info.value.reason == reason
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(payload, schema("catalog-item"))


@pytest.mark.parametrize(
    "payload, reason",
    [
        ({**ITEM, "price": math.nan}, "not_finite"),
        ({**ITEM, "price": math.inf}, "not_finite"),
        ({**ITEM, "updated_at": -math.inf}, "not_finite"),
        ({**ITEM, "price": 10**400}, "not_finite"),  # beyond the largest float: was an OverflowError
    ],
)
def test_non_finite_numbers_are_rejected_when_parsed_as_floats(payload, reason):
    # JSON has no NaN or infinity (the decoder refuses them as malformed_json), so only a
    # dict built in Python reaches these checks.
    with pytest.raises(InvalidCatalogItem) as info:
        catalog_item_from_dict(payload)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    "key, raw, reason",
    [
        (b"sku-1", b"{not json", "malformed_json"),
        (b"sku-1", b'{"item_id": "sku-1", "price": NaN}', "malformed_json"),
        (b"sku-1", b'{"item_id": "sku-1", "price": 1e400}', "malformed_json"),
        (b"sku-1", b"\xff\xfe\x00garbage", "not_utf8"),
        (b"sku-1", b'"sku-1"', "not_an_object"),
        (b"sku-1", b"x" * (MAX_CATALOG_BYTES + 1), "payload_too_large"),
        (None, b'{"item_id": "sku-1"}', "missing_key"),
        (b"sku-2", b'{"item_id": "sku-1"}', "key_mismatch"),
        (b"\xffsku-1", b'{"item_id": "sku-1"}', "key_mismatch"),
        # tombstones: the key is all there is, so it must be a valid item_id
        (None, None, "missing_key"),
        (b"", None, "empty_string"),
        (b"   ", None, "empty_string"),
        (b"\xff\xfe", None, "not_utf8"),
        (b"k" * 257, None, "string_too_long"),
    ],
)
def test_bad_catalog_bytes_and_keys(key, raw, reason):
    with pytest.raises(InvalidCatalogItem) as info:
        decode_catalog_item(key, raw)
    assert info.value.reason == reason


def test_tombstone_with_a_good_key_is_none():
    assert decode_catalog_item("sku-ü".encode(), None) is None


def test_encoder_refuses_what_the_decoder_would_refuse():
    item = catalog_item_from_dict({"item_id": "big", "attributes": {f"a{i}": "\u0000" * 256 for i in range(64)}})
    with pytest.raises(InvalidCatalogItem) as info:
        encode_catalog_item(item)
    assert info.value.reason == "payload_too_large"


def test_invalid_catalog_item_is_an_invalid_event_with_reason_and_detail():
    with pytest.raises(InvalidEvent) as info:
        catalog_item_from_dict({"item_id": ""})
    assert (info.value.reason, info.value.detail) == ("empty_string", "field 'item_id' must not be empty")


catalog_fields = st.sampled_from(
    ["item_id", "title", "category", "brand", "price", "currency", "available", "attributes", "updated_at", "x"])
short_text = st.one_of(st.text(max_size=6), st.sampled_from(["", " ", "\u00a0", "\x1f", "Beauty", "sku-1"]))
# strings around the limits (256 for most, 1024 for titles), built cheaply rather than drawn char by char
long_text = st.builds(lambda char, n: char * n, st.sampled_from(["x", " ", "\u00e9"]),
                      st.sampled_from([255, 256, 257, 1023, 1024, 1025]))
catalog_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10, 10**15), st.floats(allow_nan=False, allow_infinity=False),
              short_text, long_text),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.integers(15, 18).map(lambda n: ["level"] * n),  # around the depth limit (16)
        st.dictionaries(st.one_of(short_text, long_text), inner, max_size=4),
        st.integers(63, 66).map(lambda n: {f"a{i}": "v" for i in range(n)}),  # around the attribute limit (64)
    ),
    max_leaves=8,
)


def catalog_outcome(payload):
    try:
        return catalog_item_from_dict(payload)
    except InvalidCatalogItem as exc:
        assert exc.reason and exc.detail
        return None


@settings(max_examples=1000, deadline=None)
@given(st.dictionaries(catalog_fields, catalog_values, max_size=10), st.booleans())
def test_validator_and_schema_accept_the_same_records(extra, with_id):
    payload = {**(ITEM if with_id else {}), **extra}
    item = catalog_outcome(payload)
    try:
        jsonschema.validate(payload, schema_catalog)
        valid = True
    except jsonschema.ValidationError:
        valid = False
    # whatever the validator accepts the schema accepts, and whatever the schema rejects is rejected
    # (and, for JSON-sized numbers, the other way round too)
    assert valid == (item is not None), (payload, item)
    if item is not None:
        assert decode_catalog_item(item.item_id.encode(), encode_catalog_item(item)) == item


schema_catalog = schema("catalog-item")


def test_recommendation_schema_knows_every_item_source():
    from streamrec.contract import ITEM_SOURCES

    item_schema = schema("recommendation")["properties"]["items"]["items"]["properties"]
    assert tuple(item_schema["source"]["enum"]) == ITEM_SOURCES


# --------------------------------------------------------------------------- erasure requests

from streamrec.contract import ErasureRequest, decode_erasure, encode_erasure  # noqa: E402


def test_erasure_request_round_trip_and_schema_agree():
    request = ErasureRequest("u-42", 1764240000.5)
    raw = encode_erasure(request)
    assert decode_erasure(raw) == request
    jsonschema.validate(orjson.loads(raw), schema("erasure-request"))


@pytest.mark.parametrize(
    "payload, reason",
    [
        ({"erase_user_id": "", "requested_at": 1.0}, "empty_string"),
        ({"erase_user_id": "u", "requested_at": "now"}, "wrong_type"),
        ({"erase_user_id": "u"}, "missing_field"),
        ({"erase_user_id": 7, "requested_at": 1.0}, "wrong_type"),
        ({"erase_user_id": "u", "requested_at": 1.0, "reason": "x"}, "unknown_field"),
        ({"erase_user_id": "u" * 257, "requested_at": 1.0}, "string_too_long"),
    ],
)
def test_invalid_erasure_requests_are_refused_by_the_decoder_and_the_schema(payload, reason):
    with pytest.raises(InvalidEvent) as refused:
        decode_erasure(orjson.dumps(payload))
    assert refused.value.reason == reason
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(payload, schema("erasure-request"))


def test_an_event_is_not_an_erasure_request():
    assert decode_erasure(encode_event(Event("e", "u", "i", "view", 1.0))) is None
    assert decode_erasure(None) is None and decode_erasure(b"") is None


# --------------------------------------------------------------------------- a batch at once

from streamrec.contract import decode_events  # noqa: E402


def test_ids_with_control_characters_are_rejected_on_both_paths():
    for field in ("event_id", "user_id", "item_id"):
        raw = orjson.dumps({**GOOD, field: "a\x1fb"})
        assert _fast_decode(raw, NOW) is None
        with pytest.raises(InvalidEvent) as caught:
            decode_event(raw, now=NOW)
        assert caught.value.reason == "control_character" and field in caught.value.detail
        assert decode_events([encode_event(Event("e", "u", "i", "view", 1.0)), raw], now=NOW) is None
    # Other text fields may hold them (a search query with a line break).
    assert decode_event(orjson.dumps({**GOOD, "query": "red\nshoes"}), now=NOW).query == "red\nshoes"


batch_values = st.one_of(
    st.builds(lambda e, u, i, k, ts: encode_event(Event(e, u, i, k, ts)), ids, ids, ids, st.sampled_from(EVENT_TYPES),
              st.floats(0, NOW, allow_nan=False)),
    st.builds(lambda d: orjson.dumps({**GOOD, **d}), st.dictionaries(fields, values, max_size=3)),
    st.binary(max_size=60),
    st.sampled_from([b"", b"\n", b'{"event_id":"a"}\n{"event_id":"b"}', b'{"event_id":"e1","user_id":"u1"']),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(batch_values, min_size=1, max_size=6))
def test_a_batch_decodes_to_what_each_value_decodes_to(raws):
    """The batch decoder either declines (None) or gives exactly the events the one-by-one
    decoder accepts, value by value; it never reads a value as part of its neighbour."""
    decoded = decode_events(raws, now=NOW)
    one_by_one = [outcome(lambda raw, now: decode_event(raw, now=now), raw) for raw in raws]
    if decoded is not None:
        assert decoded == one_by_one
    if all(isinstance(e, Event) for e in one_by_one) and not any(b"\\" in raw or b"\n" in raw for raw in raws):
        assert decoded == one_by_one  # well-formed batches take the fast path


def test_a_value_split_across_two_messages_is_not_joined():
    head, tail = b'{"event_id":"e1","user_id":"u1",', b'"item_id":"i","type":"view","ts":1.0}'
    assert decode_events([head, tail], now=NOW) is None
