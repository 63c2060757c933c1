"""The shopper model, and the experiment statistics on it: a known lift is detected at the
planned power, and A/A runs reject at the nominal 5 % (few seeds here; the full runs are
commands in docs/business.md)."""

import numpy as np
import pytest
from scipy import stats

from producers.simulator import ShopperModel, Shoppers, offline_experiment
from producers.synthetic import SyntheticShop
from streamrec.contract import Recommendation, ScoredItem
from streamrec.core.abtest import users_per_arm
from streamrec.core.experiments import Experiment, Variant

SHOP = SyntheticShop(items=2000, users=500, seed=1)
AB = Experiment("ab", "salt", (Variant("control", 1.0), Variant("treatment", 1.0)))


def a_list(user_id, items, variant="treatment"):
    return Recommendation(user_id, tuple(ScoredItem(SHOP.item_ids[i], 1.0) for i in items), "v1", "e", 1.0, 1.0,
                          "L-" + user_id, "ab", variant)


def test_shoppers_click_what_fits_their_hidden_taste():
    sim = Shoppers(SHOP, ShopperModel(click_base=0.0, click_fit=0.5, category_fit=0.0), seed=3)
    user = 7
    mine = np.flatnonzero(np.isin(SHOP.item_cluster, SHOP.user_clusters[user]))[:10]
    others = np.flatnonzero(~np.isin(SHOP.item_category, SHOP.cluster_category[SHOP.user_clusters[user]]))[:10]
    clicked_mine = clicked_others = 0
    for _ in range(200):
        clicked_mine += sum(e.type == "click" for e in sim.react(a_list(SHOP.user_ids[user], mine), 10.0))
        clicked_others += sum(e.type == "click" for e in sim.react(a_list(SHOP.user_ids[user], others), 10.0))
    assert clicked_others == 0
    assert stats.binomtest(clicked_mine, 2_000, 0.5).pvalue > 0.001  # clicks at the configured rate
    assert sim.truth.clicks[("v1", "ab", "treatment")] == clicked_mine


def test_reactions_name_the_list_follow_it_in_time_and_record_the_truth():
    sim = Shoppers(SHOP, ShopperModel(click_base=1.0, click_fit=1.0, cart_given_click=1.0, buy_given_cart=1.0,
                                      impressions=True), seed=0)
    events = sim.react(a_list(SHOP.user_ids[0], [1, 2, 3]), 100.0)
    assert [e.type for e in events] == ["impression"] * 3 + ["click", "add_to_cart", "purchase"] * 3
    assert all(e.list_id == "L-" + SHOP.user_ids[0] for e in events)
    assert [e.ts for e in events] == sorted(e.ts for e in events) and events[0].ts > 100.0
    purchases = [e for e in events if e.type == "purchase"]
    assert sim.truth.revenue[("v1", "ab", "treatment")] == pytest.approx(sum(e.price * e.quantity for e in purchases))
    assert sim.truth.converted_users[("ab", "treatment")] == {SHOP.user_ids[0]}
    quiet = Shoppers(SHOP, ShopperModel(list_ids=False), seed=0).react(a_list(SHOP.user_ids[0], range(50)), 1.0)
    assert quiet and all(e.list_id is None for e in quiet)


def test_a_known_lift_is_detected_at_the_planned_power():
    model = ShopperModel(lift={"treatment": 0.25})
    probe = offline_experiment(AB, model, shop=SHOP, users=20_000, seed=10_000)
    p0, p1 = probe.expected_rates["control"], probe.expected_rates["treatment"]
    per_arm = users_per_arm(p0, p1 / p0 - 1, power=0.8)
    seeds = 40
    detected = 0
    covered = 0
    for seed in range(seeds):
        run = offline_experiment(AB, model, shop=SHOP, users=2 * per_arm, seed=seed)
        treatment = run.result.arms[1]
        detected += treatment.p_value < 0.05 and treatment.lift > 0
        true_lift = run.expected_rates["treatment"] / run.expected_rates["control"] - 1
        covered += treatment.lift_low <= true_lift <= treatment.lift_high
    # 80 % planned: with 40 seeds, fewer than 24 detections has probability < 0.1 %.
    assert detected >= stats.binom.ppf(0.001, seeds, 0.8), detected
    assert covered >= stats.binom.ppf(0.001, seeds, 0.95), covered


def test_a_a_runs_reject_at_the_nominal_rate():
    seeds = 200
    rejections = sum(offline_experiment(AB, ShopperModel(), shop=SHOP, users=2_000, seed=s).result.arms[1].p_value < 0.05
                     for s in range(seeds))
    # Binomial(200, 0.05): outside [2, 21] has probability < 0.2 %.
    assert stats.binom.ppf(0.001, seeds, 0.05) <= rejections <= stats.binom.ppf(0.999, seeds, 0.05), rejections
