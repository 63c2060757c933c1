"""The synthetic shop: deterministic, power-law, time-ordered, contract-valid and learnable."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

from producers.synthetic import DEFAULT_START_TS, SyntheticShop
from streamrec.contract import EVENT_TYPES, decode_event, encode_event

# More than one block of sessions (8,192 sessions, ~49k events), so block merging is exercised.
N_EVENTS = 120_000


@pytest.fixture(scope="module")
def shop() -> SyntheticShop:
    return SyntheticShop(items=5_000, users=1_000, seed=42)


@pytest.fixture(scope="module")
def events(shop: SyntheticShop) -> list:
    return list(shop.events(N_EVENTS, start_ts=DEFAULT_START_TS))


def test_same_seed_same_events_other_seed_other_events(events: list) -> None:
    again = list(SyntheticShop(items=5_000, users=1_000, seed=42).events(2_000, start_ts=DEFAULT_START_TS))
    assert again == events[:2_000]
    other = list(SyntheticShop(items=5_000, users=1_000, seed=43).events(2_000, start_ts=DEFAULT_START_TS))
    assert [e.item_id for e in other] != [e.item_id for e in again]


def test_a_shorter_stream_is_a_prefix_of_a_longer_one(shop: SyntheticShop, events: list) -> None:
    assert list(shop.events(60_000, start_ts=DEFAULT_START_TS)) == events[:60_000]


def test_exact_count_and_time_order(events: list) -> None:
    assert len(events) == N_EVENTS
    ts = np.array([e.ts for e in events])
    assert ts[0] == DEFAULT_START_TS
    assert np.all(np.diff(ts) >= 0)


def test_rate_sets_event_time_density(shop: SyntheticShop) -> None:
    for rate in (5.0, 20.0):
        ts = [e.ts for e in shop.events(50_000, start_ts=0.0, rate=rate)]
        # measured on the second half: the stream starts empty and needs a few session
        # lengths (minutes of event time) to reach its steady rate
        assert 25_000 / (ts[-1] - ts[25_000]) == pytest.approx(rate, rel=0.15)


def test_every_event_passes_the_contract(events: list) -> None:
    for event in events[:: 7]:
        assert decode_event(encode_event(event)) == event
    assert len({e.event_id for e in events}) == len(events)


def test_ids_prices_and_categories(shop: SyntheticShop, events: list) -> None:
    assert shop.item_ids[123] == "sku-000123"
    assert shop.user_ids[42] == "u-00042"
    first = events[0]
    item = shop.item_ids.index(first.item_id)
    assert first.price == shop.item_price[item] > 0
    assert first.category == shop.category_names[shop.item_category[item]]
    assert first.session_id is not None and first.session_id.startswith("syn-42-s")


def test_all_types_present_purchases_rarest(events: list) -> None:
    types = Counter(e.type for e in events)
    assert set(types) == set(EVENT_TYPES)
    assert types["view"] > types["click"] > types["add_to_cart"] > types["purchase"]
    assert 0.01 < types["purchase"] / len(events) < 0.1


def test_item_popularity_is_a_power_law(shop: SyntheticShop, events: list) -> None:
    counts = np.array(sorted(Counter(e.item_id for e in events).values(), reverse=True))
    top_1_percent = counts[: shop.n_items // 100].sum() / len(events)
    assert top_1_percent > 0.12  # uniform popularity would give 0.01
    assert counts[0] > 50 * np.median(counts)


def test_sessions_stay_with_one_user_and_start_with_a_view(events: list) -> None:
    sessions: dict[str, list] = defaultdict(list)
    for event in events:
        sessions[event.session_id].append(event)
    assert np.mean([len(s) for s in sessions.values()]) > 3
    for session in list(sessions.values())[:2_000]:
        assert len({e.user_id for e in session}) == 1
        assert session[0].type == "view"
        categories = Counter(e.category for e in session)
        # one or two categories, plus the odd best-seller from anywhere
        assert sum(n for _, n in categories.most_common(2)) >= 0.6 * len(session)


def test_carts_and_purchases_are_of_items_just_viewed(events: list) -> None:
    seen: dict[str, set] = defaultdict(set)
    for event in events:
        if event.type in ("add_to_cart", "favorite", "purchase"):
            assert event.item_id in seen[event.session_id]
        seen[event.session_id].add(event.item_id)


def test_users_future_is_predictable_from_their_past(shop: SyntheticShop, events: list) -> None:
    """A personalised recommender (popular items of the user's past categories) beats global
    popularity by a wide margin on the later 20% of the stream (HR@10)."""
    split = int(0.8 * len(events))
    train, test = events[:split], events[split:]
    popularity = Counter(e.item_id for e in train)
    top10 = {item for item, _ in popularity.most_common(10)}
    category_of = {e.item_id: e.category for e in train}
    ranked: dict[str, list[str]] = defaultdict(list)
    for item, _ in popularity.most_common():
        ranked[category_of[item]].append(item)
    user_categories: dict[str, Counter] = defaultdict(Counter)
    for event in train:
        user_categories[event.user_id][event.category] += 1

    def personal(user: str) -> set[str]:
        counts = user_categories[user]
        total = sum(counts.values())
        recs: list[str] = []
        for category, n in counts.most_common():
            recs += ranked[category][: max(1, round(10 * n / total))]
        return set(recs[:10])

    cache: dict[str, set[str]] = {}
    hits_popular = hits_personal = total = 0
    for event in test:
        if event.user_id not in user_categories:
            continue
        if event.user_id not in cache:
            cache[event.user_id] = personal(event.user_id)
        total += 1
        hits_popular += event.item_id in top10
        hits_personal += event.item_id in cache[event.user_id]
    assert total > 10_000
    assert hits_personal > 2 * hits_popular


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"items": 0, "users": 10}, "at least one item"),
        ({"items": 10, "users": 10, "categories": 11}, "categories must be between 1 and"),
        ({"items": 10, "users": 10, "zipf_a": 0.0}, "zipf_a must be"),
    ],
)
def test_bad_shop_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SyntheticShop(**kwargs)


def test_bad_stream_arguments_and_tiny_shops() -> None:
    shop = SyntheticShop(items=3, users=1, seed=0)
    with pytest.raises(ValueError, match="n_events must be >= 0"):
        list(shop.events(-1))
    with pytest.raises(ValueError, match="rate must be"):
        list(shop.events(5, rate=0))
    assert list(shop.events(0)) == []
    events = list(shop.events(50))
    assert len(events) == 50 and {e.user_id for e in events} == {"u-00000"}
