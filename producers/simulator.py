"""A closed-loop shop: shoppers with hidden tastes who react to the lists they are shown.

The shoppers are those of a :class:`producers.synthetic.SyntheticShop` (its ground truth is
their hidden taste: four preferred clusters of related products, in one to three preferred
categories). A shopper's *fit* to an item is 1 when the item is in one of their clusters, 0.3
when it is only in one of their categories, 0 otherwise. Shown a list, the shopper looks at its
items best first; for each item, independently:

- click with probability ``click_base + (click_fit - click_base) * fit``;
- after a click, add to cart with probability ``cart_given_click``;
- after an add-to-cart, buy with probability ``min(1, buy_given_cart * (1 + lift[variant]))``:
  ``lift`` is the simulator's *known* lift, a variant whose lists truly convert better;
- otherwise the shopper browses on their own (views of items of their clusters; never
  attributed, since a view is not an action on a list).

A purchase is of ``quantity`` 1 to 3 at the catalog's price. Each reaction records its ground
truth (which list, which variant) in :class:`GroundTruth`, the independent expectation the
attribution job is checked against. Everything is seeded: the same seed gives the same
shoppers' choices for the same lists.

:func:`offline_experiment` runs the same shopper model without Kafka (lists drawn by
popularity for every variant, so only the known lift differs) to measure the experiment
statistics' false-positive rate and power over many seeds.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from producers.synthetic import SyntheticShop
from streamrec.contract import Event, Recommendation
from streamrec.core.abtest import ExperimentResult, analyse
from streamrec.core.experiments import Experiment, assign


@dataclass(frozen=True)
class ShopperModel:
    """How shoppers react to a list (see the module docstring)."""

    click_base: float = 0.01
    click_fit: float = 0.25
    cart_given_click: float = 0.35
    buy_given_cart: float = 0.5
    #: Partial fit of an item of a preferred category outside the preferred clusters.
    category_fit: float = 0.3
    #: The known lift per variant name: its purchase probability is multiplied by 1 + lift.
    lift: dict[str, float] = field(default_factory=dict)
    #: Send an ``impression`` per shown item (as shops that log impressions do).
    impressions: bool = False
    #: Name the list in the reactions (``list_id``); without it attribution uses the window.
    list_ids: bool = True

    def __post_init__(self) -> None:
        for name in ("click_base", "click_fit", "cart_given_click", "buy_given_cart", "category_fit"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
        for variant, lift in self.lift.items():
            if not lift > -1.0:
                raise ValueError(f"the lift of variant {variant!r} must be > -1, got {lift}")


@dataclass
class GroundTruth:
    """What the shoppers did on lists, per ``(model_version, experiment, variant)``."""

    lists_seen: Counter = field(default_factory=Counter)
    clicks: Counter = field(default_factory=Counter)
    add_to_carts: Counter = field(default_factory=Counter)
    purchases: Counter = field(default_factory=Counter)
    revenue: Counter = field(default_factory=Counter)
    #: Lists with at least one click / purchase.
    clicked_lists: Counter = field(default_factory=Counter)
    converted_lists: Counter = field(default_factory=Counter)
    #: Per ``(experiment, variant)``: users who clicked / bought from a list.
    clicked_users: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    converted_users: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    def totals(self, variant: str | None = None) -> dict[str, float]:
        keys = [k for k in self.lists_seen if variant is None or k[2] == variant]
        return {"lists_seen": sum(self.lists_seen[k] for k in keys), "clicks": sum(self.clicks[k] for k in keys),
                "add_to_carts": sum(self.add_to_carts[k] for k in keys), "purchases": sum(self.purchases[k] for k in keys),
                "clicked_lists": sum(self.clicked_lists[k] for k in keys),
                "converted_lists": sum(self.converted_lists[k] for k in keys),
                "revenue": round(sum(self.revenue[k] for k in keys), 6)}


class Shoppers:
    """The shop's users as shoppers with hidden tastes, reacting to lists (seeded)."""

    def __init__(self, shop: SyntheticShop, model: ShopperModel | None = None, *, seed: int = 0) -> None:
        self.shop = shop
        self.model = model or ShopperModel()
        self.rng = np.random.default_rng([seed, 17])
        self.truth = GroundTruth()
        self.user_index = {user_id: n for n, user_id in enumerate(shop.user_ids)}
        self.item_index = {item_id: n for n, item_id in enumerate(shop.item_ids)}
        self._event_seq = 0
        n_users = shop.n_users
        self.user_categories = [set(shop.cluster_category[shop.user_clusters[u]].tolist()) for u in range(n_users)]
        self.user_cluster_sets = [set(shop.user_clusters[u].tolist()) for u in range(n_users)]

    def fit(self, user: int, items: np.ndarray) -> np.ndarray:
        """Each item's fit to the user's hidden taste: 1, ``category_fit`` or 0."""
        clusters = self.shop.item_cluster[items]
        categories = self.shop.item_category[items]
        in_cluster = np.isin(clusters, self.shop.user_clusters[user])
        in_category = np.isin(categories, list(self.user_categories[user]))
        return np.where(in_cluster, 1.0, np.where(in_category, self.model.category_fit, 0.0))

    def _event(self, user_id: str, item: int, kind: str, ts: float, **extra: object) -> Event:
        self._event_seq += 1
        return Event(f"sim-{self._event_seq}-{user_id}", user_id, self.shop.item_ids[item], kind, ts, **extra)

    def browse(self, user_id: str, ts: float, n: int = 1) -> list[Event]:
        """``n`` views of items from the shopper's own clusters (popular ones more often)."""
        user = self.user_index[user_id]
        clusters = self.rng.choice(self.shop.user_clusters[user], size=n)
        items = self.shop._items_in_cluster.draw(clusters, self.rng.random(n))
        return [self._event(user_id, int(item), "view", ts + 0.001 * k) for k, item in enumerate(items)]

    def react(self, rec: Recommendation, ts: float) -> list[Event]:
        """The shopper's actions on the list ``rec``, shown at ``ts`` (event times after it)."""
        model, user_id = self.model, rec.user_id
        user = self.user_index[user_id]
        rows = [self.item_index.get(i.item_id, -1) for i in rec.items]
        known = np.array([r for r in rows if r >= 0], dtype=np.int64)
        key = (rec.model_version, rec.experiment or "", rec.variant or "")
        arm = (rec.experiment or "", rec.variant or "")
        self.truth.lists_seen[key] += 1
        events: list[Event] = []
        step = 0

        def at() -> float:
            nonlocal step
            step += 1
            return ts + 0.001 * step

        named = {"list_id": rec.list_id} if model.list_ids else {}
        if model.impressions:
            events += [self._event(user_id, int(item), "impression", at(), list_id=rec.list_id) for item in known]
        if not len(known):
            return events
        fit = self.fit(user, known)
        p_click = model.click_base + (model.click_fit - model.click_base) * fit
        p_buy = min(1.0, model.buy_given_cart * (1.0 + model.lift.get(rec.variant or "", 0.0)))
        draws = self.rng.random((len(known), 3))
        clicked = converted = False
        for item, click, cart, buy, (u_click, u_cart, u_buy) in zip(
                known.tolist(), p_click, [model.cart_given_click] * len(known), [p_buy] * len(known), draws):
            if u_click >= click:
                continue
            events.append(self._event(user_id, item, "click", at(), **named))
            self.truth.clicks[key] += 1
            self.truth.clicked_lists[key] += not clicked
            clicked = True
            self.truth.clicked_users.setdefault(arm, set()).add(user_id)
            if u_cart >= cart:
                continue
            events.append(self._event(user_id, item, "add_to_cart", at(), **named))
            self.truth.add_to_carts[key] += 1
            if u_buy >= buy:
                continue
            quantity = int(self.rng.integers(1, 4))
            price = float(self.shop.item_price[item])
            events.append(self._event(user_id, item, "purchase", at(), price=price, quantity=quantity, **named))
            self.truth.purchases[key] += 1
            self.truth.converted_lists[key] += not converted
            converted = True
            self.truth.revenue[key] += price * quantity
            self.truth.converted_users.setdefault(arm, set()).add(user_id)
        return events


