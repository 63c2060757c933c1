"""Attribution and experiments on the real broker: a real worker running an experiment, the
closed-loop shoppers reacting to its lists, ``streamrec attribute`` and ``streamrec report``
as processes. The attributed counts must equal the shoppers' own ground truth."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict

import orjson
import pytest

from producers.closed_loop import run_closed_loop
from producers.publisher import EventPublisher
from producers.simulator import ShopperModel, Shoppers
from producers.synthetic import SyntheticShop
from streamrec.contract import decode_dead_letter, decode_recommendation
from streamrec.core.experiments import assign, experiment_from_dict
from streamrec.harness.topics import read_topic

from .helpers import trained_shop

pytestmark = pytest.mark.integration

SEED = 31
ITEMS, USERS = 600, 120
EXPERIMENT = {"name": "ab-1", "salt": "it-salt", "variants": [
    {"name": "control", "weight": 1, "kind": "trending"},
    {"name": "treatment", "weight": 1, "kind": "model"},
]}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    trained_shop(folder, items=ITEMS, users=USERS, history=15_000, live=0, seed=SEED)
    return folder


def cli(env: dict[str, str], *args: str) -> str:
    run = subprocess.run([sys.executable, "-m", "streamrec.cli", *args], env=env, capture_output=True, text=True,
                         timeout=180)
    assert run.returncode == 0, run.stderr
    return run.stdout


def sums(rows: list[dict]) -> dict[str, Counter]:
    by_variant: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        for name in ("clicks", "add_to_carts", "purchases", "impression_lists", "lists", "clicked_lists", "converted_lists"):
            by_variant[row["variant"]][name] += row[name]
        by_variant[row["variant"]]["revenue"] += row["revenue"]
    return by_variant


@pytest.mark.parametrize("mode", ["list_ids_and_impressions", "window_only"])
def test_attributed_counts_equal_the_shoppers_ground_truth(mode, bootstrap, topics, start_worker, models_dir, request):
    """With list ids and impressions: the batch engine, the loop driven from here, ``attribute
    --once`` after the shop. Without either (the window): the Faust engine, ``streamrec simulate``
    as a process, ``attribute`` running as a service beside the shop until it has caught up."""
    env_experiment = json.dumps([EXPERIMENT])
    explicit = mode == "list_ids_and_impressions"
    start_worker(models_dir, engine="batch" if explicit else "faust", extra_env={"STREAMREC_EXPERIMENTS": env_experiment})
    env = {**os.environ, "STREAMREC_KAFKA__BOOTSTRAP": bootstrap, "STREAMREC_KAFKA__EVENTS_TOPIC": topics.events,
           "STREAMREC_KAFKA__RECOMMENDATIONS_TOPIC": topics.recommendations,
           "STREAMREC_KAFKA__ATTRIBUTION_TOPIC": f"attribution-{topics.app_id}", "STREAMREC_EXPERIMENTS": env_experiment,
           "STREAMREC_ATTRIBUTION__PUBLISH_EVERY_S": "0.5"}
    service = None
    if not explicit:
        service = subprocess.Popen([sys.executable, "-m", "streamrec.cli", "attribute", "--json"], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        request.addfinalizer(lambda: service.poll() is None and os.killpg(service.pid, signal.SIGKILL))
    shop = SyntheticShop(items=ITEMS, users=USERS, seed=SEED)
    users = shop.user_ids[:80]
    if explicit:
        shoppers = Shoppers(shop, ShopperModel(click_base=0.05, click_fit=0.5, cart_given_click=0.5, buy_given_cart=0.6,
                                               impressions=True, list_ids=True), seed=5)
        run_closed_loop(bootstrap, topics.events, topics.recommendations, shoppers, users, rounds=4, partitions=2)
        bad = orjson.dumps({"event_id": "bad-1", "user_id": users[0], "item_id": shop.item_ids[0], "type": "purchase",
                            "ts": 1_700_000_000.0, "quantity": 0})
        with EventPublisher(bootstrap, topics.events) as publisher:
            publisher.publish_raw(users[0].encode(), bad)
        (letter,) = [decode_dead_letter(v) for _, v in read_topic(bootstrap, topics.dlq, done=lambda m: len(m) >= 1)]
        assert (letter["reason"], letter["raw"]) == ("bad_quantity", bad)
        truth = {v: shoppers.truth.totals(v) for v in ("control", "treatment")}
        converted = {v: len(shoppers.truth.converted_users.get(("ab-1", v), set())) for v in ("control", "treatment")}
    else:
        out = json.loads(cli({**env, "STREAMREC_KAFKA__PARTITIONS": "2"}, "simulate", "--users", str(USERS),
                             "--items", str(ITEMS), "--seed", str(SEED), "--shoppers", "80", "--rounds", "4",
                             "--no-list-ids", "--shopper-seed", "5", "--json"))
        truth = out["by_variant"]
        converted = {v: out["converted_users"].get(f"ab-1/{v}", 0) for v in ("control", "treatment")}
    lists_seen = sum(t["lists_seen"] for t in truth.values())
    assert sum(t["purchases"] for t in truth.values()) > 0  # the test can fail on something

    # Every list the worker published for the reactions' last events is in the topic: read them all, independently.
    published = [decode_recommendation(v) for _, v in read_topic(
        bootstrap, topics.recommendations, done=lambda m: len(m) >= lists_seen, timeout=60)]
    experiment = experiment_from_dict(EXPERIMENT)
    for rec in published:
        assert rec.experiment == "ab-1" and rec.variant == assign(experiment, rec.user_id).name and rec.list_id
        if rec.variant == "control":
            assert {i.source for i in rec.items} == {"trending"}

    def report_rows() -> list[dict]:
        return [json.loads(line) for line in cli(env, "report", "attribution", "--json").splitlines()]

    if service is None:
        # The worker may still be answering the last reactions: the job reads what is there; lists
        # published later cannot carry attributed actions (nobody reacted to them).
        stats = json.loads(cli(env, "attribute", "--once", "--json"))
        assert stats["skipped"] == {topics.events: 1}  # the bad event: dead-lettered by the worker, skipped here
        rows = report_rows()
        table = cli(env, "report", "attribution")
        assert "CTR" in table and "ab-1/control" in table and "ab-1/treatment" in table
    else:
        wanted = sum(t["purchases"] + t["clicks"] for t in truth.values())
        deadline = time.monotonic() + 60
        while True:  # the service publishes as it goes: wait until it has caught up with the shop
            rows = report_rows()
            got = sum(c["purchases"] + c["clicks"] for c in sums(rows).values())
            if got >= wanted or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        os.killpg(service.pid, signal.SIGTERM)
        out, err = service.communicate(timeout=30)
        assert service.returncode == 0, err
        assert json.loads(out)["skipped"] == {}
    for row in rows:
        assert row["model_version"] == published[0].model_version and row["experiment"] == "ab-1"
    by_variant = sums(rows)
    counted = sum(c["lists"] for c in by_variant.values())
    lists_read = [decode_recommendation(v) for _, v in
                  read_topic(bootstrap, topics.recommendations, done=lambda m: len(m) >= counted, timeout=30)]
    for variant in ("control", "treatment"):
        expected = truth[variant]
        got = by_variant[variant]
        assert (got["clicks"], got["add_to_carts"], got["purchases"]) == \
            (expected["clicks"], expected["add_to_carts"], expected["purchases"]), (variant, got, expected)
        assert got["revenue"] == pytest.approx(expected["revenue"])
        assert got["impression_lists"] == (expected["lists_seen"] if explicit else 0)
        if explicit:  # each action names its list: the lists that earned them are the shoppers' own
            assert (got["clicked_lists"], got["converted_lists"]) == (expected["clicked_lists"], expected["converted_lists"])
        assert got["lists"] >= expected["lists_seen"]  # every list a shopper saw was published, and counted once
        distinct = {rec.list_id for rec in lists_read if rec.variant == variant}
        assert got["lists"] <= len(distinct)

    report = json.loads(cli(env, "report", "experiment", "ab-1", "--json"))
    arms = {a["variant"]: a for a in report["arms"]}
    for variant in ("control", "treatment"):
        assert arms[variant]["users"] == sum(assign(experiment, u).name == variant for u in users)
        assert arms[variant]["converted"] == converted[variant]
    revenue = {m["variant"]: m for m in report["revenue_per_user"]}
    for variant in ("control", "treatment"):
        assert revenue[variant]["mean"] == pytest.approx(truth[variant]["revenue"] / arms[variant]["users"])
    assert arms["treatment"]["p_value"] is not None and report["srm_p_value"] is not None
    text = cli(env, "report", "experiment", "ab-1")
    assert "sample ratio" in text and "treatment" in text and "revenue/user" in text
    bad = subprocess.run([sys.executable, "-m", "streamrec.cli", "report", "experiment", "nope"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no experiment 'nope'" in bad.stderr
