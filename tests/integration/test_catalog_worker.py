"""The living catalog on the real broker, both engines: new products, stock, removals, bad records."""

from __future__ import annotations

import time

import msgspec
import numpy as np
import orjson
import pytest

from producers.publisher import EventPublisher
from producers.synthetic import SyntheticShop
from streamrec.contract import Event, decode_dead_letter, encode_catalog_item
from streamrec.harness.topics import read_topic
from streamrec.kafka.admin import ensure_topics

from .helpers import publish, trained_shop, wait_for_recommendations

pytestmark = [pytest.mark.integration, pytest.mark.lifecycle]

K = 10
SEED = 21


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    trained = trained_shop(folder, items=500, users=160, history=20_000, live=6_000, seed=SEED)
    return SyntheticShop(items=500, users=160, seed=SEED), trained


def publish_catalog(bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]]) -> float:
    """Send catalog records; the wall time at which the broker had acknowledged them all."""
    with EventPublisher(bootstrap, topic, linger_ms=5) as publisher:
        for key, value in records:
            publisher.publish_raw(key, value)
    return time.time()


def hot_new_product_events(synthetic: SyntheticShop, item_id: str, like: int, ts: float) -> list[Event]:
    """The fans of ``like``'s product line come back to a new product of that line, between
    views of its siblings (as the shop's own sessions would)."""
    cluster = int(synthetic.item_cluster[like])
    fans = [synthetic.user_ids[u] for u in range(synthetic.n_users) if cluster in synthetic.user_clusters[u]]
    siblings = [synthetic.item_ids[i] for i in np.flatnonzero(synthetic.item_cluster == cluster)]
    events = []
    for rep in range(4):
        for n, user in enumerate(fans):
            events.append(Event(f"{item_id}-{rep}-{n}", user, item_id, "view", ts + 100 * rep + n))
            events.append(Event(f"{item_id}-s{rep}-{n}", user, siblings[(rep + n) % len(siblings)], "view",
                                ts + 100 * rep + n + 0.5))
    return events


@pytest.mark.parametrize("engine", ["batch", "faust"])
def test_new_products_stock_and_removals_reach_every_list(bootstrap, topics, start_worker, shop, engine):
    synthetic, trained = shop
    items_topic = topics.events.replace("events", "items")
    ensure_topics(bootstrap, {items_topic: 2}, configs={items_topic: {"cleanup.policy": "compact"}})
    like = int(np.argmax(synthetic.item_popularity))
    catalog = [(item.item_id.encode(), encode_catalog_item(item)) for item in synthetic.catalog()]
    new_item = synthetic.new_item("sku-new-0001", like)
    catalog.append((new_item.item_id.encode(), encode_catalog_item(new_item)))
    bad = [
        (b"sku-000001", b'{"item_id": "sku-000001", "price": '),  # malformed JSON
        (b"sku-000002", orjson.dumps({"item_id": "sku-000003"})),  # key is not the item_id
        (b"sku-000004", orjson.dumps({"item_id": "sku-000004", "available": "yes"})),  # wrong type
    ]
    publish_catalog(bootstrap, items_topic, catalog + bad)

    start_worker(trained.models_dir, partitions=2, engine=engine, extra_env={"STREAMREC_KAFKA__ITEMS_TOPIC": items_topic})

    # Phase 1: the shop's events, and a hot new product (unknown to the model) with its fans.
    # And a cold shopper whose first event is on a product nobody knows anything about.
    live = trained.live[:2_000]
    cold = Event("cold-1", "cold-shopper", "sku-unheard-of", "view", live[-1].ts + 0.5)
    phase1 = live + [cold] + hot_new_product_events(synthetic, new_item.item_id, like, live[-1].ts + 1)
    publish(bootstrap, topics.events, phase1)
    recs1 = [rec for rec, _ in wait_for_recommendations(bootstrap, topics.recommendations, phase1, timeout=240)]
    assert all(len(rec.items) == K for rec in recs1)
    assert sum(any(i.item_id == new_item.item_id and i.source == "model" for i in rec.items) for rec in recs1) >= 3
    # Its vector says nothing yet: the product it just viewed may come back (the repeat step,
    # docs/model.md), the rest are the shop's trending items, decayed counts from the stream,
    # most first (trending items are what the live events were about).
    (cold_list,) = [rec for rec in recs1 if rec.event_id == "cold-1"]
    assert [(i.item_id, i.source) for i in cold_list.items[:1]] == [("sku-unheard-of", "model")]
    trending = cold_list.items[1:]
    assert [i.source for i in trending] == ["trending"] * (K - 1)
    assert [i.score for i in trending] == sorted((i.score for i in trending), reverse=True)
    viewed = {e.item_id for e in live}
    assert sum(i.item_id in viewed for i in trending) >= K - 2

    # Phase 2: the items most often recommended go out of stock, one is removed.
    counts: dict[str, int] = {}
    for rec in recs1:
        for item in rec.items:
            counts[item.item_id] = counts.get(item.item_id, 0) + 1
    records = {item.item_id: item for item in synthetic.catalog()}
    # (of the shop's own catalog: the hot new product, often brought back to its fans, stays)
    top = sorted((item_id for item_id in counts if item_id in records), key=counts.get, reverse=True)[:6]
    gone = [(item_id.encode(), encode_catalog_item(msgspec.structs.replace(records[item_id], available=False)))
            for item_id in top[:5]]
    removed = top[5]
    written = publish_catalog(bootstrap, items_topic, [*gone, (removed.encode(), None)])
    phase2 = trained.live[2_000:4_000]
    publish(bootstrap, topics.events, phase2)
    recs2 = [rec for rec, _ in wait_for_recommendations(bootstrap, topics.recommendations, phase1 + phase2, timeout=240)]
    after = {e.event_id for e in phase2}
    banned = set(top)
    triggered_after = [rec for rec in recs2 if rec.event_id in after]
    assert len(triggered_after) > 100
    assert all(len(rec.items) == K for rec in triggered_after)
    offenders = [rec for rec in triggered_after if banned & {i.item_id for i in rec.items}]
    assert not offenders, f"{len(offenders)} list(s) published after the stock change hold unavailable items"
    last_with = max((rec.produced_at for rec in recs2 if banned & {i.item_id for i in rec.items}), default=written)
    assert last_with - written < 5.0

    # Bad catalog records are dead-lettered with their reasons; no event was (no unknown_item).
    letters = read_topic(bootstrap, topics.dlq, done=lambda m: len(m) >= len(bad), timeout=60)
    time.sleep(2)  # anything else on its way
    letters = read_topic(bootstrap, topics.dlq, done=lambda m: len(m) >= len(letters), timeout=60)
    reasons = {decode_dead_letter(v)["raw"]: decode_dead_letter(v)["reason"] for _, v in letters}
    assert reasons == {bad[0][1]: "malformed_json", bad[1][1]: "key_mismatch", bad[2][1]: "wrong_type"}
