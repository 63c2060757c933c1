"""Long-term taste in the served model: a planted preference the interest vector forgets."""

import numpy as np

from indexing.train import TrainParams, interactions_from_arrays, train_model
from streamrec.core.interest import InterestParams
from streamrec.evaluation.data import EventLog
from streamrec.evaluation.protocols import run_prequential
from streamrec.evaluation.served import ServedModel


def loyal_shoppers(n_users=240, cycles=5, between=6, seed=0) -> EventLog:
    """Every shopper comes back to one favourite item (of 12) after ``between`` random ones (of
    300): the event after a run of random items is the favourite, which the interest vector
    (decay 0.5) has all but forgotten by then."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        favourite = f"fav-{u % 12}"
        for _ in range(cycles):
            users.append(f"u{u}")
            items.append(favourite)
            for item in rng.integers(0, 300, between):
                users.append(f"u{u}")
                items.append(f"r{item}")
    # Interleave the shoppers in time, each one's events in order.
    position = np.concatenate([np.arange(cycles * (between + 1))] * n_users)
    order = np.argsort(position, kind="stable")
    return EventLog.from_arrays([users[i] for i in order], [items[i] for i in order], ["view"] * len(users),
                                np.arange(len(users), dtype=float))


def favourite_hr(log: EventLog, taste_decay: float) -> float:
    # The taste vector alone (the factor step off: its "auto" would choose on every held-out event,
    # not on the favourites this test counts).
    model = ServedModel(TrainParams(dim=16), InterestParams(repeat_weight=0.0, taste_decay=taste_decay, factor_weight=0.0))
    outcome = run_prequential(model, log, pretrain=len(log) // 2, retrain_every=100_000, exclude_purchased=False)
    on_favourite = np.array([log.item_ids[log.items[n]].startswith("fav-") for n in outcome.event_index])
    return float((outcome.positions[on_favourite] < 10).mean())


def test_the_taste_vector_brings_the_favourite_back():
    log = loyal_shoppers()
    without, with_taste = favourite_hr(log, 0.0), favourite_hr(log, 0.9)
    # 12 favourites among 312 items: a model that knows which one is the shopper's lists it in its
    # top 10 almost always; one that knows only that favourites are popular, about 10 / 12 of the time
    # at best, and the short memory barely knows it.
    assert with_taste > 0.9 and with_taste > without + 0.1, (without, with_taste)


def test_training_saves_the_taste_map_only_when_taste_is_on(tmp_path):
    log = loyal_shoppers(n_users=60, cycles=3)
    data = interactions_from_arrays(np.asarray(log.user_ids)[log.users], np.asarray(log.item_ids)[log.items],
                                    log.types, log.ts)
    assert train_model(data, TrainParams(dim=8)).taste is None
    trained = train_model(data, TrainParams(dim=8), InterestParams(taste_decay=0.9))
    assert trained.taste.shape == (8, 8) and np.isfinite(trained.taste).all() and np.abs(trained.taste).sum() > 0
    from indexing.artifact import load_artifact

    loaded = load_artifact(trained.save(tmp_path), use_gpu=False)
    np.testing.assert_array_equal(loaded.extras["taste"], trained.taste)
