"""The new-items protocol on a tiny shop with a known answer.

Before the cut, users buy X then Y (and wander among filler items). After the cut a product N
the model never saw comes out, and every new user buys X, then N. With fold-in the worker
learns from the first buyers that N follows X and lists it for later ones; frozen can never
list it. N's catalog record shares its brand with Y only, so with the catalog prior N is
listed (as Y is) before anyone buys it: even its first buyer is a hit.
"""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from indexing.train import TrainParams
from streamrec.cli.evaluate import evaluate
from streamrec.contract import CatalogItem
from streamrec.evaluation.data import EventLog
from streamrec.evaluation.new_items import run_new_items

N_TRAIN_USERS, N_TEST_USERS = 120, 40
CUT = 480  # 60 users buy X, Y and 3 fillers; 60 buy 3 fillers


def shop() -> EventLog:
    rng = np.random.default_rng(0)
    users, items, ts = [], [], []
    t = 0.0
    for u in range(N_TRAIN_USERS):
        filler = [f"f{k}" for k in rng.choice(30, 3, replace=False)]
        path = ["X", "Y", *filler] if u % 2 == 0 else filler
        for item in path:
            users.append(f"u{u}")
            items.append(item)
            ts.append(t)
            t += 60.0
    cut = len(users)
    for u in range(N_TEST_USERS):
        for item in ("X", "N"):
            users.append(f"t{u}")
            items.append(item)
            ts.append(t)
            t += 60.0
    assert cut == CUT and len(users) == cut + 2 * N_TEST_USERS
    return EventLog.from_arrays(users, items, ["purchase"] * len(users), ts)


CATALOG = {"Y": CatalogItem("Y", brand="Acme"), "N": CatalogItem("N", brand="Acme"),
           **{f"f{k}": CatalogItem(f"f{k}", brand="Other") for k in range(30)}}


@pytest.fixture(scope="module")
def outcome():
    log = shop()
    return run_new_items(log, catalog=CATALOG, train_fraction=CUT / len(log), batch_size=1,
                         train_params=TrainParams(dim=8))


def by_name(outcome):
    return {v.name: v for v in outcome.variants}


def test_the_cut_and_what_is_scored(outcome):
    d = outcome.details
    assert d["train_events"] == CUT and d["model_items"] == 32 and d["new_items_in_segment"] == 1
    assert d["events_on_new_items"] == N_TEST_USERS
    for v in outcome.variants:
        # every X is a new user's first event (not scored); every N follows its buyer's X
        assert v.scored_all == v.scored_new == N_TEST_USERS and v.unscored == N_TEST_USERS
        assert v.new_items == 1


def test_frozen_never_recommends_the_new_item(outcome):
    frozen = by_name(outcome)["frozen"]
    assert frozen.hits_new == 0 and frozen.listed == 0 and frozen.dropped == N_TEST_USERS
    assert frozen.as_dict()["delay_events_median"] is None


def test_fold_in_learns_the_new_item_from_its_first_buyers(outcome):
    fold = by_name(outcome)["fold-in"]
    assert fold.listed == 1 and fold.listed_before_first_event == 0
    assert fold.hits_new >= N_TEST_USERS - 5  # all but the first few buyers see it
    # the first buyer cannot have seen it: it was listed after N's first event
    assert fold.delay_events[0] >= 1


def test_the_catalog_prior_lists_the_new_item_before_its_first_event(outcome):
    variants = by_name(outcome)
    for name in ("catalog", "prior-only"):
        v = variants[name]
        assert v.listed == 1 and v.listed_before_first_event == 1 and v.delay_events[0] == 0
        assert v.hits_new == N_TEST_USERS, name
    assert variants["catalog"].hits_new > variants["fold-in"].hits_new


def test_without_a_catalog_the_catalog_variants_are_skipped():
    log = shop()
    names = [v.name for v in run_new_items(log, train_fraction=CUT / len(log), batch_size=20,
                                           train_params=TrainParams(dim=8)).variants]
    assert names == ["frozen", "fold-in"]


def test_bad_arguments():
    log = shop()
    with pytest.raises(ValueError, match="unknown variant"):
        run_new_items(log, variants=["nope"])
    with pytest.raises(ValueError, match="train_fraction < end_fraction"):
        run_new_items(log, train_fraction=0.6, end_fraction=0.5)


def test_cli_new_items_json(tmp_path):
    path = tmp_path / "shop.jsonl"
    log = shop()
    with path.open("w") as handle:
        for n in range(len(log)):
            handle.write(json.dumps({"event_id": f"e{n}", "user_id": log.user_ids[log.users[n]],
                                     "item_id": log.item_ids[log.items[n]], "type": "purchase",
                                     "ts": 1.5e9 + float(log.ts[n])}) + "\n")
    result = CliRunner().invoke(evaluate, [
        "--dataset", str(path), "--format", "jsonl", "--protocol", "new-items", "--dim", "8", "--batch-size", "1",
        "--train-fraction", str(CUT / len(log)), "--json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [r["variant"] for r in records] == ["frozen", "fold-in"]
    assert records[0]["HR@10_new_items"] == 0.0 and records[1]["HR@10_new_items"] > 0.8
    assert records[1]["protocol"] == "new-items" and records[1]["dataset"] == "shop"


def test_the_replayed_version_carries_what_a_saved_version_carries(tmp_path):
    """The replay's item side is the worker's view of a whole version: the repeat, neighbour and
    factor steps' arrays and the factor step's choice, as loaded from disk."""
    from indexing.artifact import load_artifact
    from indexing.train import interactions_from_arrays, train_model
    from streamrec.core.interest import InterestParams
    from streamrec.core.items import ItemsModel
    from streamrec.evaluation.new_items import train_items_model

    log, params = shop(), TrainParams(dim=8, factors=4, factor_iterations=3)
    replayed = train_items_model(log, CUT, params, InterestParams())
    data = interactions_from_arrays(np.asarray(log.users[:CUT]), np.asarray(log.items[:CUT]), log.types[:CUT],
                                    log.ts[:CUT])
    saved = train_model(data, params, InterestParams())
    saved.summary["factors"]["weight"] = replayed.factor_weight  # the choice, as a trainer writes it
    loaded = ItemsModel.from_artifact(load_artifact(saved.save(tmp_path), use_gpu=False))
    assert replayed.item_ids == [log.item_ids[int(i)] for i in loaded.item_ids]
    for name in ("context", "target", "popularity", "repeat", "repeat_by_age", "neighbours", "neighbour_sims",
                 "factors"):
        assert getattr(replayed, name) is not None, name
        np.testing.assert_array_equal(getattr(replayed, name), getattr(loaded, name))
    assert (replayed.factor_weight, replayed.factor_repeats) == (loaded.factor_weight, loaded.factor_repeats)
