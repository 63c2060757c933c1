"""The two evaluation protocols, over any :class:`~streamrec.evaluation.base.Recommender`.

**Leave-one-out** (:func:`run_leave_one_out`), the S3-Rec authors' protocol: per user the
last event's item is the test item and the second-to-last the validation item; the model
is fitted on everything else, then sees each user's validation event (so a user's state
is their whole history but the test item, as the S3-Rec test input), then ranks all items
for every user with the user's history items masked; HR@K and NDCG@K are averaged over
all users.

**Prequential** (:func:`run_prequential`), test-then-learn over the time-ordered stream
(Vinagre, Jorge and Gama 2014): the model is fitted on the first part of the stream; then
for every later event ``(u, i)``, first the model recommends for ``u`` (``u``'s top-K
*before* the event), a hit is counted if ``i`` is in it, then the model learns from the
event. Batch models are refitted on everything so far every ``retrain_every`` events.
Events of users never seen before are not scored (there is nothing personal to test; they
would only measure a cold-start fallback). In both protocols the items a user purchased
before are excluded, as the worker excludes them.

For models whose recommendations are *user-local* (see :class:`~streamrec.evaluation.base.Recommender`)
the events between two refits are processed in waves: wave ``r`` holds every user's
``r``-th event of the segment, so a wave has at most one event per user and all of them
are scored in one batch, then learnt. Since a user-local model's answer for ``u`` depends
only on ``u``'s own earlier events, this equals the event-by-event loop exactly; other
models (popularity, ISGD) run event by event.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from streamrec.contract import PURCHASE
from streamrec.core.interest import rank_within_groups
from streamrec.evaluation.base import Recommender
from streamrec.evaluation.data import EventLog, LeaveOneOut, leave_one_out
from streamrec.evaluation.metrics import KS, beyond_accuracy, hit_positions, summarise

Progress = Callable[[int, int], None]


@dataclass
class Outcome:
    """What one model scored under one protocol."""

    name: str
    served: bool
    protocol: str
    metrics: dict[str, float]
    #: Evaluated users (leave-one-out) or scored events (prequential).
    cases: int
    users: int
    seconds: float
    fit_seconds: float
    #: Per case, the position of the relevant item in the top-K list (K where absent).
    positions: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    #: Prequential: stream index of each scored event, and whether its item was new to the user.
    event_index: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    new_item: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, bool))
    details: dict[str, object] = field(default_factory=dict)
    #: Catalog coverage, intra-list diversity and novelty of the top-10 lists (metrics.beyond_accuracy).
    beyond: dict[str, float] = field(default_factory=dict)


def run_leave_one_out(
    model: Recommender, log: EventLog, *, split: LeaveOneOut | None = None, ks: tuple[int, ...] = KS,
    block: int = 4096, progress: Progress | None = None,
) -> Outcome:
    """Fit on the training events, observe the validation events, rank for every user."""
    started = time.perf_counter()
    split = split or leave_one_out(log)
    model.fit(log.take(split.train))
    model.observe(log.take(split.validation))
    fit_seconds = time.perf_counter() - started
    depth = max(ks)
    positions = np.empty(len(split.users), dtype=np.int64)
    lists = np.full((len(split.users), 10), -1, dtype=np.int64)
    for start in range(0, len(split.users), block):
        end = min(start + block, len(split.users))
        top = model.recommend(split.users[start:end], depth, split.histories[start:end])
        positions[start:end] = hit_positions(top, split.test_items[start:end])
        lists[start:end, : min(10, top.shape[1])] = top[:, :10]
        if progress is not None:
            progress(end, len(split.users))
    return Outcome(
        name=model.name, served=model.served, protocol="leave-one-out", metrics=summarise(positions, ks),
        cases=len(positions), users=len(positions), seconds=time.perf_counter() - started,
        fit_seconds=fit_seconds, positions=positions, details=model.describe(),
        beyond=beyond_accuracy(lists, log.users[split.train], log.items[split.train], log.n_users, log.n_items),
    )


class Exclusions:
    """Items each user purchased so far (what the worker never recommends)."""

    def __init__(self, n_users: int, *, enabled: bool = True) -> None:
        self.items: list[dict[int, None]] = [{} for _ in range(n_users)]  # insertion-ordered sets
        self.enabled = enabled

    def add(self, log: EventLog) -> None:
        if not self.enabled:
            return
        bought = log.types == PURCHASE
        for user, item in zip(log.users[bought].tolist(), log.items[bought].tolist(), strict=True):
            self.items[user][item] = None

    def of(self, users: np.ndarray) -> list[np.ndarray]:
        return [np.fromiter(self.items[u], np.int64, count=len(self.items[u])) for u in users.tolist()]


def run_prequential(
    model: Recommender,
    log: EventLog,
    *,
    pretrain: int,
    retrain_every: int,
    ks: tuple[int, ...] = KS,
    progress: Progress | None = None,
    exclude_purchased: bool = True,
) -> Outcome:
    """Test-then-learn over ``log`` from event ``pretrain`` on (see the module doc).

    ``exclude_purchased=False``: repeat purchases allowed (a shop whose every category is a
    repeat-purchase one, ``rules.repeat_purchase_categories``): nothing is excluded."""
    if not 0 < pretrain < len(log):
        raise ValueError(f"pretrain must be between 1 and {len(log) - 1} events, got {pretrain}")
    if retrain_every < 1:
        raise ValueError(f"retrain_every must be >= 1, got {retrain_every}")
    started = time.perf_counter()
    log = _without_ids(log)  # models never need the ids; taking slices is cheaper without
    depth = max(ks)
    model.exclude_purchased = exclude_purchased
    model.fit(log.take(slice(0, pretrain)))
    fit_seconds = time.perf_counter() - started

    known = np.zeros(log.n_users, dtype=bool)
    known[log.users[:pretrain]] = True
    seen = set((log.users[:pretrain] * log.n_items + log.items[:pretrain]).tolist())
    exclusions = Exclusions(log.n_users, enabled=exclude_purchased)
    exclusions.add(log.take(slice(0, pretrain)))
    positions = np.full(len(log), -1, dtype=np.int64)
    lists = np.full((len(log), 10), -1, dtype=np.int64)
    new_item = np.zeros(len(log), dtype=bool)

    bounds = list(range(pretrain, len(log), retrain_every)) + [len(log)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if a > pretrain and model.retrains:
            began = time.perf_counter()
            model.fit(log.take(slice(0, a)))
            fit_seconds += time.perf_counter() - began
        for wave in waves(log.users[a:b]) if model.user_local else ([i] for i in range(b - a)):
            index = a + np.asarray(wave, dtype=np.int64)
            users = log.users[index]
            scored = index[known[users]]
            if len(scored):
                top = model.recommend(log.users[scored], depth, exclusions.of(log.users[scored]))
                positions[scored] = hit_positions(top, log.items[scored])
                lists[scored, : min(10, top.shape[1])] = top[:, :10]
            events = log.take(index)
            model.observe(events)
            exclusions.add(events)
            known[users] = True
            keys = (users * log.n_items + log.items[index]).tolist()
            new_item[index] = [key not in seen for key in keys]
            seen.update(keys)
        if progress is not None:
            progress(b - pretrain, len(log) - pretrain)

    scored = np.flatnonzero(positions >= 0)
    return Outcome(
        name=model.name, served=model.served, protocol="prequential",
        metrics=summarise(positions[scored], ks), cases=len(scored),
        users=int(len(np.unique(log.users[scored]))), seconds=time.perf_counter() - started,
        fit_seconds=fit_seconds, positions=positions[scored], event_index=scored, new_item=new_item[scored],
        details={**model.describe(), "pretrain_events": pretrain, "retrain_every": retrain_every,
                 "exclude_purchased": exclude_purchased},
        beyond=beyond_accuracy(lists[scored], log.users, log.items, log.n_users, log.n_items),
    )


def _without_ids(log: EventLog) -> EventLog:
    return replace(log, event_ids=None)


def waves(users: np.ndarray) -> list[np.ndarray]:
    """Positions grouped by their rank among the same user's positions (in order).

    >>> [w.tolist() for w in waves(np.array([7, 7, 3, 7, 3]))]
    [[0, 2], [1, 4], [3]]
    """
    rank = rank_within_groups(users)
    by_rank = np.argsort(rank, kind="stable")
    cuts = np.flatnonzero(np.diff(rank[by_rank])) + 1
    return np.split(by_rank, cuts) if len(users) else []
