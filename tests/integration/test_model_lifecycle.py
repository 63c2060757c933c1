"""Model versions through the real broker: published, gated, adopted, refused when corrupt,
promoted and rolled back, by real workers of both engines.

Every worker starts with its own EMPTY models folder: at start it reads the models topic and
serves the version the ``serving`` record names (streams/model.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from indexing.artifact import load_artifact
from indexing.distribute import SERVING_KEY, ModelPublisher, Serving, read_version_files, version_records
from producers.publisher import EventPublisher
from producers.synthetic import SyntheticShop
from streamrec.contract import Event, encode_catalog_item
from streamrec.core.items import item_features

from .helpers import publish, trained_shop, wait_for_recommendations

pytestmark = [pytest.mark.integration, pytest.mark.lifecycle]

POLL_ENV = {"STREAMREC_WORKER__MODEL_POLL_S": "1", "STREAMREC_INDEX__USE_GPU": "false"}


@pytest.fixture
def models_topic() -> str:
    return f"models-{uuid.uuid4().hex[:8]}"


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "streamrec.cli", *args], capture_output=True, text=True, timeout=timeout)
    return result


def start_workers(start_worker, tmp_path: Path, models_topic: str, engine: str, count: int) -> list:
    env = {**POLL_ENV, "STREAMREC_KAFKA__MODELS_TOPIC": models_topic}
    return [start_worker(tmp_path / f"models-{engine}-{n}", engine=engine, name=f"{engine}-{n}", extra_env=env)
            for n in range(count)]


def wait_for_log(workers: list, text: str, *, count: int = 1, timeout: float = 90.0) -> None:
    """Wait until every worker's log holds ``text`` at least ``count`` times."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(w.log_file.read_text(errors="replace").count(text) >= count for w in workers):
            return
        time.sleep(0.5)
    missing = [w for w in workers if w.log_file.read_text(errors="replace").count(text) < count]
    raise AssertionError(f"{text!r} not in the log of {len(missing)} worker(s):\n{missing[0].log_tail(30)}")


def served_versions(bootstrap: str, topic: str, events: list[Event]) -> set[str]:
    """Model versions of the recommendations triggered by ``events``."""
    wanted = {e.event_id for e in events}
    recs = wait_for_recommendations(bootstrap, topic, events, timeout=120)
    return {rec.model_version for rec, _ in recs if rec.event_id in wanted}


def known_to(events: list[Event], *folders: Path) -> list[Event]:
    models = [load_artifact(folder, use_gpu=False) for folder in folders]
    return [e for e in events if all(e.item_id in m.row_of for m in models)]


def publish_and_promote(bootstrap: str, models_topic: str, folder: Path) -> None:
    with ModelPublisher(bootstrap, models_topic) as publisher:
        publisher.publish_version(folder)
        publisher.promote(folder.name)


@pytest.mark.parametrize("engine", ["batch", "faust"])
def test_trainer_once_publishes_a_version_that_two_workers_adopt(
    engine, bootstrap, topics, start_worker, models_topic, tmp_path
):
    shop = trained_shop(tmp_path / "trainer", items=300, users=200, history=6000, live=6000, seed=21)
    publish_and_promote(bootstrap, models_topic, shop.models_dir / "v000001")
    workers = start_workers(start_worker, tmp_path, models_topic, engine, 2)
    wait_for_log(workers, "serving model v000001 from topic")

    first, second = shop.live[:3000], shop.live[3000:]
    publish(bootstrap, topics.events, first)
    assert served_versions(bootstrap, topics.recommendations, first) == {"v000001"}

    items_topic = f"items-{topics.app_id}"  # the shop's catalog, which the trainer reads whole before training
    catalog = SyntheticShop(items=300, users=200, seed=21).catalog()
    with EventPublisher(bootstrap, items_topic) as publisher:
        for item in catalog:
            publisher.publish_raw(item.item_id.encode(), encode_catalog_item(item))
    result = cli("trainer", "--bootstrap", bootstrap, "--events-topic", topics.events, "--items-topic", items_topic,
                 "--models-topic", models_topic, "--models-dir", str(shop.models_dir), "--group", f"trainer-{topics.app_id}",
                 "--min-events", "100", "--margin", "1", "--dim", "32", "--once", "--json")
    assert result.returncode == 0, result.stderr
    cycle = json.loads(result.stdout.strip().splitlines()[-1])
    gate = cycle["gate"]
    assert cycle["version"] == "v000002" and gate["decision"] == "publish" and gate["serving_version"] == "v000001"
    assert 0 <= gate["candidate"] <= 1 and 0 <= gate["serving"] <= 1 and gate["cases"] > 0
    assert gate["lists"] == "served"  # both versions scored on the lists the worker would publish
    meta = json.loads((shop.models_dir / "v000002" / "meta.json").read_text())
    assert meta["gate"] == gate
    # every record read; each category level and brand (not title words, by default) shared by two or more of the
    # window's items learnt with them
    known = set(load_artifact(shop.models_dir / "v000002", use_gpu=False).row_of)
    shared = Counter(f for item in catalog if item.item_id in known for f in item_features(item) if f[0] != "word")
    assert meta["training"]["catalog_items"] == len(catalog)
    assert meta["training"]["refine"]["features"] == sum(n >= 2 for n in shared.values()) > 0

    wait_for_log(workers, "swapping model v000001 -> v000002")
    for n, worker in enumerate(workers):  # each worker wrote its own verified copy
        assert read_version_files(tmp_path / f"models-{engine}-{n}" / "v000002") == read_version_files(shop.models_dir / "v000002")
    second = known_to(second, shop.models_dir / "v000002")
    publish(bootstrap, topics.events, second)
    assert served_versions(bootstrap, topics.recommendations, second) == {"v000002"}


