"""Every topic's messages as readable lines (``streamrec consume``)."""

from __future__ import annotations

import base64

import click
import orjson
import pytest
from click.testing import CliRunner

from streamrec.cli.readable import Unreadable, dead_letter_view, render
from streamrec.cli.worker import consume, topic_kind
from streamrec.config import get_settings
from streamrec.contract import (
    CatalogItem,
    Event,
    Recommendation,
    ScoredItem,
    encode_catalog_item,
    encode_dead_letter,
    encode_event,
    encode_recommendation,
)

LETTER = encode_dead_letter(b'{"user_id": 3}', "wrong_type", "field 'user_id' must be a string, got int",
                            topic="events", partition=1, offset=42, rejected_at=1_700_000_000.0)
BINARY_LETTER = encode_dead_letter(b"\xff\x00 junk", "not_utf8", "bad bytes", topic="events", partition=0, offset=7,
                                   rejected_at=1_700_000_000.0)


def test_dead_letter_json_has_its_fields_and_the_raw_text() -> None:
    for kind in ("dead-letters", None):
        line = orjson.loads(render(kind, b"u1", LETTER, as_json=True).line)
        assert line == {"reason": "wrong_type", "detail": "field 'user_id' must be a string, got int", "topic": "events",
                        "partition": 1, "offset": 42, "rejected_at": 1_700_000_000.0, "raw_size": 14,
                        "raw_truncated": False, "raw": '{"user_id": 3}'}


def test_dead_letter_that_is_not_utf8_keeps_base64() -> None:
    view = dead_letter_view(BINARY_LETTER)
    assert "raw" not in view and base64.b64decode(view["raw_base64"]) == b"\xff\x00 junk"
    line = render("dead-letters", None, BINARY_LETTER, as_json=False).line
    assert line == ("2023-11-14T22:13:20Z events/0@7 rejected: not_utf8 (bad bytes); raw 7 bytes: "
                    "not UTF-8, base64 /wAganVuaw==")


def test_readable_dead_letter_line() -> None:
    line = render("dead-letters", b"u1", LETTER, as_json=False).line
    assert line == ("2023-11-14T22:13:20Z events/1@42 rejected: wrong_type (field 'user_id' must be a string, got int); "
                    "raw 14 bytes: '{\"user_id\": 3}'")


def test_catalog_records_and_tombstones() -> None:
    item = CatalogItem("sku-1", title="Rose cream", category=("Beauty", "Skin"), price=9.5, currency="GBP")
    raw = encode_catalog_item(item)
    assert orjson.loads(render("items", b"sku-1", raw, as_json=True).line) == orjson.loads(raw)
    assert render("items", b"sku-1", raw, as_json=False).line == "sku-1: Rose cream; Beauty > Skin; 9.50 GBP; available"
    assert orjson.loads(render("items", b"sku-1", None, as_json=True).line) == {"item_id": "sku-1", "removed": True}
    assert render("items", b"sku-1", None, as_json=False).line == "sku-1: removed"
    with pytest.raises(Unreadable, match="not a catalog record \\(key_mismatch"):
        render("items", b"sku-2", raw, as_json=True)


def test_recommendations_and_events_carry_their_user() -> None:
    rec = Recommendation("u1", (ScoredItem("a", 0.5),), "v1", "e1", 1.7e9, 1.7e9 + 0.02)
    rendered = render("recommendations", b"u1", encode_recommendation(rec), as_json=False, now=1.7e9 + 1)
    assert (rendered.user_id, rendered.line) == ("u1", "u1: a (0.500)  [model v1, event e1, 20 ms after the event]")
    assert render(None, b"u1", encode_recommendation(rec), as_json=True).kind == "recommendations"
    stamped = Recommendation("u1", rec.items, "v1", "e1", 1.7e9, 1.7e9 + 0.02, "abc", "ab-1", "control")
    assert render("recommendations", b"u1", encode_recommendation(stamped), as_json=False, now=1.7e9 + 1).line == \
        "u1: a (0.500)  [model v1, event e1, 20 ms after the event, ab-1/control]"
    event = Event("e1", "u7", "sku-1", "view", 1_700_000_000.0)
    rendered = render(None, b"u7", encode_event(event), as_json=False)
    assert (rendered.kind, rendered.user_id) == ("events", "u7")
    assert rendered.line == "2023-11-14T22:13:20Z u7 view sku-1  [event e1]"


def test_garbage_is_unreadable_with_a_reason() -> None:
    with pytest.raises(Unreadable, match="not a recommendation, dead letter, catalog record or event"):
        render(None, None, b"{not json", as_json=True)
    with pytest.raises(Unreadable, match="not a dead letter"):
        render("dead-letters", None, encode_event(Event("e1", "u7", "sku-1", "view", 1.7e9)), as_json=True)


def test_topic_kinds_come_from_the_settings() -> None:
    kafka = get_settings().kafka
    assert topic_kind(kafka.dlq_topic, kafka) == "dead-letters"
    assert topic_kind(kafka.items_topic, kafka) == "items"
    assert topic_kind(kafka.recommendations_topic, kafka) == "recommendations"
    assert topic_kind("something-else", kafka) is None


def test_user_filter_on_a_topic_without_users_is_a_sentence() -> None:
    group = click.Group(commands=[consume])
    result = CliRunner().invoke(group, ["consume", "--topic", get_settings().kafka.dlq_topic, "--user", "u1"])
    assert result.exit_code == 2
    assert "holds dead letters, which belong to no user; --user filters recommendations and events" in result.output


def test_an_erasure_request_reads_as_one():
    from streamrec.contract import ErasureRequest, encode_erasure

    raw = encode_erasure(ErasureRequest("u-1", 1764240000.0))
    assert render("events", b"u-1", raw, as_json=False).line == "2025-11-27T10:40:00Z u-1 erasure request (streamrec forget)"
    assert render(None, b"u-1", raw, as_json=True).line == '{"erase_user_id":"u-1","requested_at":1764240000.0}'
