import pytest

from streamrec.contract import Event, Recommendation, ScoredItem
from streamrec.core.attribution import Attributor, BucketKey, arm_record, bucket_record

T0 = 1_700_000_000.0  # 22:13:20 UTC: the hour starts at T0 - 800


def rec(user, list_id, items, ts, *, version="v1", experiment=None, variant=None):
    return Recommendation(user, tuple(ScoredItem(i, 1.0) for i in items), version, f"trigger-{list_id}", ts, ts + 0.01,
                          list_id, experiment, variant)


def ev(n, user, item, kind, ts, **extra):
    return Event(f"e{n}", user, item, kind, ts, **extra)


def test_explicit_list_id_wins_over_a_newer_list_holding_the_item():
    a = Attributor(window_s=3600)
    a.add_list(rec("u", "L1", ["a", "b"], T0, variant="x", experiment="ab"))
    a.add_list(rec("u", "L2", ["a", "c"], T0 + 10, variant="x", experiment="ab"))
    assert a.add_event(ev(1, "u", "a", "click", T0 + 20, list_id="L1")).list.list_id == "L1"
    assert a.add_event(ev(2, "u", "a", "click", T0 + 21)).list.list_id == "L2"  # window: the newest list
    found = a.add_event(ev(3, "u", "c", "click", T0 + 22, list_id="gone"))  # unknown id: the window decides
    assert (found.list.list_id, found.how) == ("L2", "window")


def test_window_rules_time_item_and_user():
    a = Attributor(window_s=100)
    a.add_list(rec("u", "L1", ["a"], T0))
    assert a.add_event(ev(1, "u", "a", "purchase", T0)) is None  # not after the list's trigger
    assert a.add_event(ev(2, "u", "a", "purchase", T0 + 101)) is None  # beyond the window
    assert a.add_event(ev(3, "u", "b", "purchase", T0 + 5)) is None  # not in the list
    assert a.add_event(ev(4, "v", "a", "purchase", T0 + 5)) is None  # another user's list
    assert a.add_event(ev(5, "v", "a", "purchase", T0 + 5, list_id="L1")) is None  # naming another user's list
    assert a.add_event(ev(6, "u", "a", "view", T0 + 5)) is None  # a view is never attributed
    assert a.add_event(ev(7, "u", "a", "purchase", T0 + 100)) is not None
    assert a.unattributed["purchase"] == 5


def test_counts_rates_revenue_and_experiment_totals():
    a = Attributor()
    for n, user in enumerate(["u1", "u2", "u3", "u4"]):
        a.add_list(rec(user, f"L{n}", ["a", "b"], T0 + n, experiment="ab", variant="t" if n % 2 else "c"))
    assert not a.add_list(rec("u1", "L0", ["a", "b"], T0, experiment="ab", variant="c"))  # re-sent: counted once
    a.add_event(ev(1, "u1", "a", "click", T0 + 50))
    a.add_event(ev(2, "u1", "a", "add_to_cart", T0 + 51))
    a.add_event(ev(3, "u1", "a", "purchase", T0 + 52, price=10.0, quantity=3))
    a.add_event(ev(3, "u1", "a", "purchase", T0 + 52, price=10.0, quantity=3))  # the same event read twice
    a.add_event(ev(4, "u2", "b", "purchase", T0 + 53))  # no price: a conversion worth nothing
    a.add_event(ev(5, "u3", "zz", "purchase", T0 + 54, price=5.0))  # bought, but nothing of the list
    c = a.hourly[BucketKey(1_699_999_200, "v1", "ab", "c")]
    t = a.hourly[BucketKey(1_699_999_200, "v1", "ab", "t")]
    assert (c.lists, c.shown, c.clicks, c.add_to_carts, c.purchases, c.revenue) == (2, 2, 1, 1, 1, 30.0)
    assert c.rates() == {"ctr": 0.5, "add_to_cart_rate": 0.5, "conversion_rate": 0.5}
    assert (t.lists, t.purchases, t.revenue) == (2, 1, 0.0)
    arm_c = a.arms[("ab", "c")].as_dict()
    assert (arm_c["users"], arm_c["converted_users"], arm_c["buyers"], arm_c["all_purchases"], arm_c["all_revenue"]) == (2, 1, 2, 2, 35.0)
    assert a.duplicates == 1
    assert a.arms[("ab", "c")].revenue_sumsq == 900.0  # one user with 30 of attributed revenue
    key, value = bucket_record(BucketKey(1_699_999_200, "v1", "ab", "c"), c)
    assert key == "hourly|1699999200|v1|ab|c" and value["conversion_rate"] == 0.5 and value["shown"] == 2
    assert arm_record(("ab", "t"), a.arms[("ab", "t")])[1]["converted_users"] == 1


def test_impressions_make_shown_the_impressed_lists():
    a = Attributor()
    a.add_list(rec("u1", "L1", ["a", "b"], T0))
    a.add_list(rec("u2", "L2", ["a", "b"], T0))
    a.add_list(rec("u3", "L3", ["a", "b"], T0))  # published, never shown
    for n, (user, lid) in enumerate([("u1", "L1"), ("u2", "L2")]):
        for item in ("a", "b"):
            a.add_event(ev(f"{n}{item}", user, item, "impression", T0 + 1, list_id=lid))
    a.add_event(ev(9, "u1", "a", "click", T0 + 2, list_id="L1"))
    a.add_event(ev(10, "u1", "b", "click", T0 + 3, list_id="L1"))  # two clicks on one list: one clicked list
    counts = a.hourly[BucketKey(1_699_999_200, "v1", "", "")]
    assert (counts.lists, counts.impression_lists, counts.shown, counts.clicks, counts.rates()["ctr"]) == (3, 2, 2, 2, 0.5)


def test_old_lists_are_forgotten_per_user_and_changes_drain():
    a = Attributor(lists_per_user=2)
    for n in range(3):
        a.add_list(rec("u", f"L{n}", [f"item{n}"], T0 + n))
    assert a.add_event(ev(1, "u", "item0", "click", T0 + 10)) is None  # L0 was evicted
    assert a.add_event(ev(2, "u", "item2", "click", T0 + 10)) is not None
    buckets, arms = a.drain_changes()
    assert len(buckets) == 1 and arms == []
    assert a.drain_changes() == ([], [])
    with pytest.raises(ValueError):
        Attributor(window_s=0)


def test_an_erased_user_leaves_only_anonymous_counts():
    a = Attributor()
    a.add_list(rec("u1", "L1", ["a"], T0, experiment="ab", variant="c"))
    a.add_list(rec("u2", "L2", ["a"], T0, experiment="ab", variant="c"))
    a.add_event(ev(1, "u1", "a", "purchase", T0 + 5, price=4.0))
    a.add_event(ev(2, "u2", "a", "purchase", T0 + 6, price=3.0))
    a.drain_changes()
    a.forget("u1")
    arm = a.arms[("ab", "c")]
    assert "u1" not in arm.users | arm.clicked | arm.converted | arm.buyers | set(arm.user_revenue)
    assert (len(arm.users), len(arm.converted), arm.revenue_sumsq) == (1, 1, 9.0)
    assert (arm.purchases, arm.revenue) == (2, 7.0)  # anonymous totals stay
    assert a.drain_changes()[1] == [(("ab", "c"), arm)]  # the per-user totals are published again
    assert a.add_event(ev(3, "u1", "a", "purchase", T0 + 7, list_id="L1")) is None  # the user's lists are gone
    assert a.add_event(ev(4, "u2", "a", "purchase", T0 + 8)) is not None
