"""The wire contract: events and catalog records in, recommendations out, rejects to the dead-letter topic.

Defined once here and imported by producers, the Faust worker, the evaluation harness and
the benchmarks. JSON on the wire (orjson), keyed by ``user_id``. The JSON Schemas in
``docs/schemas/`` describe the same shapes; ``tests/unit/streamrec/test_contract.py`` checks
that the two agree.

>>> raw = encode_event(Event("e1", "u1", "sku-1", "view", 1700000000.0))
>>> decode_event(raw).item_id
'sku-1'
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
import orjson

#: The actions a shopper takes; the model learns from these (their codes index weight tables).
EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "favorite", "purchase")
EVENT_TYPE_CODES: dict[str, int] = {name: code for code, name in enumerate(EVENT_TYPES)}
#: The purchase's code: a bought item leaves the buyer's later lists.
PURCHASE = EVENT_TYPE_CODES["purchase"]
#: What a page showed (an item of a list, ``list_id`` naming the list): accepted on the events
#: topic for attribution (docs/business.md); the worker and the trainer ignore it, so it never
#: changes a user's vector or triggers a list.
IMPRESSION = "impression"
#: Every type an event on the wire may have.
WIRE_EVENT_TYPES: tuple[str, ...] = (*EVENT_TYPES, IMPRESSION)

#: Longest accepted string field (ids, session ids, categories, queries), in characters.
MAX_STRING_LENGTH = 256
#: Largest accepted encoded event, in bytes.
MAX_EVENT_BYTES = 16 * 1024
#: Largest original payload a dead letter keeps whole; longer ones keep this many leading bytes.
MAX_DEAD_LETTER_RAW_BYTES = 5 * 1024 * 1024
#: The dead-letter topic and the worker's producer accept messages up to this size.
DLQ_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
#: Events stamped further than this into the future (relative to the decoder's clock) are rejected.
MAX_FUTURE_SKEW_S = 24 * 3600.0

REQUIRED_FIELDS = ("event_id", "user_id", "item_id", "type", "ts")
OPTIONAL_FIELDS = ("session_id", "price", "category", "query", "list_id", "quantity")
#: Most units of one item in one event.
MAX_QUANTITY = 1_000_000
_ALL_FIELDS = frozenset(REQUIRED_FIELDS + OPTIONAL_FIELDS)


class InvalidEvent(ValueError):
    """An event that breaks the contract; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STRING_LENGTH)]
_Text = Annotated[str, msgspec.Meta(max_length=MAX_STRING_LENGTH)]


class Event(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """One thing a shopper did. ``ts`` is event time in Unix seconds; ``quantity`` is the number
    of units (a purchase line of 12 mugs is one event with ``quantity`` 12; absent means one).

    A msgspec struct: the worker decodes a batch of them straight from the wire in one C call
    (:func:`decode_events`), and builds one in a tenth of a frozen dataclass's time. The field
    annotations carry the wire contract's simple limits (the decoder checks them); what they
    cannot say is checked by :func:`decode_event` / :func:`decode_events`."""

    event_id: _Id
    user_id: _Id
    item_id: _Id
    type: Literal["view", "click", "add_to_cart", "favorite", "purchase", "impression"]
    ts: Annotated[float, msgspec.Meta(ge=0)]
    session_id: _Text | None = None
    price: Annotated[float, msgspec.Meta(ge=0)] | None = None
    category: _Text | None = None
    query: _Text | None = None
    #: The recommendation list the shopper acted from (``Recommendation.list_id``), when the shop knows it.
    list_id: _Text | None = None
    #: Units bought or added (a number, for goods sold by measure; revenue is ``price * quantity``; 1 when absent).
    quantity: Annotated[float, msgspec.Meta(gt=0, le=MAX_QUANTITY)] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "type": self.type,
            "ts": self.ts,
        }
        for name in OPTIONAL_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


#: Where a recommended item came from: the model's search, trending items of the categories
#: the user engaged with recently, or trending items of the whole shop (the backfill when rules
#: left fewer than k of the model's candidates).
ITEM_SOURCES: tuple[str, ...] = ("model", "category_trending", "trending")


