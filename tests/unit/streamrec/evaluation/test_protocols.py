from collections.abc import Sequence

import numpy as np
import pytest

from streamrec.evaluation.base import Recommender
from streamrec.evaluation.baselines import ItemKNN
from streamrec.evaluation.data import EventLog, leave_one_out
from streamrec.evaluation.protocols import waves, run_leave_one_out, run_prequential


class Recorder(Recommender):
    """Remembers every call; recommends a fixed list, or the answer at a chosen position."""

    name = "recorder"

    def __init__(self, log: EventLog, *, user_local: bool = True, retrains: bool = True, answers=None, at=0):
        self.log, self.user_local, self.retrains = log, user_local, retrains
        self.answers, self.at = answers, at
        self.calls: list[tuple] = []

    def fit(self, log):
        self.calls.append(("fit", len(log), log.users.copy(), log.items.copy()))

    def observe(self, log):
        for user, item in zip(log.users.tolist(), log.items.tolist()):
            self.calls.append(("observe", user, item))

    def recommend(self, users, k, exclude: Sequence[np.ndarray]):
        top = np.full((len(users), k), -1)
        for n, user in enumerate(users.tolist()):
            self.calls.append(("recommend", user, tuple(exclude[n].tolist())))
            if self.answers is not None:
                top[n, self.at] = self.answers[user]
        return top


def test_leave_one_out_fits_on_train_observes_validation_and_masks_history(toy_log):
    split = leave_one_out(toy_log)
    answers = dict(zip(split.users.tolist(), split.test_items.tolist()))
    model = Recorder(toy_log, answers=answers, at=2)
    outcome = run_leave_one_out(model, toy_log, split=split)
    fit = [c for c in model.calls if c[0] == "fit"]
    assert len(fit) == 1 and fit[0][1] == len(split.train)
    observed = [c[1:] for c in model.calls if c[0] == "observe"]
    assert observed == [(toy_log.users[n], toy_log.items[n]) for n in split.validation]
    excluded = {c[1]: c[2] for c in model.calls if c[0] == "recommend"}
    for user, history in zip(split.users.tolist(), split.histories):
        assert excluded[user] == tuple(history.tolist())
    # The answer at position 2 (0-based): HR@1 = 0, HR@5 = 1, NDCG@5 = 1 / log2(4).
    assert outcome.metrics["HR@5"] == 1.0 and outcome.metrics["NDCG@5"] == 0.5
    assert outcome.users == len(split.users) and outcome.protocol == "leave-one-out"


def stream_log():
    # u0 buys a then views b; u1 views c, d, c; u2 appears once at the very end.
    users = ["u0", "u1", "u0", "u1", "u1", "u0", "u2"]
    items = ["a", "c", "b", "d", "c", "a", "x"]
    types = ["purchase", "view", "view", "view", "view", "view", "view"]
    return EventLog.from_arrays(users, items, types, np.arange(7.0))


@pytest.mark.parametrize("user_local", [True, False])
def test_prequential_tests_each_event_before_learning_it(user_local):
    log = stream_log()
    model = Recorder(log, user_local=user_local)
    outcome = run_prequential(model, log, pretrain=2, retrain_every=3)
    calls = model.calls
    # Retrained on everything before event 5 (2 + 3), not again.
    assert [c[1] for c in calls if c[0] == "fit"] == [2, 5]
    # Per user, after the pretraining fit: a recommendation before every event, then the event.
    after_fit = calls[1:]
    for name, expected in {"u0": ["recommend", "b", "recommend", "a"], "u1": ["recommend", "d", "recommend", "c"],
                           "u2": ["x"]}.items():
        user = log.user_ids.index(name)
        mine = [c for c in after_fit if c[0] != "fit" and c[1] == user]
        assert [c[0] if c[0] == "recommend" else log.item_ids[c[2]] for c in mine] == expected
    # u0's purchase of a is excluded from then on.
    u0 = log.user_ids.index("u0")
    assert all(c[2] == (log.item_ids.index("a"),) for c in calls if c[0] == "recommend" and c[1] == u0)
    assert outcome.cases == 4 and outcome.event_index.tolist() == [2, 3, 4, 5]
    # u1 views c again at event 4: not a new item; u0 views a again at 5: not new either.
    assert outcome.new_item.tolist() == [True, True, False, False]


def test_waves_hold_one_event_per_user_in_order():
    users = np.array([4, 4, 1, 4, 2, 1, 1])
    grouped = waves(users)
    assert [w.tolist() for w in grouped] == [[0, 2, 4], [1, 5], [3, 6]]
    for wave in grouped:
        assert len(set(users[wave].tolist())) == len(wave)


def test_waves_equal_the_event_by_event_loop(toy_log):
    batched = run_prequential(ItemKNN(), toy_log, pretrain=800, retrain_every=700)
    sequential_model = ItemKNN()
    sequential_model.user_local = False
    sequential = run_prequential(sequential_model, toy_log, pretrain=800, retrain_every=700)
    np.testing.assert_array_equal(batched.positions, sequential.positions)
    np.testing.assert_array_equal(batched.event_index, sequential.event_index)


def test_prequential_rejects_bad_arguments(toy_log):
    with pytest.raises(ValueError, match="pretrain"):
        run_prequential(ItemKNN(), toy_log, pretrain=0, retrain_every=10)
    with pytest.raises(ValueError, match="retrain_every"):
        run_prequential(ItemKNN(), toy_log, pretrain=10, retrain_every=0)


def test_prequential_tells_the_model_whether_purchases_are_left_out():
    log = stream_log()
    for exclude_purchased in (True, False):
        model = Recorder(log)
        run_prequential(model, log, pretrain=2, retrain_every=3, exclude_purchased=exclude_purchased)
        assert model.exclude_purchased is exclude_purchased  # a model that chooses on held-out events follows it
        recommended = [c for c in model.calls if c[0] == "recommend"]
        assert any(c[2] for c in recommended) is exclude_purchased
