"""The operations page, rendered by a real headless Chromium, shows what the worker's
``/metrics`` reports: events by type, lists, latency quantiles, lag, dead letters, model.

Chromium is driven through its own command line (``--dump-dom`` after the page's script has
run, ``--screenshot``): no driver package is needed to read a rendered DOM once. Without
Chromium the test skips, except under CI (``CI`` set), where it fails: ``make test`` installs
Debian's ``chromium`` when it runs as root with apt-get.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import orjson
import pytest

from producers.publisher import EventPublisher
from streamrec.kafka.admin import ensure_topics
from streams.dashboard import bucket_quantile, by_label, histogram_buckets, parse_metrics
from tests.integration.conftest import free_port
from tests.integration.helpers import trained_shop, wait_for_recommendations

pytestmark = pytest.mark.integration

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: Where ``STREAMREC_DASHBOARD_SCREENSHOT=1`` saves the page (the picture in docs/operations.md).
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "dashboard.png"


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    message = f"no Chromium found ({', '.join(CHROMIUM_NAMES)}); `apt-get install -y chromium` (make test does, as root)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium once (a fresh profile, nothing fetched but the page)."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=4000"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=90, check=True)


class Shown(HTMLParser):
    """The text of every element with a ``data-k`` attribute, by key (a list: keys may repeat)."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, list[str]] = {}
        self._open: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        key = dict(attrs).get("data-k")
        self._open.append((tag, key))
        if key is not None:
            self.values.setdefault(key, []).append("")

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, key in reversed(self._open):
            if key is not None:
                self.values[key][-1] += data
                break


def number(text: str) -> float:
    return float(text.replace(",", "").strip())


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read()


def test_the_page_shows_what_metrics_reports(bootstrap, topics, start_worker, tmp_path):
    browser = chromium()
    shop = trained_shop(tmp_path / "models", items=500, users=100, history=6_000, live=1_000, seed=31)
    good = shop.live
    metrics_port = free_port()
    ensure_topics(bootstrap, {topics.events: 2, topics.dlq: 2})
    start_worker(shop.models_dir, partitions=2, extra_env={"STREAMREC_WORKER__METRICS_PORT": str(metrics_port)})
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    with EventPublisher(bootstrap, topics.events) as publisher:
        for event in good:
            publisher.publish(event)
        publisher.publish_raw(b"u-x", b"{oops")
        publisher.publish_raw(good[0].user_id.encode(), orjson.dumps({**good[0].to_dict(), "event_id": "t", "type": "teleport"}))
        publisher.publish_raw(b"u-y", b"{\"also\": broken")
    wait_for_recommendations(bootstrap, topics.recommendations, good, timeout=120)

    def settled() -> dict:
        samples = parse_metrics(get(metrics_url).decode())
        lag = by_label(samples, "streamrec_consumer_lag", "partition")
        done = (sum(by_label(samples, "streamrec_events_total", "type").values()) == len(good)
                and sum(by_label(samples, "streamrec_dead_letters_total", "reason").values()) == 3
                and lag and not any(lag.values()))
        return samples if done else {}

    deadline = time.monotonic() + 60
    while not (samples := settled()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert samples, "the worker's metrics did not settle"

    port = free_port()
    page = f"http://127.0.0.1:{port}/"
    dashboard = subprocess.Popen(
        [sys.executable, "-m", "streamrec.cli", "dashboard", "--port", str(port), "--metrics", metrics_url,
         "--bootstrap", bootstrap, "--dlq-topic", topics.dlq],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "dashboard.log", "w"),  # noqa: SIM115
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # up, one scrape after the worker settled, and the dead letters read
            try:
                state = json.loads(get(page + "api/state"))
                tail = state.get("dead_letter_tail") or {}
                if state.get("ready") and sum(v["total"] for v in state["events"].values()) == len(good) \
                        and len(tail.get("latest", [])) == 3:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "dashboard.log").read_text()
            time.sleep(0.3)

        dom = headless(browser, tmp_path / "profile-dom", "--dump-dom", page).stdout
        shown = Shown()
        shown.feed(dom)
        values = shown.values
        samples = parse_metrics(get(metrics_url).decode())  # what /metrics says now (settled: unchanged)

        events = by_label(samples, "streamrec_events_total", "type")
        assert {k.split(":", 1)[1]: number(v[0]) for k, v in values.items() if k.startswith("events_total:")} == events
        assert events == {t: float(n) for t, n in Counter(e.type for e in good).items()} | {
            t: 0.0 for t in set(events) - {e.type for e in good}}
        assert number(values["lists_total"][0]) == sum(samples["streamrec_lists_total"].values())
        assert number(values["latency_count"][0]) == sum(samples["streamrec_event_to_list_seconds_count"].values())
        buckets = histogram_buckets(samples, "streamrec_event_to_list_seconds")
        for q in (50, 95, 99):
            assert values[f"latency_p{q}"] == [f"{bucket_quantile(q / 100, buckets) * 1000:.1f}"]
        dead = by_label(samples, "streamrec_dead_letters_total", "reason")
        assert dead == {"malformed_json": 2.0, "unknown_type": 1.0}
        assert {k.split(":", 1)[1]: number(v[0]) for k, v in values.items() if k.startswith("dead_letters:")} == dead
        assert sorted(values["latest_reason"]) == ["malformed_json", "malformed_json", "unknown_type"]
        target = f"127.0.0.1:{metrics_port}"
        lag = by_label(samples, "streamrec_consumer_lag", "partition")
        assert {k.rsplit(":", 1)[1]: number(v[0]) for k, v in values.items() if k.startswith(f"lag:{target}:")} == lag
        assert lag == {"0": 0.0, "1": 0.0}
        assert values[f"model:{target}"] == list(by_label(samples, "streamrec_model_info", "version")) == [shop.model.version]

        shot = tmp_path / "dashboard.png"
        headless(browser, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,1000",
                 "--hide-scrollbars", page)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("STREAMREC_DASHBOARD_SCREENSHOT"):
            DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, DOCS_SCREENSHOT)
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=10)
