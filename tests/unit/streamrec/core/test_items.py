"""The live item side: rules at publish time, new items, trending (no Kafka)."""

import faiss
import numpy as np
import pytest

from indexing.artifact import load_artifact
from indexing.train import TrainParams, interactions_from_events, train_model
from producers.synthetic import SyntheticShop
from streamrec.contract import CatalogItem, Event, encode_event
from streamrec.core.batch import Message, process_batch
from streamrec.core.interest import InterestParams
from streamrec.core.items import ItemRules, ItemsModel, LiveItems, item_features

NOW = 1_800_000_000.0


def toy(n_items: int = 15, dim: int = 4, seed: int = 0, rules: ItemRules | None = None) -> LiveItems:
    rng = np.random.default_rng(seed)
    context = rng.standard_normal((n_items, dim)).astype(np.float32)
    target = rng.standard_normal((n_items, dim)).astype(np.float32)
    index = faiss.IndexFlatIP(dim)
    index.add(target)
    return LiveItems(ItemsModel("v1", [f"i{n}" for n in range(n_items)], context, target, index), rules)


def brute_force(items: LiveItems, query: np.ndarray, k: int, excluded=()) -> list[str]:
    """The expected top k, computed without FAISS: every eligible row's score, sorted."""
    scores = np.full(items.n_rows, -np.inf)
    scores[: items.n_model] = items.model.target @ query
    new = items._new
    for row in range(items.n_model, items.n_rows):
        if new.searchable[row - items.n_model]:
            scores[row] = new.target[row - items.n_model] @ query
    for row in range(items.n_rows):
        if items.blocked(row) or row in excluded:
            scores[row] = -np.inf
    order = [r for r in np.argsort(-scores, kind="stable") if np.isfinite(scores[r])]
    return [items.item_ids[r] for r in order[:k]]


def test_blocked_items_are_skipped_inside_the_search_and_the_rest_is_exact():
    items = toy()
    query = np.random.default_rng(1).standard_normal((1, 4)).astype(np.float32)
    first = [items.item_ids[r] for r in items.view().search(query, 5, [set()])[0][0]]
    assert first == brute_force(items, query[0], 5)
    for item_id in first[:3]:
        items.apply_catalog(item_id, CatalogItem(item_id, available=False))
    items.apply_catalog(first[3], None)  # removed
    rows, _ = items.view().search(query, 5, [{items.row_of[first[4]]}])
    got = [items.item_ids[r] for r in rows[0]]
    assert not set(got) & set(first)
    assert got == brute_force(items, query[0], 5, excluded={items.row_of[first[4]]})
    # back in stock
    items.apply_catalog(first[0], CatalogItem(first[0], available=True))
    assert first[0] in [items.item_ids[r] for r in items.view().search(query, 5, [set()])[0][0]]


def test_lists_have_exactly_k_items_when_k_are_eligible_and_say_where_they_came_from():
    items = toy(n_items=15)
    for n in range(15):
        items.apply_catalog(f"i{n}", CatalogItem(f"i{n}", category=("Shop", "odd" if n % 2 else "even")))
    for n in range(6):
        items.apply_catalog(f"i{n}", CatalogItem(f"i{n}", available=False, category=("Shop", "even")))
    # trending: i13 (odd) is hot, i8 (even) warm
    items.observe(np.array([13, 13, 13, 8]), np.zeros(4, np.int64), np.full(4, 100.0))
    # the model proposed only 2 eligible candidates (and one blocked one)
    chosen = items.finish_list([items.row_of["i1"], items.row_of["i7"], items.row_of["i9"]], [3.0, 2.0, 1.0], 8,
                               excluded={items.row_of["i7"]}, recent_items=["i6"])
    ids = [c.item_id for c in chosen]
    assert len(ids) == 8 == len(set(ids))
    assert ids[0] == "i9" and chosen[0].source == "model"  # i1 blocked, i7 purchased
    assert ids[1] == "i8" and chosen[1].source == "category_trending"  # the user's recent category: even
    assert {c.source for c in chosen[1:]} <= {"category_trending", "trending"}
    assert not {"i0", "i1", "i2", "i3", "i4", "i5", "i7"} & set(ids)
    # only 15 - 6 blocked - 1 purchased = 8 eligible: asking for 10 gives all 8
    assert len(items.finish_list([], [], 10, {items.row_of["i7"]}, [])) == 8


