"""``streamrec serve`` without a broker: request parsing, answers on a tiny model, the HTTP app."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import faiss
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from streamrec.config import Settings
from streamrec.contract import MAX_STRING_LENGTH, CatalogItem, Event, encode_event
from streamrec.core.batch import Message, process_batch
from streamrec.core.interest import InterestParams
from streamrec.core.items import ItemsModel, LiveItems
from streamrec.core.state import encode_state
from streams.serve import (
    OPENAPI,
    BadRequest,
    Replica,
    make_app,
    parse_category,
    parse_exclude,
    parse_id,
    parse_k,
    recommend,
    similar,
)

N_ITEMS, DIM, K = 60, 8, 10


def tiny_items(version: str = "v1", seed: int = 0, taste: np.ndarray | None = None,
               factors: np.ndarray | None = None) -> LiveItems:
    rng = np.random.default_rng(seed)
    context = rng.standard_normal((N_ITEMS, DIM)).astype(np.float32)
    target = context + 0.1 * rng.standard_normal((N_ITEMS, DIM)).astype(np.float32)
    index = faiss.IndexFlatIP(DIM)
    index.add(target)
    item_ids = [f"sku-{i:03d}" for i in range(N_ITEMS)]
    catalog = {item_id: CatalogItem(item_id, category=("Shop", "Even" if i % 2 == 0 else "Odd"))
               for i, item_id in enumerate(item_ids)}
    return LiveItems(ItemsModel(version, item_ids, context, target, index, taste=taste, factors=factors, factor_reg=1.0,
                                factor_confidence=5.0), catalog=catalog)


def drive(items: LiveItems, events: list[Event], params: InterestParams | None = None):  # noqa: ANN201
    """Run events through the worker's own core; the users' states and their latest lists."""
    states: dict = {}
    messages = [Message(e.user_id.encode(), encode_event(e), 0, n) for n, e in enumerate(events)]
    result = process_batch(messages, lambda user_id, _: states.get(user_id), items, params or InterestParams())
    for user_id, (state, _) in result.states.items():
        states[user_id] = state
    return states, {rec.user_id: rec for rec in result.recommendations}


def some_events(n_users: int = 5, per_user: int = 6, seed: int = 1) -> list[Event]:
    rng = np.random.default_rng(seed)
    events = []
    for u in range(n_users):
        for j in range(per_user):
            kind = "purchase" if j == per_user - 1 else "view"
            events.append(Event(f"e-{u}-{j}", f"u-{u}", f"sku-{int(rng.integers(N_ITEMS)):03d}", kind,
                                1_700_000_000.0 + 10 * j + u))
    return events


# --------------------------------------------------------------------------- parsing


def test_k_defaults_to_10_and_must_be_a_whole_number_in_1_to_100() -> None:
    assert parse_k(None) == 10 and parse_k("1") == 1 and parse_k(" 100 ") == 100
    for raw, error in [("0", "k_out_of_range"), ("101", "k_out_of_range"), ("-3", "k_out_of_range"),
                       ("ten", "invalid_k"), ("2.5", "invalid_k"), ("", "invalid_k")]:
        with pytest.raises(BadRequest) as caught:
            parse_k(raw)
        assert caught.value.error == error and caught.value.status == 400


def test_ids_must_be_non_blank_and_within_the_contracts_length() -> None:
    assert parse_id("u-1", "user_id") == "u-1"
    assert parse_id("x" * MAX_STRING_LENGTH, "user_id")
    for raw in ["", "   ", "x" * (MAX_STRING_LENGTH + 1)]:
        with pytest.raises(BadRequest) as caught:
            parse_id(raw, "user_id")
        assert caught.value.error == "invalid_user_id"


def test_exclude_and_category_parsing() -> None:
    assert parse_exclude(None) == [] and parse_exclude("a, b,,c") == ["a", "b", "c"]
    with pytest.raises(BadRequest):
        parse_exclude(",".join(["a"] * 1001))
    with pytest.raises(BadRequest):
        parse_exclude("x" * (MAX_STRING_LENGTH + 1))
    assert parse_category(None) is None and parse_category(" Even ") == "Even"
    with pytest.raises(BadRequest):
        parse_category(" ")


# --------------------------------------------------------------------------- answers


def test_an_answer_equals_the_workers_list_for_the_same_state() -> None:
    items = tiny_items()
    states, lists = drive(items, some_events())
    for user_id, state in states.items():
        answer = recommend(items, user_id, state, k=K)
        worker = lists[user_id]
        assert [i["item_id"] for i in answer["items"]] == [i.item_id for i in worker.items]
        assert np.allclose([i["score"] for i in answer["items"]], [i.score for i in worker.items], atol=1e-6)
        assert [i["source"] for i in answer["items"]] == [i.source for i in worker.items]
        assert answer["state_event_id"] == worker.event_id == state.recent[-1].event_id
        assert answer["model_version"] == "v1" and answer["user_id"] == user_id


def test_an_answer_with_the_taste_vector_equals_the_workers_list() -> None:
    plain = tiny_items()
    items = tiny_items(taste=np.random.default_rng(3).standard_normal((DIM, DIM)).astype(np.float32) * 3)
    params = InterestParams(taste_decay=0.9)
    states, lists = drive(items, some_events(), params)
    _, without = drive(plain, some_events(), params)
    changed = 0
    for user_id, state in states.items():
        assert state.taste is not None and state.taste.any()
        answer = recommend(items, user_id, state, k=K)
        assert [i["item_id"] for i in answer["items"]] == [i.item_id for i in lists[user_id].items]
        changed += [i.item_id for i in lists[user_id].items] != [i.item_id for i in without[user_id].items]
    assert changed >= 3  # the map moved the query: the lists are not those without it


@pytest.mark.parametrize("repeats", [False, True])
def test_an_answer_with_the_factor_step_equals_the_workers_list(repeats: bool) -> None:
    factors = np.random.default_rng(4).standard_normal((N_ITEMS, 5)).astype(np.float32)
    items, plain = tiny_items(factors=factors), tiny_items()
    params = InterestParams(factor_weight=2.0, factor_depth=20, factor_repeats=repeats)
    states, lists = drive(items, some_events(), params)
    _, without = drive(plain, some_events(), params)
    changed = 0
    for user_id, state in states.items():
        answer = recommend(items, user_id, state, k=K, params=params)
        assert [i["item_id"] for i in answer["items"]] == [i.item_id for i in lists[user_id].items]
        changed += [i.item_id for i in lists[user_id].items] != [i.item_id for i in without[user_id].items]
        # serve's own filter (exclude) holds for the factor list too
        dropped = [i["item_id"] for i in answer["items"][:3]]
        filtered = recommend(items, user_id, state, k=K, params=params, exclude=dropped)
        assert not set(dropped) & {i["item_id"] for i in filtered["items"]} and len(filtered["items"]) == K
        even = recommend(items, user_id, state, k=K, params=params, category="Even")
        assert all(int(i["item_id"][-3:]) % 2 == 0 for i in even["items"]) and len(even["items"]) == K
    assert changed >= 3  # the factor lists joined: the lists are not those without them


def test_purchased_and_unavailable_items_never_and_exactly_k_with_backfill() -> None:
    items = tiny_items()
    states, _ = drive(items, some_events())
    state = states["u-0"]
    first = recommend(items, "u-0", state, k=K)
    gone = [i["item_id"] for i in first["items"][:3]]
    for item_id in gone[:2]:
        items.apply_catalog(item_id, CatalogItem(item_id, available=False))
    items.apply_catalog(gone[2], None)  # removed
    after = recommend(items, "u-0", state, k=K)
    ids = [i["item_id"] for i in after["items"]]
    assert len(ids) == K and not set(gone) & set(ids)
    assert not set(state.purchased) & set(ids)
    # Almost everything out of stock: the list is the k eligible items, the rest from trending.
    big = recommend(items, "u-0", state, k=100)
    assert len(big["items"]) == N_ITEMS - 3 - len(set(state.purchased) - set(gone))
    assert {i["source"] for i in big["items"]} <= {"model", "category_trending", "trending"}


def test_a_user_without_state_gets_trending_items() -> None:
    items = tiny_items()
    answer = recommend(items, "nobody", None, k=5)
    assert [i["source"] for i in answer["items"]] == ["trending"] * 5
    assert answer["state_event_id"] is None


def test_category_filter_and_exclude() -> None:
    items = tiny_items()
    states, _ = drive(items, some_events())
    answer = recommend(items, "u-1", states["u-1"], k=K, category="even")
    assert len(answer["items"]) == K
    assert all(int(i["item_id"][-3:]) % 2 == 0 for i in answer["items"])
    plain = recommend(items, "u-1", states["u-1"], k=K)
    drop = [i["item_id"] for i in plain["items"][:2]]
    excluded = recommend(items, "u-1", states["u-1"], k=K, exclude=[*drop, "no-such-item"])
    assert len(excluded["items"]) == K and not set(drop) & {i["item_id"] for i in excluded["items"]}
    with pytest.raises(BadRequest) as caught:
        recommend(items, "u-1", states["u-1"], category="Toys")
    assert caught.value.error == "unknown_category"


def test_a_state_of_another_model_version_is_rebuilt() -> None:
    items = tiny_items()
    states, _ = drive(items, some_events())
    old = replace(states["u-2"], model_version="v0", vector=np.zeros(DIM, np.float32))
    assert recommend(items, "u-2", old, k=K)["items"] == recommend(items, "u-2", states["u-2"], k=K)["items"]


def test_similar_items_exclude_the_item_and_unknown_is_none() -> None:
    items = tiny_items()
    answer = similar(items, "sku-007", k=K)
    ids = [i["item_id"] for i in answer["items"]]
    assert len(ids) == K and "sku-007" not in ids
    assert similar(items, "nope") is None


# --------------------------------------------------------------------------- the HTTP app


def ready_replica(items: LiveItems, states: dict) -> Replica:
    replica = Replica(Settings())
    replica.items = items
    replica.catalog_restored = True
    replica._changelog_absent = True
    replica.states = {user_id: encode_state(state) for user_id, state in states.items()}
    return replica


def test_http_api() -> None:
    items = tiny_items()
    states, lists = drive(items, some_events())
    replica = ready_replica(items, states)

    async def run() -> None:
        async with TestClient(TestServer(make_app(replica))) as client:
            response = await client.get("/v1/users/u-3/recommendations")
            assert response.status == 200
            body = await response.json()
            assert [i["item_id"] for i in body["items"]] == [i.item_id for i in lists["u-3"].items]
            assert (await (await client.get("/v1/users/stranger/recommendations?k=3")).json())["items"][0]["source"] == "trending"
            for path, status, error in [("/v1/users/u-3/recommendations?k=0", 400, "k_out_of_range"),
                                        ("/v1/users/u-3/recommendations?k=x", 400, "invalid_k"),
                                        (f"/v1/users/{'x' * 300}/recommendations", 400, "invalid_user_id"),
                                        ("/v1/users/u-3/recommendations?category=Toys", 400, "unknown_category"),
                                        ("/v1/items/nope/similar", 404, "unknown_item"),
                                        ("/v2/nothing", 404, "not_found")]:
                response = await client.get(path)
                assert response.status == status, path
                body = await response.json()
                assert body["error"] == error and body["detail"]
            similar_body = await (await client.get("/v1/items/sku-001/similar?k=4")).json()
            assert len(similar_body["items"]) == 4
            assert (await client.get("/healthz")).status == 200
            ready = await client.get("/readyz")
            readiness = await ready.json()
            assert ready.status == 200 and readiness["users"] == len(states)
            assert readiness["handler_ms"]["p50"] is not None and readiness["lock_wait_ms"]["max"] is not None
            assert set(readiness["loop_lag_ms"]) == {"p50", "p95", "p99", "max"} and "gc_pause_ms" in readiness
            doc = await (await client.get("/openapi.json")).json()
            assert doc == OPENAPI and set(doc["paths"]) == {"/v1/users/{user_id}/recommendations",
                                                            "/v1/items/{item_id}/similar", "/healthz", "/readyz",
                                                            "/openapi.json"}
            scrape = await client.get("/metrics")
            assert scrape.status == 200
            families = {f.name: f for f in text_string_to_metric_families(await scrape.text())}
            counts = {(x.labels["route"], x.labels["status"]): x.value
                      for x in families["streamrec_http_requests"].samples if x.name.endswith("_total")}
            route = "/v1/users/{user_id}/recommendations"
            assert counts[(route, "200")] == 2 and counts[(route, "400")] == 4  # what this test asked
            assert counts[("/v1/items/{item_id}/similar", "404")] == 1
            assert {x.value for x in families["streamrec_replica_users"].samples} == {len(states)}
            assert "streamrec_serve_event_loop_lag_seconds" in families and "streamrec_python_gc_pause_seconds" in families
            replica.catalog_restored = False
            response = await client.get("/readyz")
            assert response.status == 503
            response = await client.get("/v1/users/u-3/recommendations")
            assert response.status == 503 and (await response.json())["error"] == "not_ready"

    asyncio.run(run())


def test_event_loop_probe_sees_a_blocked_loop() -> None:
    """The probe's lag is independent of the handlers: block the loop for 150 ms and it says so."""
    import time

    replica = ready_replica(tiny_items(), {})

    async def run() -> None:
        async with TestClient(TestServer(make_app(replica))) as client:
            await asyncio.sleep(0.05)
            time.sleep(0.15)  # the server shares this event loop: nothing can be answered meanwhile
            await asyncio.sleep(0.05)
            lag = (await (await client.get("/readyz")).json())["loop_lag_ms"]
            assert 120.0 <= lag["max"] < 1000.0
            assert lag["p50"] < 50.0

    asyncio.run(run())


