"""``streamrec report behaviour`` reads the real broker's events topic."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from streamrec.contract import Event

from .helpers import publish

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_report_behaviour_over_the_last_hours_of_the_topic(bootstrap: str, tmp_path: Path) -> None:
    topic = f"events-{uuid.uuid4().hex[:8]}"
    now = time.time() - 60
    old = now - 3 * 86400  # outside --last 24h
    events = [
        Event("o1", "z", "old", "view", old, category="shoes"), Event("o2", "z", "old", "purchase", old + 5, category="shoes"),
        # in range: shoes 3 viewers, 2 carts, 1 buyer; hats 1 viewer
        Event("1", "a", "s1", "view", now - 600, category="shoes"), Event("2", "b", "s1", "view", now - 590, category="shoes"),
        Event("3", "c", "s2", "view", now - 580, category="shoes"),
        Event("4", "a", "s1", "add_to_cart", now - 570, category="shoes"),
        Event("5", "b", "s1", "add_to_cart", now - 560, category="shoes"),
        Event("6", "a", "s1", "purchase", now - 550, category="shoes", quantity=2),
        Event("7", "a", "h1", "view", now, category="hats"),
    ]
    publish(bootstrap, topic, events, partitions=2)
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, b"not json", key=b"x")
    producer.flush(10)
    plot = tmp_path / "funnel.png"
    cli = subprocess.run(
        [sys.executable, "-m", "streamrec.cli", "report", "behaviour", "--bootstrap", bootstrap, "--events-topic", topic,
         "--last", "24h", "--json", "--plot", str(plot)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr[-3000:]
    result = orjson.loads(cli.stdout)
    assert result["events"] == 7 and result["rejected"] == {"malformed_json": 1}
    totals = {r["category"]: r for r in result["funnel"] if r["hour"] == "*"}
    assert totals["shoes"]["users"] == {"view": 3, "add_to_cart": 2, "purchase": 1}
    assert totals["shoes"]["drop_out"] == {"view→add_to_cart": pytest.approx(1 / 3), "add_to_cart→purchase": 0.5}
    assert totals["*"]["users"] == {"view": 3, "add_to_cart": 2, "purchase": 1}
    assert totals["hats"]["users"]["view"] == 1 and "old" not in {t["item_id"] for t in result["rising"] + result["falling"]}
    # Sessions: a's events span 600 s (one session); b 30 s; c one event.
    assert result["sessions"]["count"] == 3 and result["sessions"]["length_s"]["max"] == pytest.approx(600)
    assert result["interest"]["users"] == 3 and result["interest"]["single_category_users"] == pytest.approx(2 / 3)
    assert plot.stat().st_size > 10_000

    bad = subprocess.run([sys.executable, "-m", "streamrec.cli", "report", "behaviour", "--bootstrap", bootstrap,
                          "--events-topic", topic, "--last", "yesterday"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "is not a duration like 24h" in bad.stderr