def test_repeat_purchase_categories_may_come_back():
    items = toy(rules=ItemRules(repeat_purchase_categories=frozenset({"Groceries"})))
    items.apply_catalog("i1", CatalogItem("i1", category=("Groceries", "Milk")))
    items.apply_catalog("i2", CatalogItem("i2", category=("Home",)))
    assert items.exclusions(["i1", "i2", "unknown"]) == {items.row_of["i2"]}


def test_a_new_item_gets_its_prior_from_the_items_it_shares_features_with():
    items = toy(n_items=6)
    target = items.model.target
    items.apply_catalog("i0", CatalogItem("i0", category=("A", "B"), brand="x"))
    items.apply_catalog("i1", CatalogItem("i1", category=("A", "B"), brand="y"))
    items.apply_catalog("i2", CatalogItem("i2", category=("A",), brand="x"))
    items.apply_catalog("new", CatalogItem("new", category=("A", "B"), brand="x"))
    row = items.row_of["new"]
    assert row == 6 and items.is_new(row)
    # deepest known category (A/B: i0, i1) weighs 4, brand x (i0, i2) weighs 3
    expected = (4 * (target[0] + target[1]) / 2 + 3 * (target[0] + target[2]) / 2) / 7
    np.testing.assert_allclose(items._new.target[0], expected, rtol=1e-5)
    # it is searchable at once: a query pointing at its prior finds it
    rows, _ = items.view().search(expected[None].astype(np.float32) * 100, 1, [set()])
    assert rows[0][0] in {row, 0}  # i0 is half of its prior, so the two are close


def test_within_a_group_rare_features_weigh_more_than_common_ones():
    items = toy(n_items=6)
    target = items.model.target
    for n in range(5):  # "mug" is on five items, "tulip" on one
        items.apply_catalog(f"i{n}", CatalogItem(f"i{n}", title="mug tulip" if n == 0 else "mug"))
    items.apply_catalog("new", CatalogItem("new", title="tulip mug"))
    # idf over the 5 model items with records: mug log(1 + 5/5), tulip log(1 + 5/1)
    mug, tulip = np.log1p(1.0), np.log1p(5.0)
    expected = (mug * target[:5].mean(axis=0) + tulip * target[0]) / (mug + tulip)
    np.testing.assert_allclose(items._new.target[0], expected, rtol=1e-5)


def test_a_catalog_given_at_start_builds_priors_whatever_its_order():
    context = np.eye(4, dtype=np.float32)
    index = faiss.IndexFlatIP(4)
    index.add(context)
    model = ItemsModel("v1", ["a", "b", "c", "d"], context, context, index)
    catalog = {"new": CatalogItem("new", brand="x"), "a": CatalogItem("a", brand="x"), "b": CatalogItem("b", brand="y")}
    items = LiveItems(model, catalog=catalog)  # the new item's record comes first
    np.testing.assert_allclose(items._new.target[0], context[0])


def test_fold_in_moves_a_new_item_to_what_its_users_say():
    items = toy(n_items=6, rules=ItemRules(new_item_prior_events=2.0))
    items.apply_catalog("new", CatalogItem("new"))  # no features known: no prior
    row = items.row_of["new"]
    assert not items._new.searchable[0]
    z = np.array([1.0, 0.0, 0.0, 0.0])
    items.fold_in(row, z, neighbour=3)
    items.fold_in(row, z, neighbour=None)
    solve = items._solve
    expected = (2 * z @ solve) * 2 ** -items.model.popularity_beta
    np.testing.assert_allclose(items._new.target[0], expected, rtol=1e-5)
    np.testing.assert_allclose(items.context[row], items.context[3], rtol=1e-6)
    assert items._new.searchable[0]


def test_item_features_are_the_catalog_path_brand_attributes_and_title_words():
    item = CatalogItem("x", title="A rose cream", category=("Beauty",), brand="Acme", attributes={"Size": "50ml"})
    assert item_features(item) == [("cat", "beauty"), ("brand", "acme"), ("attr", "size=50ml"),
                                   ("word", "cream"), ("word", "rose")]


@pytest.fixture(scope="module")
def shop_model(tmp_path_factory):
    shop = SyntheticShop(items=300, users=120, seed=3)
    events = list(shop.events(12_000, start_ts=1_700_000_000.0))
    folder = tmp_path_factory.mktemp("models")
    train_model(interactions_from_events(events), TrainParams(dim=16)).save(folder)
    return shop, load_artifact(folder, use_gpu=False), events


