"""Turn a message of any streamrec topic into one printable line (``streamrec consume``).

Pure functions, no Kafka: :func:`render` takes the topic's kind (from the settings' topic
names, or ``None`` to tell by the message's shape), the key and the value, and returns a
:class:`Rendered` line, or raises :class:`Unreadable` with a sentence saying why.

* recommendations: the message as it is (``--json``) or ``user: item (score), ...``;
* dead letters: their fields plus the original value as ``raw`` text when it is UTF-8, else
  ``raw_base64``; or a readable line;
* catalog records: the record as JSON lines, a tombstone as ``{"item_id": ..., "removed": true}``;
* events: the event as JSON, or ``user type item at time``.

>>> from streamrec.contract import encode_dead_letter
>>> letter = encode_dead_letter(b"{oops", "malformed_json", "bad", topic="events", partition=1, offset=7, rejected_at=0)
>>> render(None, b"u1", letter, as_json=True).line
'{"reason":"malformed_json","detail":"bad","topic":"events","partition":1,"offset":7,"rejected_at":0,"raw_size":5,"raw_truncated":false,"raw":"{oops"}'
>>> render("items", b"sku-1", None, as_json=True).line
'{"item_id":"sku-1","removed":true}'
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

import orjson

from streamrec.contract import (
    InvalidEvent,
    Recommendation,
    decode_catalog_item,
    decode_erasure,
    decode_event,
    decode_recommendation,
)

Kind = Literal["recommendations", "dead-letters", "items", "events"]

#: Fields of a dead letter, in the order they are printed.
DEAD_LETTER_FIELDS = ("reason", "detail", "topic", "partition", "offset", "rejected_at", "raw_size", "raw_truncated")
#: Longest original value shown in a readable (not ``--json``) dead-letter line, in characters.
MAX_RAW_SHOWN = 200


class Unreadable(ValueError):
    """A message that is none of what its topic (or any streamrec topic) carries."""


@dataclass(frozen=True)
class Rendered:
    """One printable line; ``user_id`` is set for messages about a user (for ``--user``)."""

    line: str
    kind: Kind
    user_id: str | None = None


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- dead letters


def dead_letter_view(value: bytes) -> dict[str, Any]:
    """A dead letter's fields with the original value as ``raw`` (UTF-8 text) or ``raw_base64``.

    Raises :class:`Unreadable` when ``value`` is not a dead letter.
    """
    try:
        payload = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise Unreadable(f"not JSON ({exc})") from None
    if not isinstance(payload, dict) or not set(DEAD_LETTER_FIELDS) | {"raw_base64"} <= payload.keys():
        raise Unreadable("not a dead letter (it lacks reason, detail, topic, partition, offset or raw_base64)")
    try:
        raw = base64.b64decode(payload["raw_base64"], validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise Unreadable(f"a dead letter whose raw_base64 is not base64 ({exc})") from None
    view = {name: payload[name] for name in DEAD_LETTER_FIELDS}
    try:
        view["raw"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        view["raw_base64"] = payload["raw_base64"]
    return view


def format_dead_letter(view: dict[str, Any]) -> str:
    """One readable line for :func:`dead_letter_view`'s dict.

    >>> format_dead_letter({"reason": "malformed_json", "detail": "unexpected character", "topic": "events",
    ...     "partition": 2, "offset": 99, "rejected_at": 0, "raw_size": 5, "raw_truncated": False, "raw": "{oops"})
    "1970-01-01T00:00:00Z events/2@99 rejected: malformed_json (unexpected character); raw 5 bytes: '{oops'"
    """
    if "raw" in view:
        raw = view["raw"]
        shown = repr(raw[:MAX_RAW_SHOWN]) + ("..." if len(raw) > MAX_RAW_SHOWN else "")
    else:
        shown = f"not UTF-8, base64 {view['raw_base64'][:MAX_RAW_SHOWN]}" + ("..." if len(view["raw_base64"]) > MAX_RAW_SHOWN else "")
    truncated = " (truncated)" if view.get("raw_truncated") else ""
    rejected_at = view.get("rejected_at")
    when = _utc(rejected_at) if isinstance(rejected_at, (int, float)) else "?"
    return (f"{when} {view['topic']}/{view['partition']}@{view['offset']} rejected: {view['reason']} "
            f"({view['detail']}); raw {view['raw_size']} bytes{truncated}: {shown}")


# --------------------------------------------------------------------------- the others


def format_recommendation(rec: Recommendation, now: float) -> str:
    items = ", ".join(f"{i.item_id} ({i.score:.3f})" for i in rec.items) or "(nothing)"
    lag_ms = (rec.produced_at - rec.event_ts) * 1000 if now - rec.event_ts < 3600 else None
    fresh = f", {lag_ms:.0f} ms after the event" if lag_ms is not None else ""
    arm = f", {rec.experiment}/{rec.variant}" if rec.experiment else ""
    return f"{rec.user_id}: {items}  [model {rec.model_version}, event {rec.event_id}{fresh}{arm}]"


def _recommendation(value: bytes | None, as_json: bool, now: float) -> Rendered:
    if value is None:
        raise Unreadable("the message has no value")
    try:
        rec = decode_recommendation(value)
    except (ValueError, KeyError, TypeError) as exc:
        raise Unreadable(f"not a recommendation ({type(exc).__name__}: {exc})") from None
    line = value.decode("utf-8", "replace") if as_json else format_recommendation(rec, now)
    return Rendered(line, "recommendations", rec.user_id)


def _dead_letter(value: bytes | None, as_json: bool) -> Rendered:
    if value is None:
        raise Unreadable("the message has no value")
    view = dead_letter_view(value)
    return Rendered(orjson.dumps(view).decode() if as_json else format_dead_letter(view), "dead-letters")


def _catalog_record(key: bytes | None, value: bytes | None, as_json: bool) -> Rendered:
    try:
        item = decode_catalog_item(key, value)
    except InvalidEvent as exc:
        raise Unreadable(f"not a catalog record ({exc})") from None
    if item is None:
        item_id = key.decode("utf-8")  # type: ignore[union-attr]  # checked by decode_catalog_item
        line = orjson.dumps({"item_id": item_id, "removed": True}).decode() if as_json else f"{item_id}: removed"
        return Rendered(line, "items")
    if as_json:
        return Rendered(orjson.dumps(item.to_dict()).decode(), "items")
    parts = [item.title or "(no title)"]
    if item.category:
        parts.append(" > ".join(item.category))
    if item.brand:
        parts.append(item.brand)
    if item.price is not None:
        parts.append(f"{item.price:.2f} {item.currency or ''}".rstrip())
    parts.append("available" if item.available else "out of stock")
    if item.attributes:
        parts.append(", ".join(f"{k}={v}" for k, v in item.attributes.items()))
    return Rendered(f"{item.item_id}: " + "; ".join(parts), "items")


def _event(value: bytes | None, as_json: bool) -> Rendered:
    try:
        event = decode_event(value, now=time.time())
    except InvalidEvent as exc:
        try:
            erasure = decode_erasure(value)
        except InvalidEvent:
            erasure = None
        if erasure is None:
            raise Unreadable(f"not an event ({exc})") from None
        if as_json:
            return Rendered(orjson.dumps(erasure.to_dict()).decode(), "events", erasure.user_id)
        return Rendered(f"{_utc(erasure.requested_at)} {erasure.user_id} erasure request (streamrec forget)", "events",
                        erasure.user_id)
    if as_json:
        return Rendered(orjson.dumps(event.to_dict()).decode(), "events", event.user_id)
    return Rendered(f"{_utc(event.ts)} {event.user_id} {event.type} {event.item_id}  [event {event.event_id}]",
                    "events", event.user_id)


def render(kind: Kind | None, key: bytes | None, value: bytes | None, *, as_json: bool,
           now: float | None = None) -> Rendered:
    """One message as a line. ``kind`` None: a dead letter if it looks like one, else a
    recommendation, else a catalog record, else an event (the first that reads)."""
    now = time.time() if now is None else now
    if kind == "recommendations":
        return _recommendation(value, as_json, now)
    if kind == "dead-letters":
        return _dead_letter(value, as_json)
    if kind == "items":
        return _catalog_record(key, value, as_json)
    if kind == "events":
        return _event(value, as_json)
    attempts = (
        lambda: _dead_letter(value, as_json),
        lambda: _recommendation(value, as_json, now),
        lambda: _catalog_record(key, value, as_json),
        lambda: _event(value, as_json),
    )
    for attempt in attempts:
        try:
            return attempt()
        except Unreadable:
            continue
    raise Unreadable("not a recommendation, dead letter, catalog record or event")
