import numpy as np

from streamrec.evaluation.data import EventLog, leave_one_out, sample_users, shuffle_within_users, user_sequences


def test_log_is_sorted_by_time_stably_and_numbered_by_first_appearance():
    log = EventLog.from_arrays(
        ["b", "a", "b", "a"], ["y", "x", "x", "z"], ["view", "purchase", "view", "click"], [5.0, 1.0, 1.0, 9.0],
        ["e0", "e1", "e2", "e3"],
    )
    assert log.event_ids == ("e1", "e2", "e0", "e3")  # ties keep file order
    assert log.user_ids == ["a", "b"] and log.item_ids == ["x", "y", "z"]
    assert log.users.tolist() == [0, 1, 1, 0]
    assert [e.event_id for e in log.events()] == ["e1", "e2", "e0", "e3"]
    assert [e.type for e in log.events()] == ["purchase", "view", "view", "click"]


def test_leave_one_out_split_known_answer():
    # u1: a b c d e (5 events), u2: a b (too short: training only), u3: c d a
    users = ["u1"] * 5 + ["u2"] * 2 + ["u3"] * 3
    items = list("abcde") + list("ab") + list("cda")
    ts = [0, 1, 2, 3, 4, 0, 1, 0, 1, 2]
    log = EventLog.from_arrays(users, items, ["purchase"] * 10, ts)
    split = leave_one_out(log)
    item = {name: row for row, name in enumerate(log.item_ids)}
    user = {name: row for row, name in enumerate(log.user_ids)}
    assert [log.user_ids[u] for u in split.users] == ["u1", "u3"]
    assert [log.item_ids[i] for i in split.test_items] == ["e", "a"]
    assert [[log.item_ids[i] for i in h] for h in split.histories] == [list("abcd"), list("cd")]
    train = {(log.user_ids[log.users[n]], log.item_ids[log.items[n]]) for n in split.train}
    assert train == {("u1", "a"), ("u1", "b"), ("u1", "c"), ("u2", "a"), ("u2", "b"), ("u3", "c")}
    validation = [(log.users[n], log.items[n]) for n in split.validation]
    assert sorted(validation) == sorted([(user["u1"], item["d"]), (user["u3"], item["d"])])
    # Every event is in exactly one of train, validation, test.
    assert len(split.train) + len(split.validation) + len(split.users) == len(log)


def test_user_sequences_and_sampling_keep_whole_users(toy_log):
    sample = sample_users(toy_log, 40, seed=1)
    assert sample.n_users == 40
    full = {u: [toy_log.item_ids[toy_log.items[n]] for n in seq] for u, seq in zip(toy_log.user_ids, user_sequences(toy_log))}
    for user, seq in zip(sample.user_ids, user_sequences(sample)):
        assert [sample.item_ids[sample.items[n]] for n in seq] == full[user]
    assert np.all(np.diff(sample.ts) >= 0)


def test_shuffling_within_users_keeps_what_and_when_and_loses_the_order(toy_log):
    shuffled = shuffle_within_users(toy_log, seed=3)
    assert (shuffled.users == toy_log.users).all() and (shuffled.ts == toy_log.ts).all()
    assert shuffled.user_ids == toy_log.user_ids and shuffled.item_ids == toy_log.item_ids
    moved = 0
    for before, after in zip(user_sequences(toy_log), user_sequences(shuffled)):
        pairs = sorted(zip(toy_log.items[before].tolist(), toy_log.types[before].tolist()))
        assert sorted(zip(shuffled.items[after].tolist(), shuffled.types[after].tolist())) == pairs
        moved += (toy_log.items[before] != shuffled.items[after]).any()
    assert moved > toy_log.n_users // 2  # most users' order changed
    again = shuffle_within_users(toy_log, seed=3)
    assert (again.items == shuffled.items).all() and (shuffle_within_users(toy_log, seed=4).items != shuffled.items).any()


def test_shuffled_event_ids_stay_with_their_events():
    log = EventLog.from_arrays(["a", "a", "a", "b"], ["x", "y", "z", "x"], ["view", "click", "purchase", "view"],
                               [1.0, 2.0, 3.0, 4.0], ["ex", "ey", "ez", "bx"])
    shuffled = shuffle_within_users(log, seed=1)
    own = {"ex": ("x", "view"), "ey": ("y", "click"), "ez": ("z", "purchase"), "bx": ("x", "view")}
    for event in shuffled.events():
        assert own[event.event_id] == (event.item_id, event.type)


def test_the_catalogs_features_travel_with_the_log(toy_log):
    from dataclasses import replace

    from streamrec.evaluation.protocols import _without_ids
    from streamrec.evaluation.tune import without_last_events

    features = {item_id: (("cat", "x"),) for item_id in toy_log.item_ids}
    log = replace(toy_log, item_features=features)
    for derived in (log.take(np.arange(3)), sample_users(log, 2), shuffle_within_users(log), without_last_events(log),
                    _without_ids(log)):
        assert derived.item_features is features
