"""The business panels of the operations page, rendered by a real headless Chromium, show what
the test published: conversion by experiment variant (against the test's own Wilson intervals,
lift and two-proportion test), forecasts against the units the test sold, and the funnel
(against the test's own distinct users per stage).

The variants' totals come from the real ``streamrec attribute --once`` over lists the test
publishes (one per user exposed, stamped as the worker stamps them) and the converted users'
events; the forecasts from one round of the real ``streamrec forecast run`` over the events
(validated against ``docs/schemas/forecast.schema.json``); the events go through the real
:class:`~producers.publisher.EventPublisher`.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import orjson
import pytest
from confluent_kafka import Producer

from producers.publisher import EventPublisher
from streamrec.contract import Event, Recommendation, ScoredItem, encode_recommendation, list_id_for
from streamrec.core.attribution import ArmCounts, arm_record
from streamrec.harness.topics import read_topic
from streamrec.kafka.admin import ensure_topics
from streamrec.kafka.security import client_config
from tests.integration.conftest import free_port
from tests.integration.test_dashboard import Shown, chromium, get, headless, number

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
#: Where ``STREAMREC_DASHBOARD_SCREENSHOT=1`` saves the panels (the picture in docs/business.md).
DOCS_SCREENSHOT = ROOT / "docs" / "img" / "dashboard-business.png"
EXPERIMENT = "panel-exp"
Z95 = 1.959963984540054


def wilson(k: int, n: int) -> tuple[float, float]:
    centre = (k + Z95**2 / 2) / (n + Z95**2)
    half = Z95 / (n + Z95**2) * math.sqrt(k * (n - k) / n + Z95**2 / 4)
    return centre - half, centre + half


def two_proportion(k1: int, n1: int, k0: int, n0: int) -> tuple[float, float, float, float]:
    """Lift, its 95 % interval (log relative risk), and the pooled two-sided z-test p-value."""
    rr = (k1 / n1) / (k0 / n0)
    se = math.sqrt(1 / k1 - 1 / n1 + 1 / k0 - 1 / n0)
    pooled = (k1 + k0) / (n1 + n0)
    z = (k1 / n1 - k0 / n0) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
    return rr - 1, rr * math.exp(-Z95 * se) - 1, rr * math.exp(Z95 * se) - 1, math.erfc(abs(z) / math.sqrt(2))


def pct(text: str) -> float:
    return float(text.strip().rstrip("%")) / 100


def arm(users: int, converted: int, prefix: str) -> ArmCounts:
    counts = ArmCounts(users={f"{prefix}{i}" for i in range(users)}, converted={f"{prefix}{i}" for i in range(converted)})
    counts.clicked, counts.buyers, counts.lists = set(counts.converted), set(counts.converted), users
    return counts


def test_the_panels_show_what_was_published(bootstrap, tmp_path):
    browser = chromium()
    run = os.urandom(4).hex()
    events_topic, attribution_topic, forecasts_topic = f"events-{run}", f"attribution-{run}", f"forecasts-{run}"
    recommendations_topic = f"recommendations-{run}"
    experiment = json.dumps([{"name": EXPERIMENT, "salt": "s", "variants": [{"name": "control"}, {"name": "personal"}]}])
    ensure_topics(bootstrap, {events_topic: 2, recommendations_topic: 2})
    ensure_topics(bootstrap, {attribution_topic: 1, forecasts_topic: 1},
                  configs={attribution_topic: {"cleanup.policy": "compact"}, forecasts_topic: {"cleanup.policy": "compact"}})

    # Attribution: a stale value of a variant's totals (the job's newer one must win) and an hourly record.
    arms = {"control": (400, 20), "personal": (410, 37)}
    producer = Producer({**client_config(bootstrap), "acks": "all"})
    for key, value in [arm_record((EXPERIMENT, "control"), arm(100, 1, "c")),
                       ("hourly|x", {"kind": "hourly", "experiment": EXPERIMENT, "variant": "control", "shown": 5})]:
        producer.produce(attribution_topic, orjson.dumps(value), key.encode())
    assert producer.flush(30) == 0

    # Events: 5 weeks of item sales up to the day before yesterday (the forecaster's history), then
    # today's funnel with known distinct users per stage, and purchases with quantities.
    now = time.time()
    today = datetime.fromtimestamp(now, UTC).date()
    midnight = datetime(today.year, today.month, today.day, tzinfo=UTC).timestamp()
    history = [Event(f"h-{d}-{j}", f"buyer-{j}", f"i{j}", "purchase", midnight - d * 86400 + 12 * 3600 + j,
                     category="hist", quantity=float(j + 1 + d % 3)) for d in range(2, 37) for j in range(7)]
    rng = random.Random(7)
    low = max(midnight, now - 3000)
    events: list[Event] = []
    for u in range(80):
        user, item = f"shopper-{u}", f"i{rng.randrange(7)}"
        stages = ["view"] + ["click"] * (u % 4 != 0) + ["add_to_cart"] * (u % 3 == 0 and u % 4 != 0) + \
            ["purchase"] * (u % 6 == 0 and u % 4 != 0)
        for n, kind in enumerate(stages * rng.randint(1, 2)):
            events.append(Event(f"e-{u}-{n}", user, item, kind, rng.uniform(low, now - 1), category=f"cat{u % 3}",
                                quantity=float(rng.randint(1, 4)) if kind == "purchase" else None))
    # The experiment: one list per user exposed (as the worker stamps them), and the converted
    # users' way from view to a purchase from their list.
    for variant, (n, k) in arms.items():
        for i in range(n):
            user, trigger = f"{variant}-{i}", f"trigger-{variant}-{i}"
            list_id = list_id_for(user, trigger, "v1")
            items = (ScoredItem("i1", 0.9, "model"), ScoredItem("i2", 0.8, "model"))
            producer.produce(recommendations_topic, encode_recommendation(Recommendation(
                user, items, "v1", trigger, low - 1, low - 1, list_id=list_id, experiment=EXPERIMENT, variant=variant)),
                user.encode())
            if i < k:
                times = sorted(rng.uniform(low, now - 1) for _ in range(4))
                for kind, ts in zip(("view", "click", "add_to_cart", "purchase"), times):
                    events.append(Event(f"x-{user}-{kind}", user, "i1", kind, ts, category="cat0", price=10.0,
                                        list_id=None if kind == "view" else list_id,
                                        quantity=1.0 if kind == "purchase" else None))
    assert producer.flush(30) == 0
    with EventPublisher(bootstrap, events_topic) as publisher:
        for event in history + events:
            publisher.publish(event)
        publisher.publish_raw(b"bad", b"{not json")

    # Forecasts: a stale shop record (the newest of a key counts), then one round of the real forecaster.
    schema = json.loads((ROOT / "docs" / "schemas" / "forecast.schema.json").read_text())
    stale = {"series": "shop", "model": "window-28", "made_at": now - 3600, "history_start": "2020-01-01",
             "history_end": (today - timedelta(days=1)).isoformat(),
             "days": [{"date": (today + timedelta(days=k)).isoformat(), "units": 1.0} for k in range(7)]}
    jsonschema.validate(stale, schema)
    producer.produce(forecasts_topic, orjson.dumps(stale), b"shop")
    assert producer.flush(30) == 0
    forecaster = subprocess.run(
        [sys.executable, "-m", "streamrec.cli", "forecast", "run", "--bootstrap", bootstrap, "--events-topic", events_topic,
         "--forecasts-topic", forecasts_topic, "--dlq-topic", f"forecasts-dlq-{run}", "--model", "window-28",
         "--item-model", "window-28", "--top-items", "10", "--rounds", "1", "--refit-interval", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert forecaster.returncode == 0, forecaster.stderr[-3000:]
    # After the stale record: the shop, the categories sold in and the 7 items.
    series = {"shop", *(f"category:{e.category}" for e in history + events if e.type == "purchase"),
              *(f"item:i{j}" for j in range(7))}
    records = {key.decode(): orjson.loads(value)
               for key, value in read_topic(bootstrap, forecasts_topic, done=lambda m: len(m) >= 1 + len(series), timeout=60)}
    assert set(records) == series
    for record in records.values():
        jsonschema.validate(record, schema)
    assert records["shop"]["made_at"] > now - 60 and records["shop"]["days"][0]["date"] == today.isoformat()

    attribute = subprocess.run(
        [sys.executable, "-m", "streamrec.cli", "attribute", "--once", "--json"], cwd=ROOT, capture_output=True, text=True,
        timeout=120, env={**os.environ, "STREAMREC_KAFKA__BOOTSTRAP": bootstrap, "STREAMREC_KAFKA__EVENTS_TOPIC": events_topic,
                          "STREAMREC_KAFKA__RECOMMENDATIONS_TOPIC": recommendations_topic,
                          "STREAMREC_KAFKA__ATTRIBUTION_TOPIC": attribution_topic, "STREAMREC_EXPERIMENTS": experiment})
    assert attribute.returncode == 0, attribute.stderr[-3000:]

    # The independent expectations.
    window = [e for e in history + events if e.ts >= max(e.ts for e in events) - 24 * 3600]
    reached = {stage: {e.user_id for e in window if e.type == stage} for stage in ("view", "click", "add_to_cart", "purchase")}
    sold: dict[str, float] = {}
    for e in events:
        if e.type == "purchase":
            for name in ("shop", f"item:{e.item_id}", f"category:{e.category}"):
                sold[name] = sold.get(name, 0.0) + e.quantity
    forecast_units = {series: [d["units"] for d in r["days"]] for series, r in records.items()}
    top = ["shop", *sorted((s for s in forecast_units if s != "shop"), key=lambda s: (-sum(forecast_units[s]), s))[:5]]

    port = free_port()
    page = f"http://127.0.0.1:{port}/"
    dashboard = subprocess.Popen(
        [sys.executable, "-m", "streamrec.cli", "dashboard", "--port", str(port),
         "--metrics", f"http://127.0.0.1:{free_port()}/metrics", "--bootstrap", bootstrap, "--dlq-topic", f"dlq-{run}",
         "--attribution-topic", attribution_topic, "--forecasts-topic", forecasts_topic, "--events-topic", events_topic],
        env={**os.environ, "STREAMREC_EXPERIMENTS": experiment},
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "dashboard.log", "w"),  # noqa: SIM115
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # up, and every topic read to what the test published
            try:
                state = json.loads(get(page + "api/state"))
                arms_shown = {a["variant"]: a["users"] for a in state["conversion"]["experiments"][0].get("arms", [])}
                if state.get("ready") and state["funnel"].get("events") == len(window) \
                        and arms_shown == {v: n for v, (n, _) in arms.items()} and len(state["forecasts"]["series"]) == 6 \
                        and state["forecasts"]["series"][0]["made_at"] == records["shop"]["made_at"]:
                    break
            except (OSError, KeyError, IndexError):
                pass
            assert time.monotonic() < deadline, (tmp_path / "dashboard.log").read_text()
            time.sleep(0.3)
        assert state["funnel"]["skipped"] == {"malformed_json": 1}
        assert state["funnel"]["events"] == len(window) and state["forecasts"]["newest_day"] == today.isoformat()

        shown = Shown()
        shown.feed(headless(browser, tmp_path / "profile-dom", "--dump-dom", page).stdout)
        values = {key: texts[0] for key, texts in shown.values.items()}

        # Conversion: users, converted, rate and its interval; lift, its interval and p against the control.
        (n0, k0), (n1, k1) = arms["control"], arms["personal"]
        for variant, (n, k) in arms.items():
            key = f"{EXPERIMENT}:{variant}"
            assert number(values[f"conv_users:{key}"]) == n and number(values[f"conv_converted:{key}"]) == k
            assert abs(pct(values[f"conv_rate:{key}"]) - k / n) <= 0.00005
            shown_low, shown_high = (pct(p) for p in values[f"conv_ci:{key}"].strip("[]").split(","))
            low, high = wilson(k, n)
            assert abs(shown_low - low) <= 0.00005 and abs(shown_high - high) <= 0.00005
        lift, lift_low, lift_high = (pct(values[f"conv_lift:{EXPERIMENT}:personal"]),
                                     *(pct(p) for p in values[f"conv_lift_ci:{EXPERIMENT}:personal"].strip("[]").split(",")))
        want_lift, want_low, want_high, want_p = two_proportion(k1, n1, k0, n0)
        assert abs(lift - want_lift) <= 0.0005 and abs(lift_low - want_low) <= 0.0005 and abs(lift_high - want_high) <= 0.0005
        assert abs(number(values[f"conv_p:{EXPERIMENT}:personal"]) - want_p) <= 0.00005
        assert values[f"conv_lift:{EXPERIMENT}:control"] == "–"

        # Forecasts: the shop and the five items with the most forecast units; today's forecast and units sold.
        assert [texts for texts in shown.values["fc_series"]] == top
        for series in top:
            units = forecast_units[series]
            assert values[f"fc_day:{series}"] == today.isoformat()
            assert number(values[f"fc_first:{series}"]) == pytest.approx(units[0], abs=0.05)
            assert number(values[f"fc_total:{series}"]) == pytest.approx(sum(units), abs=0.05)
            assert number(values[f"act_first:{series}"]) == sold.get(series, 0.0)
        assert sold["shop"] > 0 and any(s.startswith("item:") for s in top)

        # The funnel: distinct users per stage, drop-out to the next, events per type.
        stages = ["view", "click", "add_to_cart", "purchase"]
        assert {s: number(values[f"funnel_users:{s}"]) for s in stages} == {s: len(reached[s]) for s in stages}
        for a, b in zip(stages, stages[1:]):
            assert abs(pct(values[f"funnel_drop:{a}:{b}"]) - (1 - len(reached[b]) / len(reached[a]))) <= 0.0005
        assert {s: number(values[f"funnel_events:{s}"]) for s in stages} == {s: sum(e.type == s for e in window) for s in stages}
        assert number(values["funnel_events"]) == len(window)

        shot = tmp_path / "panels.png"
        headless(browser, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,900",
                 "--hide-scrollbars", page + "?only=business")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("STREAMREC_DASHBOARD_SCREENSHOT"):
            shutil.copyfile(shot, DOCS_SCREENSHOT)
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=10)
