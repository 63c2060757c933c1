"""The trainer's gate, scored on the lists the worker would publish.

:mod:`indexing.gate` scores a model on the gate's cases by its FAISS search alone. A version is
served with more than that: the repeat, neighbour and factor steps (the last with the weight
and answer chosen for that version), the exclusions of what each user bought. A candidate whose
steps serve worse (its factor weight badly chosen, its neighbours or repeat lifts off) would pass
a gate that does not run them. :func:`served_hits` runs them all, through
:class:`streamrec.evaluation.served.ServedModel` and so through the worker's own core functions:

1. The window's events in time order (ties by arrival, :func:`indexing.gate.split_holdout`'s
   order). The events before the held-out ones are applied to the users' states, as the worker
   would have applied them with this version.
2. The held-out events then follow in waves, one event per user per wave (the served model's
   lists depend only on the user's own events, so this equals the event-by-event order). Before
   each case its user's list of ``k`` is asked for, with what the user bought so far left out,
   and a hit is counted when it holds the case's item.

``streamrec trainer`` passes it as :attr:`indexing.trainer.TrainerParams.score`, so the candidate
and the version being served are scored this way on the same cases.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from indexing.train import TrainedModel, TrainParams
from streamrec.core.interest import InterestParams
from streamrec.evaluation.data import EventLog
from streamrec.evaluation.protocols import Exclusions, waves
from streamrec.evaluation.served import ServedModel


def window_log(users: np.ndarray, items: np.ndarray, types: np.ndarray, ts: np.ndarray,
               item_keys: np.ndarray) -> tuple[EventLog, np.ndarray]:
    """The window's events (integer codes in arrival order; ``item_keys``: what the item codes
    stand for) as an :class:`EventLog` in time order, and each event's position in it."""
    order = np.argsort(ts, kind="stable")
    position = np.empty(len(order), np.int64)
    position[order] = np.arange(len(order))
    n_users = int(users.max()) + 1 if len(users) else 0
    log = EventLog(tuple(str(u) for u in range(n_users)), tuple(str(key) for key in item_keys),
                   np.asarray(users)[order].astype(np.int64), np.asarray(items)[order].astype(np.int64),
                   np.asarray(types)[order].astype(np.int8), np.asarray(ts, np.float64)[order], None)
    return log, position


def served_hits(trained: TrainedModel, window: Any, holdout: np.ndarray, cases: np.ndarray, k: int, *,
                interest: InterestParams) -> np.ndarray:
    """Per case (an index into ``window``'s events, all held out), whether its item is in the
    list of ``k`` the worker would publish for the user just before it with version ``trained``
    (the module doc); ``window``: the trainer's :class:`indexing.trainer.WindowArrays`;
    ``holdout``: the held-out events' indices, the newest by time."""
    hits = np.zeros(len(cases), bool)
    if not len(cases):
        return hits
    log, position = window_log(window.users, window.items, window.types, window.ts, window.item_keys)
    start = len(log) - len(holdout)
    if not np.array_equal(np.sort(position[holdout]), np.arange(start, len(log))):
        raise ValueError("the held-out events must be the window's newest by time")
    before = log.take(slice(0, start))
    model = ServedModel(TrainParams(dim=trained.context.shape[1]), interest)
    model.serve_version(trained, before)
    bought = Exclusions(log.n_users)
    bought.add(before)
    is_case = np.zeros(len(log), bool)
    is_case[position[cases]] = True
    hit = np.zeros(len(log), bool)
    for wave in waves(log.users[start:]):
        index = start + wave
        scored = index[is_case[index]]
        if len(scored):
            top = model.recommend(log.users[scored], k, bought.of(log.users[scored]))
            hit[scored] = (top == log.items[scored][:, None]).any(axis=1)
        events = log.take(index)
        model.observe(events)
        bought.add(events)
    return hit[position[cases]]
