"""The live forecaster against the real broker: purchases in, forecasts on the compacted topic out."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import numpy as np
import orjson
import pytest

from streamrec.contract import Event, decode_dead_letter
from streamrec.harness.topics import read_topic
from streamrec.kafka.admin import ensure_topics, topic_config

from .helpers import publish

ROOT = Path(__file__).resolve().parents[2]
PATTERN = [6, 8, 10, 12, 14, 0, 4]  # Monday..Sunday: closed on Saturdays


@pytest.mark.integration
def test_forecaster_publishes_the_constant_and_the_weekly_pattern(bootstrap: str) -> None:
    run = uuid.uuid4().hex[:8]
    events_topic, forecasts_topic, dlq_topic = f"events-{run}", f"forecasts-{run}", f"forecasts-dlq-{run}"
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=7 * 8)
    start -= timedelta(days=start.weekday())  # a Monday, 8 to 9 weeks ago
    events: list[Event] = []
    day = start
    while day < today:
        noon = (day + timedelta(hours=12)).timestamp()
        wd = day.weekday()
        if wd != 5:
            # "steady": 10 units every trading day, in two purchases; "weekly": PATTERN units.
            events.append(Event(f"s{noon}a", "u1", "steady", "purchase", noon, category="mugs", quantity=4))
            events.append(Event(f"s{noon}b", "u2", "steady", "purchase", noon + 60, category="mugs", quantity=6))
            if PATTERN[wd]:
                events.append(Event(f"w{noon}", "u3", "weekly", "purchase", noon + 120, category="cards",
                                    quantity=PATTERN[wd]))
            events.append(Event(f"v{noon}", "u4", "weekly", "view", noon + 180, category="cards"))
        day += timedelta(days=1)
    events.append(Event("today", "u1", "steady", "purchase", today.timestamp() + 60, quantity=1))  # today: partial
    publish(bootstrap, events_topic, events, partitions=2)
    ensure_topics(bootstrap, {events_topic: 2})
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(events_topic, b'{"event_id": "bad", "user_id": "u", "item_id": "x", "type": "purchase", '
                                   b'"ts": 1700000000, "quantity": -3}', key=b"u")
    producer.flush(10)

    cli = subprocess.run(
        [sys.executable, "-m", "streamrec.cli", "forecast", "run", "--bootstrap", bootstrap,
         "--events-topic", events_topic, "--forecasts-topic", forecasts_topic, "--dlq-topic", dlq_topic,
         "--model", "ets", "--item-model", "seasonal-window-4", "--rounds", "1", "--refit-interval", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert cli.returncode == 0, cli.stderr[-3000:]
    summary = orjson.loads(cli.stdout.strip().splitlines()[-1])
    assert summary["rejected"] == {"bad_quantity": 1} and summary["rounds"] == 1

    messages = read_topic(bootstrap, forecasts_topic, done=lambda m: len(m) >= 5, timeout=60)
    records = {key.decode(): orjson.loads(value) for key, value in messages}
    assert set(records) == {"shop", "category:mugs", "category:cards", "item:steady", "item:weekly"}
    assert topic_config(bootstrap, forecasts_topic)["cleanup.policy"] == "compact"
    schema = json.loads((ROOT / "docs" / "schemas" / "forecast.schema.json").read_text())
    for record in records.values():
        jsonschema.validate(record, schema)

    first_day = today.date()
    days = [first_day + timedelta(days=k) for k in range(7)]
    for key, record in records.items():
        assert [d["date"] for d in record["days"]] == [d.isoformat() for d in days], key
        assert record["history_end"] == (first_day - timedelta(days=1)).isoformat()
    expected = {
        "item:steady": [0 if d.weekday() == 5 else 10 for d in days],
        "category:mugs": [0 if d.weekday() == 5 else 10 for d in days],
        "item:weekly": [PATTERN[d.weekday()] for d in days],
        "category:cards": [PATTERN[d.weekday()] for d in days],
        "shop": [0 if d.weekday() == 5 else 10 + PATTERN[d.weekday()] for d in days],
    }
    for key, want in expected.items():
        got = np.array([d["units"] for d in records[key]["days"]])
        assert np.allclose(got, want, atol=0.5), (key, got.tolist(), want)
    hours = records["shop"]["hours_of_first_day"]
    assert len(hours) == 24 and sum(hours) == pytest.approx(records["shop"]["days"][0]["units"], rel=1e-3)
    assert hours[12] == pytest.approx(sum(hours), rel=1e-3)  # every sale of the history was at noon UTC

    letters = read_topic(bootstrap, dlq_topic, done=lambda m: len(m) >= 1, timeout=30)
    letter = decode_dead_letter(letters[0][1])
    assert letter["reason"] == "bad_quantity" and letter["topic"] == events_topic
