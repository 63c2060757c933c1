"""The real ``streamrec`` command line against the session's broker: the catalog in, dead letters out."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, ConfigResource

from producers.publisher import EventPublisher
from streamrec.contract import decode_catalog_item, encode_dead_letter
from streamrec.kafka.admin import ensure_topics

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CATALOG = (
    '{"item_id": "sku-1", "title": "Rose cream", "category": ["Beauty", "Skin Care"], "price": 9.5, "currency": "GBP"}\n'
    '{"item_id": "sku-2", "available": false, "attributes": {"size": "50 ml"}}\n'
    '{"item_id": "sku-ü", "brand": "Acme"}\n'
)


def streamrec(bootstrap: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m streamrec.cli`` from this checkout, pointed at the session's broker."""
    env = {**os.environ, "STREAMREC_KAFKA__BOOTSTRAP": bootstrap}
    result = subprocess.run([sys.executable, "-m", "streamrec.cli", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"streamrec {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 60) -> list[tuple[bytes | None, bytes | None]]:
    """The first ``count`` messages of ``topic`` (all partitions), as (key, value), read independently."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    messages: list[tuple[bytes | None, bytes | None]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                messages.append((message.key(), message.value()))
    finally:
        consumer.close()
    return messages


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.mark.timeout(300)
def test_produce_catalog_and_remove(bootstrap: str, run_id: str, tmp_path: Path) -> None:
    topic = f"items-{run_id}"
    path = tmp_path / "items.jsonl"
    path.write_text(CATALOG, encoding="utf-8")

    result = streamrec(bootstrap, "produce", "--catalog", str(path), "--topic", topic, "--json", "--no-progress")
    summary = orjson.loads(result.stdout)
    assert (summary["sent"], summary["skipped"], summary["topic"]) == (3, 0, topic)

    messages = read_topic(bootstrap, topic, 3)
    by_key = {key: decode_catalog_item(key, value) for key, value in messages}
    assert set(by_key) == {b"sku-1", "sku-ü".encode(), b"sku-2"}
    assert by_key[b"sku-1"].category == ("Beauty", "Skin Care") and by_key[b"sku-1"].price == 9.5
    assert by_key[b"sku-2"].available is False and by_key[b"sku-2"].attributes == {"size": "50 ml"}
    assert orjson.loads(dict(messages)["sku-ü".encode()]) == {"item_id": "sku-ü", "brand": "Acme", "available": True}

    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    config = admin.describe_configs([resource])[resource].result(timeout=30)
    assert config["cleanup.policy"].value == "compact"
    assert len(admin.list_topics(topic, timeout=30).topics[topic].partitions) >= 1

    streamrec(bootstrap, "produce", "--catalog-remove", "sku-2", "--topic", topic, "--no-progress")
    messages = read_topic(bootstrap, topic, 4)
    tombstones = [(key, value) for key, value in messages if value is None]
    assert tombstones == [(b"sku-2", None)]
    assert decode_catalog_item(b"sku-2", None) is None


@pytest.mark.timeout(300)
def test_consume_prints_dead_letters_as_json(bootstrap: str, run_id: str) -> None:
    topic = f"events-dlq-{run_id}"
    ensure_topics(bootstrap, {topic: 1})
    letters = [
        (b"u1", encode_dead_letter(b'{"user_id": "u1", "ts": "yesterday"}', "wrong_type", "field 'ts' must be a number",
                                   topic="events", partition=0, offset=5, rejected_at=1_700_000_000.0)),
        (None, encode_dead_letter(b"\xff\xfe binary", "not_utf8", "invalid start byte", topic="events", partition=1,
                                  offset=9, rejected_at=1_700_000_001.0)),
    ]
    with EventPublisher(bootstrap, topic) as publisher:
        for key, value in letters:
            publisher.publish_raw(key, value)

    result = streamrec(bootstrap, "consume", "--topic", topic, "--json", "--from-beginning",
                       "--max-messages", "2", "--timeout", "60")
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 2, result.stdout + result.stderr
    assert lines[0]["reason"] == "wrong_type" and lines[0]["raw"] == '{"user_id": "u1", "ts": "yesterday"}'
    assert (lines[0]["topic"], lines[0]["partition"], lines[0]["offset"]) == ("events", 0, 5)
    assert lines[0]["raw_size"] == 36 and lines[0]["raw_truncated"] is False
    assert lines[1]["reason"] == "not_utf8" and "raw" not in lines[1] and lines[1]["raw_base64"] == "//4gYmluYXJ5"

    readable = streamrec(bootstrap, "consume", "--topic", topic, "--from-beginning", "--max-messages", "2",
                         "--timeout", "60")
    assert "events/0@5 rejected: wrong_type (field 'ts' must be a number)" in readable.stdout
