"""The factor step's weight chosen on a shop's own held-out events (streamrec/evaluation/choose.py)."""

from dataclasses import replace

import numpy as np
import pytest

from indexing.train import TrainParams, interactions_from_arrays, train_model
from streamrec.core.interest import InterestParams
from streamrec.evaluation.choose import choose_factor_weight, choose_for, held_out, log_of
from streamrec.evaluation.data import EventLog
from streamrec.evaluation.served import ServedModel

PARAMS = TrainParams(dim=16, refine_epochs=2)


def shop(kind: str, n_users: int = 400, seed: int = 0) -> EventLog:
    """``sequence``: every shopper walks a chain of 120 items from a random start (the next item
    is the last one's successor). ``taste``: every shopper likes one of 20 groups of 20 items;
    half of their 16 events are on items of that group, half on random items of all 400, in a
    random order, and the last is on the group: the last few events say little, the whole
    history says which group. ``taste-again``: as ``taste``, but the last event comes back to the
    group's item the shopper saw first (nobody comes back to an item before that)."""
    rng = np.random.default_rng(seed)
    users, items, ts = [], [], []
    for user in range(n_users):
        if kind == "sequence":
            start = int(rng.integers(120))
            mine = [(start + step) % 120 for step in range(10)]
        else:
            liked = rng.permutation(20) + 20 * int(rng.integers(20))
            noise = [int(i) for i in rng.choice(400, 8, replace=False) if i not in liked][:7]
            mine = [int(i) for i in rng.permutation(np.concatenate([liked[:8], noise]))]
            mine.append(int(liked[8]) if kind == "taste" else next(i for i in mine if i in liked[:8]))
        users += [f"u{user}"] * len(mine)
        items += [f"i{item}" for item in mine]
        ts += (1.6e9 + user * 1000 + np.arange(len(mine)) * 60.0).tolist()
    return EventLog.from_arrays(users, items, ["view"] * len(items), ts)


def test_the_held_out_events_are_each_users_last():
    log = EventLog.from_arrays(["u", "v", "u", "w", "u", "v"], list("abcdef"), ["view"] * 6, list(range(6)))
    rest, users, items = held_out(log)
    assert [log.item_ids[i] for i in rest.items] == ["a", "b", "c", "d"]
    assert [log.user_ids[u] for u in users] == ["u", "v"]  # w has one event: kept for training, nothing held out
    assert [log.item_ids[i] for i in items] == ["e", "f"]


def test_a_shop_where_the_next_item_follows_the_last_keeps_the_step_off():
    choice = choose_factor_weight(shop("sequence"), PARAMS, InterestParams(factor_weight="auto"), model=ServedModel)
    assert choice.weight == 0.0
    assert choice.users > 300 and choice.rows[0]["weight"] == 0.0 and choice.rows[0]["HR"] > 0.8


def test_a_shop_where_the_order_says_nothing_turns_it_on():
    choice = choose_factor_weight(shop("taste"), PARAMS, InterestParams(factor_weight="auto"), model=ServedModel)
    assert choice.weight > 0, choice.rows
    best = max(choice.rows, key=lambda row: row["HR"])
    assert best["HR"] > choice.rows[0]["HR"] + 2 * best["se"]
    assert not choice.repeats and not best["repeats"]  # the next item is an unseen one of the group
    assert len(choice.rows) == 1 + 2 * 4  # off, and every weight without and with recent items


def test_a_shop_whose_shoppers_come_back_to_what_they_liked_lets_the_factor_list_repeat():
    choice = choose_factor_weight(shop("taste-again"), PARAMS, InterestParams(factor_weight="auto"), model=ServedModel)
    assert choice.weight > 0 and choice.repeats, choice.rows
    plain = max(row["HR"] for row in choice.rows if not row["repeats"])
    again = max(row["HR"] for row in choice.rows if row["repeats"])
    assert again > plain + 0.1, choice.rows


def test_the_trainers_write_the_choice_into_the_version():
    log = shop("taste", n_users=200)
    data = interactions_from_arrays(np.asarray(log.user_ids)[log.users], np.asarray(log.item_ids)[log.items],
                                    log.types, log.ts)
    assert len(log_of(data)) == len(log)
    interest = InterestParams(factor_weight="auto")
    trained = train_model(data, PARAMS, interest)
    assert trained.summary["factors"]["weight"] == 0.0  # until a chooser writes it
    choice = choose_for(trained, data, PARAMS, interest, model=ServedModel)
    assert trained.summary["factors"]["weight"] == choice.weight and trained.summary["factors"]["choice"]["users"] > 0
    assert trained.summary["factors"]["repeats"] == choice.repeats
    # a fixed weight (or none) chooses nothing
    fixed = train_model(data, PARAMS, replace(interest, factor_weight=1.0))
    assert choose_for(fixed, data, PARAMS, replace(interest, factor_weight=1.0), model=ServedModel) is None
    assert train_model(data, PARAMS, InterestParams(factor_weight=0.0)).factors is None


def test_a_bad_weight_is_refused():
    with pytest.raises(ValueError, match="factor_weight must be 'auto' or a number"):
        InterestParams(factor_weight="sometimes")
    with pytest.raises(ValueError, match="factor_weight"):
        InterestParams(factor_weight=-1.0)


def test_the_choice_excludes_purchases_only_where_the_lists_do():
    """A shop where shoppers buy again what they liked: with purchases excluded (the worker's
    default) the factor list cannot bring them back; where repeat purchases are allowed
    (``evaluate --repeat-purchases``) the choice scores lists that may hold them."""
    log = shop("taste-again")
    bought = EventLog.from_arrays(np.asarray(log.user_ids)[log.users], np.asarray(log.item_ids)[log.items],
                                  ["purchase"] * len(log), log.ts)
    excluded = choose_factor_weight(bought, PARAMS, InterestParams(factor_weight="auto"), model=ServedModel)
    allowed = choose_factor_weight(bought, PARAMS, InterestParams(factor_weight="auto"), model=ServedModel,
                                   exclude_purchased=False)
    assert excluded.rows[0]["HR"] == 0.0  # every held-out item was bought before: never listed
    assert allowed.repeats and allowed.weight > 0, allowed.rows