def test_a_corrupt_or_incomplete_version_is_never_adopted(bootstrap, topics, start_worker, models_topic, tmp_path):
    shop = trained_shop(tmp_path / "trainer", items=300, users=200, history=6000, live=2000, seed=22)
    publish_and_promote(bootstrap, models_topic, shop.models_dir / "v000001")
    workers = start_workers(start_worker, tmp_path, models_topic, "batch", 2)
    wait_for_log(workers, "serving model v000001 from topic")

    files = read_version_files(shop.models_dir / "v000001")
    relabel = {**files, "meta.json": files["meta.json"].replace(b"v000001", b"v000002")}
    corrupt = version_records("v000002", relabel, chunk_bytes=16 * 1024)
    key, value = corrupt[1]
    corrupt[1] = (key, value[:100] + bytes(b ^ 0xFF for b in value[100:108]) + value[108:])
    incomplete = version_records("v000003", {**files, "meta.json": files["meta.json"].replace(b"v000001", b"v000003")},
                                 chunk_bytes=16 * 1024)
    del incomplete[2]
    with ModelPublisher(bootstrap, models_topic) as publisher:
        publisher.send(corrupt + [(SERVING_KEY, Serving("v000002", ["v000001", "v000002"]).encode())])
        wait_for_log(workers, "topic says serve v000002, but model v000002 is corrupt: chunk 1 (in")
        publisher.send(incomplete + [(SERVING_KEY, Serving("v000003", ["v000001", "v000003"]).encode())])
        wait_for_log(workers, "topic says serve v000003, but model v000003 is incomplete: 1 of")
    for worker in workers:
        log = worker.log_file.read_text(errors="replace")
        assert "not adopting v000002" in log and "has sha256" in log and ", expected " in log
        assert "chunks missing (2)" in log and "swapping model" not in log
        assert not (worker.config.models_dir / "v000002").exists() and not (worker.config.models_dir / "v000003").exists()
    publish(bootstrap, topics.events, shop.live)
    assert served_versions(bootstrap, topics.recommendations, shop.live) == {"v000001"}


def test_promote_and_rollback_through_the_cli_change_what_workers_serve(
    bootstrap, topics, start_worker, models_topic, tmp_path
):
    shop = trained_shop(tmp_path / "trainer", items=300, users=200, history=6000, live=3000, seed=23)
    publish_and_promote(bootstrap, models_topic, shop.models_dir / "v000001")
    workers = start_workers(start_worker, tmp_path, models_topic, "batch", 2)
    kafka = ["--bootstrap", bootstrap, "--models-topic", models_topic]
    topic = kafka

    trained = cli("train", "--synthetic", "--items", "300", "--users", "200", "--events", "5000", "--seed", "23",
                  "--dim", "32", "--models-dir", str(shop.models_dir), "--publish", *kafka)
    assert trained.returncode == 0, trained.stderr
    assert "published v000002" in trained.stderr
    wait_for_log(workers, "swapping model v000001 -> v000002")

    rolled = cli("model", "rollback", *topic)
    assert rolled.returncode == 0 and "serving v000001" in rolled.stdout, rolled.stderr
    wait_for_log(workers, "swapping model v000002 -> v000001")
    live = known_to(shop.live, shop.models_dir / "v000001", shop.models_dir / "v000002")
    first, second = live[: len(live) // 2], live[len(live) // 2 :]
    publish(bootstrap, topics.events, first)
    assert served_versions(bootstrap, topics.recommendations, first) == {"v000001"}

    again = cli("model", "rollback", *topic)
    assert again.returncode != 0 and "v000001 is the only version ever promoted" in again.stderr
    unknown = cli("model", "promote", "v000009", *topic)
    assert unknown.returncode != 0 and "unknown model version 'v000009': the topic holds v000001, v000002" in unknown.stderr
    promoted = cli("model", "promote", "v000002", *topic)
    assert promoted.returncode == 0, promoted.stderr
    wait_for_log(workers, "swapping model v000001 -> v000002", count=2)
    publish(bootstrap, topics.events, second)
    assert served_versions(bootstrap, topics.recommendations, second) == {"v000002"}

    listing = json.loads(cli("model", "list", "--json", *topic).stdout)
    assert listing["serving"] == "v000002" and listing["history"] == ["v000001", "v000002"]
    assert [(v["version"], v["serving"], v["problem"]) for v in listing["versions"]] == [
        ("v000001", False, None), ("v000002", True, None)]
    table = cli("model", "list", *topic).stdout
    assert "* v000002" in table and "promoted so far: v000001 -> v000002" in table