def test_an_answer_follows_the_users_experiment_variant_like_the_workers_list() -> None:
    from streamrec.core.experiments import experiment_from_dict

    experiment = experiment_from_dict({"name": "ab", "salt": "serve", "variants": [
        {"name": "trending", "kind": "trending"}, {"name": "model", "kind": "model"},
        {"name": "buyers", "kind": "params", "event_weights": {"view": 0.2, "purchase": 8.0}}]})
    items = tiny_items()
    events = some_events(n_users=12)
    messages = [Message(e.user_id.encode(), encode_event(e), 0, n) for n, e in enumerate(events)]
    result = process_batch(messages, lambda user_id, _: None, items, InterestParams(), experiment=experiment)
    lists = {rec.user_id: rec for rec in result.recommendations}
    variants = set()
    for user_id, (state, _) in result.states.items():
        answer = recommend(items, user_id, state, k=K, experiment=experiment)
        worker = lists[user_id]
        variants.add(answer["variant"])
        assert (answer["experiment"], answer["variant"]) == ("ab", worker.variant)
        assert [i["item_id"] for i in answer["items"]] == [i.item_id for i in worker.items]
        assert [i["source"] for i in answer["items"]] == [i.source for i in worker.items]
    assert variants == {"trending", "model", "buyers"}
    assert recommend(items, "nobody", None, k=K)["variant"] is None