class ScoredItem(msgspec.Struct, frozen=True, gc=False):
    """One recommended item, its score and its ``source`` (one of :data:`ITEM_SOURCES`). A
    msgspec struct: the worker builds ten per list, and one is made in C in a tenth of a frozen
    dataclass's time, and encoded in C too."""

    item_id: str
    score: float
    source: str = "model"


def list_id_for(user_id: str, event_id: str, model_version: str) -> str:
    """The id of the list a model version makes for a user's triggering event: the same inputs
    give the same id, so a list re-sent after a crash (or replayed) is recognised as the same
    list by attribution, and lists of two model versions never share an id.

    >>> list_id_for("u-1", "e-9", "v000001") == list_id_for("u-1", "e-9", "v000001")
    True
    >>> len(list_id_for("u-1", "e-9", "v000001")), list_id_for("u-1", "e-9", "v000001") == list_id_for("u-1", "e-9", "v000002")
    (16, False)
    """
    return hashlib.blake2b(f"{user_id}\x00{event_id}\x00{model_version}".encode(), digest_size=8).hexdigest()


class Recommendation(msgspec.Struct, frozen=True):
    """A fresh top-k list for one user, triggered by one event. ``list_id`` names the list
    (:func:`list_id_for`); ``experiment`` and ``variant`` say which experiment arm built it
    (None when no experiment runs). A msgspec struct: the worker builds one per user of a
    batch, and encodes it in C."""

    user_id: str
    items: tuple[ScoredItem, ...]
    model_version: str
    event_id: str
    event_ts: float
    produced_at: float
    list_id: str = ""
    experiment: str | None = None
    variant: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "items": [{"item_id": i.item_id, "score": i.score, "source": i.source} for i in self.items],
            "model_version": self.model_version,
            "event_id": self.event_id,
            "event_ts": self.event_ts,
            "produced_at": self.produced_at,
            "list_id": self.list_id,
            "experiment": self.experiment,
            "variant": self.variant,
        }


# --------------------------------------------------------------------------- events


def _string(payload: dict[str, Any], name: str, *, required: bool) -> str | None:
    return _text(payload.get(name), name, required=required, error=InvalidEvent)


