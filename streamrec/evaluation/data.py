"""Event logs as integer arrays in stream order, and the leave-one-out split.

An :class:`EventLog` is a dataset read through :mod:`producers.readers` (so the harness sees
exactly the events, ids and timestamps a replay through Kafka publishes), sorted by event
time (stable: ties keep file order), with users and items numbered ``0..n-1``. Every model
and protocol works on these rows; ``user_ids``/``item_ids`` map them back.

>>> log = EventLog.from_arrays(["a", "b", "a"], ["x", "y", "y"], ["view", "view", "purchase"], [1.0, 2.0, 3.0])
>>> log.users.tolist(), log.items.tolist(), log.item_ids
([0, 1, 0], [0, 1, 1], ['x', 'y'])
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from streamrec.contract import EVENT_TYPE_CODES, Event


@dataclass(frozen=True)
class EventLog:
    """Events in stream order as parallel arrays over a fixed user and item numbering."""

    user_ids: list[str]
    item_ids: list[str]
    users: np.ndarray  # int64 rows into user_ids
    items: np.ndarray  # int64 rows into item_ids
    types: np.ndarray  # int8 codes of streamrec.contract.EVENT_TYPES
    ts: np.ndarray  # float64 event time, non-decreasing
    event_ids: tuple[str, ...] | None = None
    #: The catalog's features of the items (:func:`streamrec.core.items.catalog_features`), where
    #: the shop has a catalog: the refinement lets items that share one learn together
    #: (``TrainParams.refine_features``).
    item_features: Mapping[str, tuple[Hashable, ...]] | None = None

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.users)

    @classmethod
    def from_arrays(
        cls,
        user_keys: Sequence[str],
        item_keys: Sequence[str],
        types: Sequence[str],
        ts: Sequence[float],
        event_ids: Sequence[str] | None = None,
        item_features: Mapping[str, tuple[Hashable, ...]] | None = None,
    ) -> EventLog:
        """Number users and items in order of first appearance; sort by time (stable)."""
        ts_array = np.asarray(ts, dtype=np.float64)
        if not len(ts_array):
            raise ValueError("an event log needs at least one event")
        order = np.argsort(ts_array, kind="stable")
        user_ids, users = _number([user_keys[i] for i in order])
        item_ids, items = _number([item_keys[i] for i in order])
        codes = np.array([EVENT_TYPE_CODES[types[i]] for i in order], dtype=np.int8)
        ids = None if event_ids is None else tuple(event_ids[i] for i in order)
        return cls(user_ids, item_ids, users, items, codes, ts_array[order], ids, item_features)

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> EventLog:
        users, items, types, ts, ids = [], [], [], [], []
        for event in events:
            users.append(event.user_id)
            items.append(event.item_id)
            types.append(event.type)
            ts.append(event.ts)
            ids.append(event.event_id)
        return cls.from_arrays(users, items, types, ts, ids)

    def take(self, index: np.ndarray | slice) -> EventLog:
        """The events at ``index`` (kept in the order given), same numbering."""
        ids = None
        if self.event_ids is not None:
            picked = np.arange(len(self))[index]
            ids = tuple(self.event_ids[i] for i in picked)
        return EventLog(self.user_ids, self.item_ids, self.users[index], self.items[index], self.types[index],
                        self.ts[index], ids, self.item_features)

    def events(self) -> Iterable[Event]:
        """Back to contract events (ids must be known)."""
        from streamrec.contract import EVENT_TYPES

        if self.event_ids is None:
            raise ValueError("this log has no event ids")
        for n in range(len(self)):
            yield Event(
                self.event_ids[n],
                self.user_ids[self.users[n]],
                self.item_ids[self.items[n]],
                EVENT_TYPES[self.types[n]],
                float(self.ts[n]),
            )


def _number(keys: list[str]) -> tuple[list[str], np.ndarray]:
    row_of: dict[str, int] = {}
    rows = np.fromiter((row_of.setdefault(k, len(row_of)) for k in keys), dtype=np.int64, count=len(keys))
    return list(row_of), rows


def load_log(path: str | Path, fmt: str, *, limit: int | None = None) -> EventLog:
    """Read a dataset with :func:`producers.readers.read_events` and sort it by event time."""
    from producers.readers import read_events

    return EventLog.from_events(read_events(path, fmt, limit=limit))


def user_sequences(log: EventLog) -> list[np.ndarray]:
    """Per user, the indices of their events in stream order."""
    order = np.argsort(log.users, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(log.users, minlength=log.n_users))]
    return [order[bounds[u] : bounds[u + 1]] for u in range(log.n_users)]


@dataclass(frozen=True)
class LeaveOneOut:
    """The S3-Rec split: per user, last event = test, second-to-last = validation.

    ``train``, ``validation`` are event indices into the log (stream order). Users with
    fewer than three events are not evaluated; all their events are training events.
    """

    train: np.ndarray
    validation: np.ndarray
    users: np.ndarray  # evaluated users
    test_items: np.ndarray  # their held-out item
    histories: list[np.ndarray]  # their items before the test item (masked when ranking)


def leave_one_out(log: EventLog) -> LeaveOneOut:
    """Split ``log`` per user by event order (see :class:`LeaveOneOut`).

    >>> log = EventLog.from_arrays(["u"] * 4, ["a", "b", "c", "d"], ["purchase"] * 4, [0, 1, 2, 3])
    >>> split = leave_one_out(log)
    >>> split.train.tolist(), split.validation.tolist(), split.test_items.tolist(), split.histories[0].tolist()
    ([0, 1], [2], [3], [0, 1, 2])
    """
    train, validation, users, tests, histories = [], [], [], [], []
    for user, index in enumerate(user_sequences(log)):
        if len(index) < 3:
            train.append(index)
            continue
        train.append(index[:-2])
        validation.append(index[-2])
        users.append(user)
        tests.append(log.items[index[-1]])
        histories.append(log.items[index[:-1]])
    return LeaveOneOut(
        train=np.sort(np.concatenate(train)) if train else np.zeros(0, np.int64),
        validation=np.sort(np.array(validation, dtype=np.int64)),
        users=np.array(users, dtype=np.int64),
        test_items=np.array(tests, dtype=np.int64),
        histories=histories,
    )


def sample_users(log: EventLog, n_users: int, *, seed: int = 0) -> EventLog:
    """The events of ``n_users`` users drawn at random (for quick runs and tests)."""
    if n_users >= log.n_users:
        return log
    chosen = np.zeros(log.n_users, dtype=bool)
    chosen[np.random.default_rng(seed).choice(log.n_users, n_users, replace=False)] = True
    index = np.flatnonzero(chosen[log.users])
    sub = log.take(index)
    return EventLog.from_arrays(
        [sub.user_ids[u] for u in sub.users],
        [sub.item_ids[i] for i in sub.items],
        [_type_name(t) for t in sub.types],
        sub.ts,
        sub.event_ids,
        log.item_features,
    )


def shuffle_within_users(log: EventLog, *, seed: int = 0) -> EventLog:
    """The same log with each user's events (item, type and id) in a random order over that
    user's own times: every user keeps what they did and when they were active, and the order
    that sequential models read is gone. A proxy for a shop where taste, not the last item,
    says what comes next (``streamrec evaluate --shuffle-within-users``)."""
    by_user = np.argsort(log.users, kind="stable")  # each user's positions, in time order
    shuffled = np.lexsort((np.random.default_rng(seed).random(len(log)), log.users))  # each user's, at random
    items, types = log.items.copy(), log.types.copy()
    items[by_user], types[by_user] = log.items[shuffled], log.types[shuffled]
    ids = None
    if log.event_ids is not None:
        moved = np.empty(len(log), np.int64)
        moved[by_user] = shuffled
        ids = tuple(log.event_ids[i] for i in moved.tolist())
    return replace(log, items=items, types=types, event_ids=ids)


def _type_name(code: int) -> str:
    from streamrec.contract import EVENT_TYPES

    return EVENT_TYPES[int(code)]