# --------------------------------------------------------------------------- offline experiments


@dataclass(frozen=True)
class OfflineRun:
    result: ExperimentResult
    #: Each variant's expected conversion rate (the probability, averaged over its users).
    expected_rates: dict[str, float]


def offline_experiment(experiment: Experiment, model: ShopperModel, *, shop: SyntheticShop, users: int,
                       lists_per_user: int = 3, k: int = 10, seed: int = 0) -> OfflineRun:
    """One experiment without Kafka: ``users`` shoppers (ids ``sim-<seed>-<n>``, assigned by the
    experiment's hash, tastes of the shop's users in turn) each see ``lists_per_user`` lists of
    ``k`` items drawn by popularity, and react by ``model``; the report's statistics on who
    converted. Also the expected conversion rate of each variant (the known truth)."""
    rng = np.random.default_rng([seed, 29])
    user_ids = [f"sim-{seed}-{n}" for n in range(users)]
    variants = [assign(experiment, u).name for u in user_ids]
    tastes = np.arange(users) % shop.n_users
    n_shown = lists_per_user * k
    cum = np.cumsum(shop.item_popularity)
    cum /= cum[-1]
    items = np.minimum(np.searchsorted(cum, rng.random((users, n_shown)), side="right"), shop.n_items - 1)
    clusters = shop.item_cluster[items]
    in_cluster = (clusters[:, :, None] == shop.user_clusters[tastes][:, None, :]).any(axis=2)
    category_of_clusters = shop.cluster_category[shop.user_clusters[tastes]]
    in_category = (shop.item_category[items][:, :, None] == category_of_clusters[:, None, :]).any(axis=2)
    fit = np.where(in_cluster, 1.0, np.where(in_category, model.category_fit, 0.0))
    p_click = model.click_base + (model.click_fit - model.click_base) * fit
    lift = np.array([model.lift.get(v, 0.0) for v in variants])
    p_buy_given_cart = np.minimum(1.0, model.buy_given_cart * (1.0 + lift))
    p_buy = p_click * model.cart_given_click * p_buy_given_cart[:, None]
    converted = (rng.random(p_buy.shape) < p_buy).any(axis=1)
    names = [v.name for v in experiment.variants]
    variant_arr = np.array(variants)
    arms = {name: (int((variant_arr == name).sum()), int(converted[variant_arr == name].sum())) for name in names}
    # The truth: every shopper's probability of converting under each variant, averaged over all of them.
    p_interest = p_click * model.cart_given_click
    expected = {name: float((1.0 - np.prod(1.0 - p_interest * min(1.0, model.buy_given_cart * (1.0 + model.lift.get(name, 0.0))),
                                           axis=1)).mean()) for name in names}
    return OfflineRun(analyse(arms, experiment.shares(), experiment.control.name), expected)
