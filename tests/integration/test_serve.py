"""``streamrec serve`` on the real broker: two workers, two serve instances (read replicas of the
workers' changelog, the catalog and the model), real HTTP requests."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from producers.publisher import EventPublisher
from streamrec.contract import CatalogItem, encode_catalog_item
from streamrec.harness.worker import WorkerConfig
from streamrec.kafka.admin import COMPACTED, ensure_topics
from streams.tables import read_user_states

from .conftest import free_port
from .helpers import publish, trained_shop, wait_for_recommendations

pytestmark = [pytest.mark.integration]

K = 10


def get(port: int, path: str) -> tuple[int, dict]:
    """``GET`` a path of a serve instance: the status and the JSON body (errors too)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class Serve:
    """One ``streamrec serve`` child process on a free port."""

    def __init__(self, env: dict[str, str], folder: Path, name: str) -> None:
        self.port = free_port()
        self.log = folder / f"{name}.log"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streamrec.cli", "--log-level", "INFO", "serve", "--port", str(self.port),
                 "--data-dir", str(folder / f"{name}-data")],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                status, body = get(self.port, "/readyz")
                if status == 200:
                    return body
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.3)
        raise TimeoutError(f"serve on {self.port} not ready after {timeout:g} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def owners(bootstrap: str, group: str, topic: str, timeout: float = 60.0) -> int:
    """How many members of the consumer group own a partition of ``topic``, once each partition has one."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while True:
        described = admin.describe_consumer_groups([group])[group].result(timeout=10)
        held = [{tp.partition for tp in m.assignment.topic_partitions if tp.topic == topic} for m in described.members]
        if described.state == ConsumerGroupState.STABLE and sum(map(len, held)) == 2 and all(held) and len(held) == 2:
            return len(held)
        if time.monotonic() > deadline:
            return sum(1 for h in held if h)
        time.sleep(0.5)


def answers_for(port: int, users: list[str], k: int = K) -> dict[str, dict]:
    out = {}
    for user in users:
        status, body = get(port, f"/v1/users/{user}/recommendations?k={k}")
        assert status == 200, body
        out[user] = body
    return out


@pytest.mark.parametrize("engine", ["batch", "faust"])
def test_two_serve_instances_answer_every_user_of_both_workers_like_the_workers(bootstrap, topics, start_worker,
                                                                                 tmp_path, engine) -> None:
    shop = trained_shop(tmp_path / "models", items=400, users=120, history=12_000, live=3_000, seed=13)
    items_topic = topics.events.replace("events", "items")
    ensure_topics(bootstrap, {items_topic: 2}, configs={items_topic: COMPACTED})
    extra = {"STREAMREC_KAFKA__ITEMS_TOPIC": items_topic, "STREAMREC_INDEX__USE_GPU": "false"}
    workers = [start_worker(shop.models_dir, partitions=2, name=f"worker-{n}", engine=engine, extra_env=extra)
               for n in range(2)]
    env = WorkerConfig(bootstrap=bootstrap, models_dir=shop.models_dir, data_dir=tmp_path / "unused",
                       app_id=topics.app_id, events_topic=topics.events, recommendations_topic=topics.recommendations,
                       dlq_topic=topics.dlq, partitions=2, extra_env=extra).env()
    instances = [Serve(env, tmp_path, f"serve-{n}") for n in range(2)]
    try:
        for instance in instances:
            instance.wait_ready()

        assert owners(bootstrap, topics.app_id, topics.events) == 2, "each worker must own one events partition"
        live = shop.live[:2_000]
        publish(bootstrap, topics.events, live)
        recs = [rec for rec, _ in wait_for_recommendations(bootstrap, topics.recommendations, live, timeout=240)]
        latest = {rec.user_id: rec for rec in recs}  # each user's latest list (a user's lists keep their order)
        users = sorted(latest)
        assert len(users) > 50

        # Both instances: once each state is applied, every user's answer is the worker's latest list.
        for instance in instances:
            deadline = time.monotonic() + 60
            pending = list(users)
            while pending and time.monotonic() < deadline:
                got = answers_for(instance.port, pending)
                pending = [u for u in pending if got[u]["state_event_id"] != latest[u].event_id]
                if pending:
                    time.sleep(0.5)
            assert not pending, f"{len(pending)} user(s) not caught up on serve {instance.port}"
            got = answers_for(instance.port, users)
            mismatched = []
            for user in users:
                ours, theirs = got[user]["items"], latest[user].items
                same = ([i["item_id"] for i in ours] == [i.item_id for i in theirs]
                        and all(abs(a["score"] - b.score) <= 1e-5 for a, b in zip(ours, theirs, strict=True)
                                if b.source == "model"))
                if not same:
                    mismatched.append(user)
            # A list that needed trending backfill may differ: trending counts move with every event.
            backfilled = {u for u in users if any(i.source != "model" for i in latest[u].items)}
            assert set(mismatched) <= backfilled, f"serve {instance.port}: {len(mismatched)} list(s) differ"
            assert len(backfilled) <= len(users) // 10
            assert all(len(got[u]["items"]) == K for u in users)
            assert all(got[u]["model_version"] == latest[u].model_version for u in users)

            status, ready = get(instance.port, "/readyz")
            assert status == 200 and ready["ready"] and ready["users"] == len(users)
            status, body = get(instance.port, "/v1/users/never-seen-shopper/recommendations")
            assert status == 200 and len(body["items"]) == K and body["state_event_id"] is None
            assert {i["source"] for i in body["items"]} == {"trending"}
            status, body = get(instance.port, "/v1/users/u-1/recommendations?k=0")
            assert status == 400 and body["error"] == "k_out_of_range" and body["detail"]
            status, body = get(instance.port, "/v1/items/no-such-item/similar")
            assert status == 404 and body["error"] == "unknown_item"

        # Similar items: k neighbours, never the item itself.
        some_item = latest[users[0]].items[0].item_id
        for instance in instances:
            status, body = get(instance.port, f"/v1/items/{some_item}/similar?k={K}")
            assert status == 200 and len(body["items"]) == K and some_item not in {i["item_id"] for i in body["items"]}

        # An item marked unavailable in the catalog leaves every answer of both instances.
        popular = Counter(i["item_id"] for u in users for i in answers_for(instances[0].port, [u])[u]["items"])
        gone = popular.most_common(1)[0][0]
        with EventPublisher(bootstrap, items_topic, linger_ms=5) as publisher:
            publisher.publish_raw(gone.encode(), encode_catalog_item(CatalogItem(gone, available=False)))
        written = time.monotonic()
        for instance in instances:
            while True:
                got = answers_for(instance.port, users)
                holding = [u for u in users if gone in {i["item_id"] for i in got[u]["items"]}]
                if not holding:
                    break
                assert time.monotonic() - written < 20, f"{len(holding)} answer(s) still hold {gone}"
                time.sleep(0.2)
            assert all(len(got[u]["items"]) == K for u in users)
            status, body = get(instance.port, f"/v1/items/{some_item}/similar?k={K}")
            assert gone not in {i["item_id"] for i in body["items"]}
    finally:
        for instance in instances:
            instance.stop()
        for worker in workers:
            worker.stop()

    # The users came from both partitions, each owned by one of the two workers (checked before the
    # events were sent), and both instances answered them all.
    states = {}
    for worker in workers:
        states.update(read_user_states(worker.config.data_dir))
    assert set(states) == set(users)
    assert {state.partition for state in states.values()} == {0, 1}