def _text(value: Any, name: str, limit: int = MAX_STRING_LENGTH, *, required: bool = False,
          error: type[InvalidEvent] = InvalidEvent) -> str | None:
    """``value`` if it is a string within ``limit`` (and not blank when ``required``); else
    raise ``error`` with the machine-readable reason."""
    if value is None:
        if required:
            raise error("missing_field", f"field {name!r} is required")
        return None
    if not isinstance(value, str):
        raise error("wrong_type", f"field {name!r} must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise error("empty_string", f"field {name!r} must not be empty")
    if len(value) > limit:
        raise error("string_too_long", f"field {name!r} has {len(value)} characters, the limit is {limit}")
    return value


def _number(value: Any, name: str, *, error: type[InvalidEvent] = InvalidEvent) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error("wrong_type", f"field {name!r} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the largest float
        raise error("not_finite", f"field {name!r} must be finite, got an integer of {len(str(value))} digits") from None
    if not math.isfinite(number):
        raise error("not_finite", f"field {name!r} must be finite, got {value!r}")
    return number


def event_from_dict(payload: Any, *, now: float | None = None) -> Event:
    """Validate a decoded JSON object and build an :class:`Event`; raise :class:`InvalidEvent`."""
    if not isinstance(payload, dict):
        raise InvalidEvent("not_an_object", f"an event must be a JSON object, got {type(payload).__name__}")
    extra = payload.keys() - _ALL_FIELDS
    if extra:
        raise InvalidEvent("unknown_field", f"unknown field(s): {', '.join(sorted(map(str, extra)))}")
    event_id = _string(payload, "event_id", required=True)
    user_id = _string(payload, "user_id", required=True)
    item_id = _string(payload, "item_id", required=True)
    for name, value in (("event_id", event_id), ("user_id", user_id), ("item_id", item_id)):
        if _CONTROL.search(value) is not None:  # type: ignore[arg-type]
            raise InvalidEvent("control_character", f"field {name!r} must not contain control characters "
                                                    "(U+0000 to U+001F)")
    kind = _string(payload, "type", required=True)
    if kind not in WIRE_EVENT_TYPES:
        raise InvalidEvent("unknown_type", f"type {kind!r} is not one of {', '.join(WIRE_EVENT_TYPES)}")
    if "ts" not in payload or payload["ts"] is None:
        raise InvalidEvent("missing_field", "field 'ts' is required")
    ts = _number(payload["ts"], "ts")
    if ts < 0:
        raise InvalidEvent("bad_timestamp", f"ts must be Unix seconds >= 0, got {ts!r}")
    limit = (time.time() if now is None else now) + MAX_FUTURE_SKEW_S
    if ts > limit:
        raise InvalidEvent("future_timestamp", f"ts {ts!r} is more than {MAX_FUTURE_SKEW_S:.0f} s in the future")
    price = payload.get("price")
    if price is not None:
        price = _number(price, "price")
        if price < 0:
            raise InvalidEvent("bad_price", f"price must be >= 0, got {price!r}")
    quantity = payload.get("quantity")
    if quantity is not None:
        quantity = _number(quantity, "quantity")
        if not 0 < quantity <= MAX_QUANTITY:
            raise InvalidEvent("bad_quantity", f"field 'quantity' must be > 0 and at most {MAX_QUANTITY}, got {quantity!r}")
    return Event(
        event_id=event_id,  # type: ignore[arg-type]
        user_id=user_id,  # type: ignore[arg-type]
        item_id=item_id,  # type: ignore[arg-type]
        type=kind,
        ts=ts,
        session_id=_string(payload, "session_id", required=False),
        price=price,
        category=_string(payload, "category", required=False),
        query=_string(payload, "query", required=False),
        list_id=_string(payload, "list_id", required=False),
        quantity=quantity,
    )


# The hot path: msgspec decodes a well-formed event, or a whole batch of them, in C, checking
# the field annotations of :class:`Event`; what they cannot say (ids not blank and free of
# control characters, the clock skew) is checked after. It accepts a subset of what
# event_from_dict accepts (tests/unit/streamrec/test_contract.py checks that on generated
# payloads); anything it refuses goes through event_from_dict, which either accepts it too or
# names the machine-readable reason.
_event_decoder = msgspec.json.Decoder(Event)
#: Characters an id must not contain: the C0 control characters (the state codec separates ids with one).
_CONTROL = re.compile(r"[\x00-\x1f]")


def _usable(event: Event, latest: float, *, escaped: bool = True) -> bool:
    """What the decoder cannot check: a finite time no later than ``latest``, ids with a
    visible character and no control character. A control character can only come from an
    escape sequence (raw ones are malformed JSON): ``escaped=False`` says the raw bytes held no
    backslash, and the ids need no search."""
    ts = event.ts
    return (math.isfinite(ts) and ts <= latest
            and not (event.event_id.isspace() or event.user_id.isspace() or event.item_id.isspace())
            and not (escaped and _CONTROL.search(event.event_id + event.user_id + event.item_id) is not None))


def _fast_decode(raw: bytes, now: float | None) -> Event | None:
    try:
        event = _event_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return event if _usable(event, (time.time() if now is None else now) + MAX_FUTURE_SKEW_S) else None


def decode_events(values: list[bytes | None], *, now: float | None = None) -> list[Event] | None:
    """Every value decoded in one C call, when all of them are well-formed events; None when
    any is not (decode them one by one with :func:`decode_event` then, for the reasons).

    The values are joined as lines (JSON-lines), which only says where each value ends when
    none holds a line break of its own: that is checked first, so a value can never be read as
    part of its neighbour."""
    if not values or not all(values) or max(map(len, values)) > MAX_EVENT_BYTES:  # type: ignore[arg-type]
        return None
    joined = b"\n".join(values)  # type: ignore[arg-type]
    if joined.count(b"\n") != len(values) - 1:
        return None
    try:
        events = _event_decoder.decode_lines(joined)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if len(events) != len(values):
        return None
    latest = (time.time() if now is None else now) + MAX_FUTURE_SKEW_S
    escaped = b"\\" in joined
    return events if all(_usable(event, latest, escaped=escaped) for event in events) else None


def decode_event(raw: bytes | None, *, now: float | None = None) -> Event:
    """Decode one message value into an :class:`Event`; raise :class:`InvalidEvent`."""
    if not raw:  # no value (a tombstone) or a value of zero bytes: nothing to decode either way
        raise InvalidEvent("empty_payload", "the message has no value" if raw is None else "the message value is empty")
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent("payload_too_large", f"{len(raw)} bytes, the limit is {MAX_EVENT_BYTES}")
    event = _fast_decode(raw, now)
    if event is not None:
        return event
    return _decode_slowly(raw, now)


def _decode_slowly(raw: bytes, now: float | None) -> Event:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = "not_utf8" if "utf-8" in str(exc).lower() else "malformed_json"
        raise InvalidEvent(reason, str(exc)) from None
    return event_from_dict(payload, now=now)


def encode_event(event: Event) -> bytes:
    return orjson.dumps(event.to_dict())


# --------------------------------------------------------------------------- recommendations


_recommendation_encoder = msgspec.json.Encoder()


def encode_recommendation(rec: Recommendation) -> bytes:
    """The wire form, ``rec.to_dict()`` as JSON (encoded in one C call: a struct of structs,
    fields in declaration order)."""
    return _recommendation_encoder.encode(rec)


def decode_recommendation(raw: bytes) -> Recommendation:
    payload = orjson.loads(raw)
    return Recommendation(
        user_id=payload["user_id"],
        items=tuple(ScoredItem(i["item_id"], float(i["score"]), i.get("source", "model")) for i in payload["items"]),
        model_version=payload["model_version"],
        event_id=payload["event_id"],
        event_ts=float(payload["event_ts"]),
        produced_at=float(payload["produced_at"]),
        list_id=payload.get("list_id") or "",
        experiment=payload.get("experiment"),
        variant=payload.get("variant"),
    )


# --------------------------------------------------------------------------- erasure requests

#: Fields of an erasure request (``streamrec forget``), both required.
ERASURE_FIELDS = ("erase_user_id", "requested_at")


@dataclass(frozen=True, slots=True)
class ErasureRequest:
    """"Forget this user": the value of a record keyed by ``user_id`` on the compacted erasures
    topic, and the same record on the events topic, where it sits in order among the user's
    events (docs/security.md). ``requested_at`` is Unix seconds."""

    user_id: str
    requested_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"erase_user_id": self.user_id, "requested_at": self.requested_at}


def encode_erasure(request: ErasureRequest) -> bytes:
    """The wire form.

    >>> encode_erasure(ErasureRequest("u-42", 1764240000.0))
    b'{"erase_user_id":"u-42","requested_at":1764240000.0}'
    """
    return orjson.dumps(request.to_dict())


def decode_erasure(raw: bytes | None) -> ErasureRequest | None:
    """The erasure request ``raw`` holds; None when ``raw`` is not one (no ``erase_user_id``
    field: an event, say); :class:`InvalidEvent` when it is one but malformed.

    >>> decode_erasure(b'{"erase_user_id": "u-42", "requested_at": 1764240000}')
    ErasureRequest(user_id='u-42', requested_at=1764240000.0)
    >>> decode_erasure(b'{"event_id": "e-1"}') is None
    True
    """
    if not raw or b'"erase_user_id"' not in raw:
        return None
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("malformed_json", str(exc)) from None
    if not isinstance(payload, dict) or "erase_user_id" not in payload:
        return None
    extra = payload.keys() - set(ERASURE_FIELDS)
    if extra:
        raise InvalidEvent("unknown_field", f"an erasure request has only {', '.join(ERASURE_FIELDS)}; got {sorted(extra)}")
    user_id = _text(payload["erase_user_id"], "erase_user_id", required=True)
    if "requested_at" not in payload:
        raise InvalidEvent("missing_field", "field 'requested_at' is required")
    return ErasureRequest(str(user_id), _number(payload["requested_at"], "requested_at"))


# --------------------------------------------------------------------------- catalog

#: Fields of a catalog record; ``item_id`` is required, the rest optional.
CATALOG_FIELDS = ("item_id", "title", "category", "brand", "price", "currency", "available", "attributes", "updated_at")
#: Longest accepted title, in characters.
MAX_TITLE_LENGTH = 1024
#: Most levels in a category path, and most attributes of one item.
MAX_CATEGORY_DEPTH = 16
MAX_ATTRIBUTES = 64
#: Largest accepted encoded catalog record, in bytes.
MAX_CATALOG_BYTES = 64 * 1024


class InvalidCatalogItem(InvalidEvent):
    """A catalog record that breaks the contract; ``reason`` is a machine-readable code."""


class CatalogItem(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One product as the shop describes it, the value of a record on the compacted items
    topic (keyed by ``item_id``; a tombstone, a record with no value, removes the item).

    ``category`` is a path from the top, e.g. ``("Beauty", "Skin Care")``; ``available``
    false means out of stock (never recommended until it is true again); ``updated_at`` is
    Unix seconds.

    >>> item = decode_catalog_item(b"sku-1", b'{"item_id": "sku-1", "category": ["Beauty", "Skin Care"]}')
    >>> item.category, item.available
    (('Beauty', 'Skin Care'), True)
    >>> decode_catalog_item(b"sku-1", None) is None   # a tombstone
    True
    """

    item_id: str
    title: str | None = None
    category: tuple[str, ...] = ()
    brand: str | None = None
    price: float | None = None
    currency: str | None = None
    available: bool = True
    attributes: dict[str, str] = {}
    updated_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in CATALOG_FIELDS if getattr(self, name) not in (None, (), {})} | {
            "available": self.available
        }


def _catalog_text(value: Any, name: str, limit: int = MAX_STRING_LENGTH, *, required: bool = False) -> str | None:
    return _text(value, name, limit, required=required, error=InvalidCatalogItem)


def _catalog_non_negative(payload: dict[str, Any], name: str, reason: str, rule: str) -> float | None:
    """The optional number ``payload[name]``, finite and >= 0 (else ``reason``: ``rule``)."""
    value = payload.get(name)
    if value is None:
        return None
    number = _number(value, name, error=InvalidCatalogItem)
    if number < 0:
        raise InvalidCatalogItem(reason, f"{rule}, got {number!r}")
    return number


def catalog_item_from_dict(payload: Any) -> CatalogItem:
    """Validate a decoded JSON object and build a :class:`CatalogItem`; raise :class:`InvalidCatalogItem`."""
    if not isinstance(payload, dict):
        raise InvalidCatalogItem("not_an_object", f"a catalog record must be a JSON object, got {type(payload).__name__}")
    extra = payload.keys() - set(CATALOG_FIELDS)
    if extra:
        raise InvalidCatalogItem("unknown_field", f"unknown field(s): {', '.join(sorted(map(str, extra)))}")
    item_id = _catalog_text(payload.get("item_id"), "item_id", required=True)
    category = payload.get("category")
    if category is None:
        category = []
    elif isinstance(category, str):
        category = [category]
    if not isinstance(category, list):
        raise InvalidCatalogItem("wrong_type", f"field 'category' must be a list of strings (a path), got {type(category).__name__}")
    if len(category) > MAX_CATEGORY_DEPTH:
        raise InvalidCatalogItem("category_too_deep", f"category has {len(category)} levels, the limit is {MAX_CATEGORY_DEPTH}")
    for level in category:
        if not isinstance(level, str):  # a null level too: a path has no holes
            raise InvalidCatalogItem("wrong_type", f"field 'category' must be a list of strings (a path), got a {type(level).__name__} in it")
    path = tuple(_catalog_text(level, "category", required=True) for level in category)
    attributes = payload.get("attributes")
    if attributes is None:
        attributes = {}
    if not isinstance(attributes, dict):
        raise InvalidCatalogItem("wrong_type", f"field 'attributes' must be an object of strings, got {type(attributes).__name__}")
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidCatalogItem("too_many_attributes", f"{len(attributes)} attributes, the limit is {MAX_ATTRIBUTES}")
    for key, value in attributes.items():
        _catalog_text(key, "attributes")
        if not isinstance(value, str):  # null too: an attribute without a value is left out, not null
            raise InvalidCatalogItem("wrong_type", f"field 'attributes.{key}' must be a string, got {type(value).__name__}")
        _catalog_text(value, f"attributes.{key}")
    price = _catalog_non_negative(payload, "price", "bad_price", "price must be >= 0")
    available = payload.get("available", True)
    if not isinstance(available, bool):
        raise InvalidCatalogItem("wrong_type", f"field 'available' must be true or false, got {type(available).__name__}")
    updated_at = _catalog_non_negative(payload, "updated_at", "bad_timestamp", "updated_at must be Unix seconds >= 0")
    return CatalogItem(
        item_id=item_id,  # type: ignore[arg-type]
        title=_catalog_text(payload.get("title"), "title", MAX_TITLE_LENGTH),
        category=path,  # type: ignore[arg-type]
        brand=_catalog_text(payload.get("brand"), "brand"),
        price=price,
        currency=_catalog_text(payload.get("currency"), "currency"),
        available=available,
        attributes=dict(attributes),
        updated_at=updated_at,
    )


def decode_catalog_item(key: bytes | None, raw: bytes | None) -> CatalogItem | None:
    """Decode one record of the items topic: a :class:`CatalogItem`, or None for a tombstone
    (the item is removed); raise :class:`InvalidCatalogItem` for anything else."""
    if key is None:
        raise InvalidCatalogItem("missing_key", "a catalog record must be keyed by its item_id")
    if raw is None:
        try:
            item_id = key.decode()
        except UnicodeDecodeError:
            raise InvalidCatalogItem("not_utf8", "the key of a tombstone must be a UTF-8 item_id") from None
        _catalog_text(item_id, "item_id", required=True)
        return None
    if len(raw) > MAX_CATALOG_BYTES:
        raise InvalidCatalogItem("payload_too_large", f"{len(raw)} bytes, the limit is {MAX_CATALOG_BYTES}")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = "not_utf8" if "utf-8" in str(exc).lower() else "malformed_json"
        raise InvalidCatalogItem(reason, str(exc)) from None
    item = catalog_item_from_dict(payload)
    if key != item.item_id.encode():
        raise InvalidCatalogItem("key_mismatch", f"the record key must be the item_id {item.item_id!r}, got {key!r}")
    return item


def encode_catalog_item(item: CatalogItem) -> bytes:
    """The wire form, ``item.to_dict()`` as JSON; raise :class:`InvalidCatalogItem`
    (``payload_too_large``) rather than return bytes :func:`decode_catalog_item` would refuse.

    >>> encode_catalog_item(CatalogItem("sku-1", price=9.5, category=("Beauty",)))
    b'{"item_id":"sku-1","category":["Beauty"],"price":9.5,"available":true}'
    """
    raw = orjson.dumps(item.to_dict())
    if len(raw) > MAX_CATALOG_BYTES:
        raise InvalidCatalogItem("payload_too_large", f"item {item.item_id!r} encodes to {len(raw)} bytes, the limit is {MAX_CATALOG_BYTES}")
    return raw


# --------------------------------------------------------------------------- dead letters


def encode_dead_letter(
    raw: bytes | None,
    reason: str,
    detail: str,
    *,
    topic: str,
    partition: int,
    offset: int,
    rejected_at: float | None = None,
    max_raw_bytes: int = MAX_DEAD_LETTER_RAW_BYTES,
) -> bytes:
    """A dead-letter record: why, where from, and the original bytes (base64).

    The bytes are kept whole up to ``max_raw_bytes`` (far above what a broker accepts by
    default); beyond that the record says so (``raw_truncated``) and keeps the head.
    """
    raw = raw or b""
    letter = {
        "reason": reason,
        "detail": detail,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "rejected_at": time.time() if rejected_at is None else rejected_at,
        "raw_size": len(raw),
        "raw_truncated": len(raw) > max_raw_bytes,
        "raw_base64": base64.b64encode(raw[:max_raw_bytes]).decode("ascii"),
    }
    return orjson.dumps(letter)


def decode_dead_letter(raw: bytes) -> dict[str, Any]:
    payload = orjson.loads(raw)
    payload["raw"] = base64.b64decode(payload.pop("raw_base64"))
    return payload