def test_events_on_unknown_items_are_accepted_and_the_new_item_reaches_lists(shop_model):
    """Through the worker's own core: a product that did not exist at training time, in a
    cluster of the synthetic shop, is viewed by the cluster's fans and recommended."""
    shop, model, events = shop_model
    items = LiveItems(ItemsModel.from_artifact(model))
    for row, item_id in enumerate(model.item_ids):
        n = int(item_id.split("-")[1])
        items.apply_catalog(item_id, CatalogItem(item_id, category=("Shop", shop.category_names[shop.item_category[n]]),
                                                 brand=f"line-{shop.item_cluster[n]}"))
    cluster = int(np.bincount(shop.item_cluster).argmax())
    fans = [f"u-{u:05d}" for u in range(len(shop.user_clusters)) if cluster in shop.user_clusters[u]]
    sibling = int(np.flatnonzero(shop.item_cluster == cluster)[0])
    items.apply_catalog("new-1", CatalogItem("new-1", category=("Shop", shop.category_names[shop.item_category[sibling]]),
                                             brand=f"line-{cluster}"))
    states = {}
    siblings = [f"sku-{i:06d}" for i in np.flatnonzero(shop.item_cluster == cluster)]
    stream = list(events[-3000:])
    t0 = stream[-1].ts
    for rep in range(4):  # a hot product: the fans come back to it, between its siblings
        for n, user in enumerate(fans):
            stream.append(Event(f"n{rep}-{n}", user, "new-1", "view", t0 + 100 * rep + n))
            stream.append(Event(f"s{rep}-{n}", user, siblings[(rep + n) % len(siblings)], "view", t0 + 100 * rep + n + 0.5))
    seen_new = {}
    for start in range(0, len(stream), 200):
        chunk = stream[start : start + 200]
        messages = [Message(e.user_id.encode(), encode_event(e), 0, start + n) for n, e in enumerate(chunk)]
        result = process_batch(messages, lambda u, _: states.get(u), items, InterestParams(k=10), now=NOW)
        assert not result.rejected
        for user_id, (state, _) in result.states.items():
            states[user_id] = state
        for rec in result.recommendations:
            assert len(rec.items) == 10
            seen_new[rec.user_id] = any(i.item_id == "new-1" and i.source == "model" for i in rec.items)
    assert all(any(r.item_id == "new-1" for r in states[u].recent) for u in fans)
    # the fans' latest lists (after their last visit to a sibling) hold the new product
    assert sum(seen_new[u] for u in fans) >= len(fans) // 2


def test_trending_counts_decay_with_event_time():
    items = toy(rules=ItemRules(trending_half_life_s=100.0))
    items.observe(np.array([1, 1, 1, 1]), np.zeros(4, np.int64), np.full(4, 1000.0))  # four views of i1
    items.observe(np.array([2]), np.array([4]), np.array([1300.0]))  # a purchase of i2, 3 half-lives later
    assert items.trend_score(1) == pytest.approx(4 / 8)
    assert items.trend_score(2) == pytest.approx(3.0)  # purchases weigh 3
    assert items.trending()[:2].tolist() == [2, 1]
    # far in the future the stored counts are rescaled, the ranking and the values stay
    items.observe(np.array([3]), np.zeros(1, np.int64), np.array([1300.0 + 100.0 * 600]))
    assert items.trend_score(3) == pytest.approx(1.0)
    assert items.trend_score(2) == pytest.approx(3.0 * 2.0 ** -600, rel=1e-6)
    assert items.trending()[:3].tolist() == [3, 2, 1]


def test_a_cold_users_first_event_on_an_item_without_vector_gets_its_category_trending():
    items = toy(n_items=12)
    for n in range(12):
        items.apply_catalog(f"i{n}", CatalogItem(f"i{n}", category=("Shop", "a" if n < 6 else "b")))
    items.observe(np.array([7, 7, 8]), np.zeros(3, np.int64), np.full(3, 10.0))
    items.apply_catalog("fresh", CatalogItem("fresh", category=("Elsewhere",)))  # shares nothing: no prior
    states = {}
    event = Event("e1", "cold", "fresh", "view", 11.0, category=None)
    result = process_batch([Message(b"cold", encode_event(event), 0, 0)], lambda u, _: states.get(u), items,
                           InterestParams(k=4), now=NOW)
    (rec,) = result.recommendations
    # the only thing known of the user is an item with no vector: its category's trending
    # (the item itself, just viewed), then the shop's, best first
    assert [(i.item_id, i.source) for i in rec.items] == [
        ("fresh", "category_trending"), ("i7", "trending"), ("i8", "trending"), ("i0", "trending")]
