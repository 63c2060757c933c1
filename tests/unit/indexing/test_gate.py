"""The trainer's gate and its event window, on data with known answers (no broker)."""

from __future__ import annotations

import numpy as np
import pytest

from indexing.gate import decide, gate_cases, model_rows, next_item_hits, paired_standard_error, split_holdout
from indexing.index import build_index
from indexing.trainer import EventWindow, TrainerParams
from streamrec.contract import Event


def chain_model(n: int = 20):
    """Context = identity, target[j] = e_(j-1): after item i the best next item is i + 1."""
    context = np.eye(n, dtype=np.float32)
    target = np.roll(np.eye(n, dtype=np.float32), 1, axis=0)
    return context, build_index(target, "Flat")


def test_next_item_hits_replays_each_users_history_before_the_case():
    context, index = chain_model()
    # user 0 walks 0 -> 1 -> 2 -> 3 (each next item is the model's top 1); user 1 jumps 5 -> 9;
    # user 2's last item is unknown to the model (-1): a miss.
    users = np.array([0, 1, 0, 0, 1, 0, 2, 2])
    rows = np.array([0, 5, 1, 2, 9, 3, 4, -1])
    ts = np.array([1.0, 1, 2, 3, 2, 4, 1, 2])
    types = np.zeros(len(users), np.int8)
    cases = np.array([2, 3, 4, 5, 7])
    hits = next_item_hits(context, index, rows, users, types, ts, cases, k=1)
    assert hits.tolist() == [True, True, False, True, False]
    # Arrival order does not matter, time does: the same events shuffled give the same answers.
    perm = np.random.default_rng(1).permutation(len(users))
    inverse = np.argsort(perm)
    shuffled = next_item_hits(context, index, rows[perm], users[perm], types[perm], ts[perm], inverse[cases], k=1)
    assert shuffled.tolist() == hits.tolist()


def test_gate_cases_skip_first_events_and_repeats_and_are_capped():
    users = np.array([0, 0, 0, 1, 1, 2])
    items = np.array([1, 1, 2, 3, 4, 5])
    ts = np.array([1.0, 2, 3, 4, 5, 6])
    _, holdout = split_holdout(ts, 0.99)
    assert gate_cases(users, items, ts, holdout, max_cases=10).tolist() == [2, 4]
    assert len(gate_cases(users, items, ts, holdout, max_cases=1)) == 1
    with pytest.raises(ValueError, match="held-out fraction"):
        split_holdout(ts, 1.0)


def test_model_rows_and_decision():
    assert model_rows(np.array(["a", "zz", "b"], dtype=object), {"a": 0, "b": 1}).tolist() == [0, -1, 1]
    assert decide(0.2, None, 0.0).publish
    assert decide(0.2, 0.2, 0.0).publish and not decide(0.19, 0.2, 0.0).publish
    assert "margin 0.005" in decide(0.1, 0.2, 0.005).reason
    same = np.array([True, False, True, True])
    assert paired_standard_error(same, same) == 0.0


def test_window_keeps_the_newest_events_in_arrival_order_and_forgets_unused_ids():
    window = EventWindow(3)
    for n in range(3000):
        window.append(Event(f"e{n}", f"u{n % 7}", f"i{n}", "view", float(n)))
    snap = window.snapshot()
    assert len(window) == 3 and snap.ts.tolist() == [2997.0, 2998.0, 2999.0]
    assert [snap.item_keys[i] for i in snap.items] == ["i2997", "i2998", "i2999"]
    assert len(snap.item_keys) <= 2 * 3 + 1024 + 1  # compacted as it went
    with pytest.raises(ValueError):
        TrainerParams(holdout=0.0)
