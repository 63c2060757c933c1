"""One micro-batch of raw messages in, new user states, recommendations and rejects out.

This is everything the worker *decides*, with no Kafka and no Faust in it: the engines only
read states, call :func:`prepare_batch` / :func:`finish_batch` (or :func:`process_batch`),
and write what they return. Several events of one user in a batch are applied in order and
produce one recommendation, triggered by that user's last event in the batch. An erasure
request (:class:`streamrec.contract.ErasureRequest`, ``streamrec forget``) among the events
forgets the user at that point: their earlier events are dropped, their stored state is not
read, and the user's events after it start a fresh profile; a user with none after it is in
:attr:`BatchResult.erased` (the engines delete the state and write the changelog tombstone). The item side
(catalog rules, new items, trending) is a :class:`streamrec.core.items.LiveItems`; an event on an
item the model has never seen is accepted and makes the item a new one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import faiss
import numpy as np

from streamrec.contract import (
    EVENT_TYPE_CODES,
    IMPRESSION,
    PURCHASE,
    Event,
    InvalidEvent,
    Recommendation,
    ScoredItem,
    decode_erasure,
    decode_event,
    decode_events,
    encode_dead_letter,
    list_id_for,
)
from streamrec.core.diversity import POOL, mmr
from streamrec.core.experiments import Experiment, assign
from streamrec.core.factors import factor_batch, resolve_repeats, resolve_weight
from streamrec.core.interest import InterestParams, fold_events, update_batch
from streamrec.core.items import ArtifactLike, ItemsModel, LiveItems, SearchView, largest_norm
from streamrec.core.neighbours import neighbour_batch
from streamrec.core.repeat import REPEAT_EVENTS, recent_matrix, repeat_batch
from streamrec.core.search import is_euclidean
from streamrec.core.state import (
    EMPTY_HISTORY,
    History,
    RecentEvent,
    UserState,
    checked_state,
)
from streamrec.core.taste import fold_taste, update_taste
from streamrec.core.taste import query as taste_query

#: How many of a user's newest events name the categories their backfill comes from.
RECENT_CATEGORY_EVENTS = 10


def live_items(items: LiveItems | ArtifactLike) -> LiveItems:
    """``items`` itself, or the default live item side of a bare model (kept on the model, so
    that calls with the same model share it)."""
    if isinstance(items, LiveItems):
        return items
    live = getattr(items, "_live_items", None)
    if live is None:
        live = items._live_items = LiveItems(ItemsModel.from_artifact(items))  # type: ignore[attr-defined]
    return live


class Message(NamedTuple):
    """A raw message as the agent hands it over: bytes plus where it came from."""

    key: bytes | None
    value: bytes | None
    partition: int = -1
    offset: int = -1


@dataclass(frozen=True)
class Rejected:
    """A message that broke the contract: its position in the batch and why."""

    position: int
    reason: str
    detail: str


@dataclass
class BatchResult:
    #: New state per user, in first-seen order, with the position of the user's last event.
    states: dict[str, tuple[UserState, int]] = field(default_factory=dict)
    recommendations: list[Recommendation] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    #: Positions of events already applied before (re-sent or replayed), skipped.
    duplicates: list[int] = field(default_factory=list)
    #: Applied events per event type (indexed by ``EVENT_TYPE_CODES``); None before any were applied.
    event_types: np.ndarray | None = None
    #: Users forgotten by an erasure request in the batch, with no event after it: their state
    #: is deleted. Value: the position of the (last) request.
    erased: dict[str, int] = field(default_factory=dict)


def dead_letter(rejected: Rejected, message: Message, topic: str) -> bytes:
    """The dead-letter record of a rejected message: its original bytes, the reason and where
    it came from (``topic`` and the message's partition and offset)."""
    return encode_dead_letter(message.value, rejected.reason, rejected.detail, topic=topic,
                              partition=message.partition, offset=message.offset)


def decode_batch(
    messages: Sequence[Message], *, now: float | None = None, erasures: list[tuple[int, str]] | None = None
) -> tuple[list[tuple[int, Event]], list[Rejected]]:
    """Decode and validate ``(key, value)`` messages against the contract (any item id is
    accepted: one the model does not know becomes a new item). Erasure requests are appended to
    ``erasures`` as ``(position, user_id)`` when it is given, and rejected (``erasure_request``)
    when it is not. Impressions are valid but left out: they record what a page showed, for
    attribution, and change no user's vector."""
    accepted: list[tuple[int, Event]] = []
    rejected: list[Rejected] = []
    now = time.time() if now is None else now
    events = decode_events([message.value for message in messages], now=now)
    if events is not None:  # every value a well-formed event (the usual batch): decoded at once
        for position, event in enumerate(events):
            key = messages[position].key
            if key is None or key != event.user_id.encode():
                rejected.append(Rejected(position, "key_mismatch",
                                         f"the message key must be the user_id {event.user_id!r}, got {key!r}"))
            elif event.type != IMPRESSION:
                accepted.append((position, event))
        return accepted, rejected
    for position, (key, value, _, _) in enumerate(messages):
        try:
            event = decode_event(value, now=now)
        except InvalidEvent as exc:
            try:
                erasure = decode_erasure(value)
            except InvalidEvent as bad:
                rejected.append(Rejected(position, bad.reason, f"erasure request: {bad.detail}"))
                continue
            if erasure is None:
                rejected.append(Rejected(position, exc.reason, exc.detail))
            elif key is None or key != erasure.user_id.encode():
                rejected.append(Rejected(position, "key_mismatch",
                                         f"the message key must be the user_id {erasure.user_id!r}, got {key!r}"))
            elif erasures is None:
                rejected.append(Rejected(position, "erasure_request", "an erasure request where only events are read"))
            else:
                erasures.append((position, erasure.user_id))
            continue
        if key is None or key != event.user_id.encode():
            rejected.append(
                Rejected(position, "key_mismatch", f"the message key must be the user_id {event.user_id!r}, got {key!r}")
            )
        elif event.type != IMPRESSION:
            accepted.append((position, event))
    return accepted, rejected


def rebuild_state(state: UserState, items: LiveItems | ArtifactLike, params: InterestParams) -> UserState:
    """Re-derive a user's vector in a new model's space from their recent events."""
    items = live_items(items)
    known = [(items.row(event.item_id), event.type, event.ts) for event in state.recent]
    vector, last_ts = fold_events(known, items.context, params)
    taste = fold_taste(known, items.context, params) if params.taste_decay > 0 else None
    return replace(state, vector=vector, last_ts=last_ts if known else state.last_ts, model_version=items.version,
                   taste=taste)


def is_duplicate(state: UserState | None, seen_ids: set[str], event: Event, message: Message) -> bool:
    """Was this event applied before? Either the same offset was replayed (after a crash or
    a rebalance: the state already reflects it) or the same ``event_id`` was re-sent (it is
    among the state's recent events, or among ``seen_ids``, the batch's earlier events)."""
    if state is not None and message.partition == state.partition and 0 <= message.offset <= state.offset:
        return True
    return event.event_id in seen_ids or (state is not None and state.recent.has_event(event.event_id))


@dataclass
class PreparedBatch:
    """A batch decided up to its search: the new states, and the users' query vectors,
    exclusions and triggering events. :func:`finish_batch` turns it into the result once
    the search is done (the batch engine searches in a thread, overlapping the next batch)."""

    result: BatchResult
    users: list[str]
    vectors: np.ndarray
    exclusions: list[set[int]]
    triggers: list[Event]
    items: LiveItems
    k: int
    #: Each user's newest events (up to REPEAT_EVENTS), newest last: the repeat step's recent
    #: items; the last RECENT_CATEGORY_EVENTS' categories lead the backfill.
    recent: list[Sequence[RecentEvent]] = field(default_factory=list)
    view: SearchView | None = None
    #: The running experiment (None: none); every list is stamped with the user's variant.
    experiment: Experiment | None = None
    #: The repeat step's ``InterestParams.repeat_weight`` (0: off).
    repeat_weight: float = 0.0
    #: The diversity step's ``InterestParams.diversity`` (0: off; else POOL * k candidates are searched).
    diversity: float = 0.0
    #: The neighbour step's ``InterestParams.knn_weight``, ``knn_decay`` and ``knn_events`` (weight 0: off).
    knn_weight: float = 0.0
    knn_decay: float = 0.7
    knn_events: int = 5
    #: The popular items' ``InterestParams.pop_weight`` and ``pop_items`` (weight 0: off).
    pop_weight: float = 0.0
    pop_items: int = 20
    #: The factor step's ``InterestParams.factor_weight`` and ``factor_depth`` (weight 0: off;
    #: "auto": the version's own, :func:`factor_weight_of`).
    factor_weight: float | str = 0.0
    factor_depth: int = 50
    #: ``InterestParams.factor_repeats`` ("auto": the version's own).
    factor_repeats: bool | str = False

    @property
    def fetch(self) -> int:
        """Candidates the search returns per user (:func:`search_depth`)."""
        return search_depth(self.k, self.diversity, neighbours_on(self), self.factor_depth if factors_on(self) else 0)

    def search(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows and scores of every user's top k candidates (FAISS releases the GIL while it
        runs; the item side's snapshot was taken when the batch was prepared)."""
        view = self.view or self.items.view()
        return view.search(self.vectors, self.fetch, self.exclusions)


#: The search's extra candidates when the neighbour step runs: the lowest of their scores bounds
#: what an unlisted item scores (:func:`search_bound`), and most neighbours then need no inner
#: product of their own. The deeper search changes lists only where totals tie exactly: an extra
#: candidate without a bonus never scores above the k-th, and one with a bonus is scored by the
#: search instead of its own inner product (the same float32 product up to rounding).
KNN_MARGIN = 10


def search_depth(k: int, diversity: float, neighbours: bool, listed: int = 0) -> int:
    """Candidates the search returns per user: ``POOL * k`` for the diversity step, ``k +
    KNN_MARGIN`` for the neighbour step, else ``k``; with the factor step (``listed``: its
    depth) the served list is at least ``listed`` long, so ``k`` reads ``max(k, listed)``."""
    if diversity > 0:
        return max(k * POOL, listed)
    return max(k, listed) + (KNN_MARGIN if neighbours else 0)


def served_width(shown: int, listed: int) -> int:
    """How many candidates the repeat and neighbour steps keep: the ``shown`` width, or the factor
    step's depth (``listed``, 0: off) when that is longer (the fusion cuts to ``shown``)."""
    return max(shown, listed)


def shown_width(k: int, diversity: float, fetched: int) -> int:
    """How many of the ``fetched`` candidates per user the steps keep: all of them when the
    diversity step chooses the ``k`` shown from them, else the first ``k``."""
    return fetched if diversity > 0 else min(fetched, k)


def finishing_steps(params: InterestParams | None) -> dict[str, Any]:
    """:class:`PreparedBatch`'s settings of the steps after the search (repeat, diversity,
    neighbours, popular items) from ``params``; None turns every one of them off."""
    if params is None:
        return {}
    return {"repeat_weight": params.repeat_weight, "diversity": params.diversity, "knn_weight": params.knn_weight,
            "knn_decay": params.knn_decay, "knn_events": params.knn_events, "pop_weight": params.pop_weight,
            "pop_items": params.pop_items, "factor_weight": params.factor_weight, "factor_depth": params.factor_depth,
            "factor_repeats": params.factor_repeats}


def recommend_one(items: LiveItems, user_id: str, query: np.ndarray, trigger: Any, recent: Sequence[RecentEvent], *,
                  k: int, excluded: Collection[int], search_excluded: Collection[int] | None = None,
                  view: SearchView | None = None, params: InterestParams | None = None,
                  experiment: Experiment | None = None) -> Recommendation:
    """One user's list, searched and finished as :func:`finish_batch` finishes the worker's
    (with ``params``' steps after the search, none without; the catalog's rules), for the paths
    that answer one user at a time (``streamrec serve``, the bench's naive agent). ``trigger``
    has the ``event_id`` and ``ts`` the list names; finishing leaves out ``excluded``, the search
    ``search_excluded`` (default: the same rows)."""
    queries = np.ascontiguousarray(query, np.float32).reshape(1, -1)
    prepared = PreparedBatch(BatchResult(), [user_id], queries, [excluded], [trigger], items, k, [recent],
                             view or items.view(), experiment=experiment, **finishing_steps(params))
    rows, scores = prepared.view.search(queries, prepared.fetch,
                                        [excluded if search_excluded is None else search_excluded])
    (recommendation,) = finish_batch(prepared, rows, scores).recommendations
    return recommendation


def process_batch(
    messages: Sequence[Message],
    load_state: Callable[[str, int], UserState | None],
    model: LiveItems | ArtifactLike,
    params: InterestParams,
    *,
    now: float | None = None,
    experiment: Experiment | None = None,
) -> BatchResult:
    """Decode, skip duplicates, update every touched user's vector, search once, build outputs.

    ``load_state(user_id, position)`` returns the stored state (``position`` is the index
    of one of the user's messages, for stores that need the message's partition).
    A user whose events in the batch were all duplicates gets their last recommendation
    again only when the newest duplicate is the last event their state reflects (its list
    may have been lost in a crash); the list is then the same as before.
    """
    prepared = prepare_batch(messages, load_state, model, params, now=now, experiment=experiment)
    return finish_batch(prepared, *prepared.search())


def prepare_batch(
    messages: Sequence[Message],
    load_state: Callable[[str, int], UserState | None],
    model: LiveItems | ArtifactLike,
    params: InterestParams,
    *,
    now: float | None = None,
    experiment: Experiment | None = None,
) -> PreparedBatch:
    """Everything :func:`process_batch` does before its search, in four steps: decode
    (:func:`decode_batch`), keep what was not applied before (:func:`select_fresh`), apply the
    events to the users' vectors (:func:`apply_events`), and build the new states with what the
    search and the lists need (:func:`new_states`)."""
    items = live_items(model)
    erasures: list[tuple[int, str]] = []
    accepted, rejected = decode_batch(messages, now=now, erasures=erasures)
    result = BatchResult(rejected=rejected)
    if erasures:
        accepted, load_state = forget_users(erasures, accepted, load_state)
    selection = select_fresh(messages, group_by_user(accepted), load_state, items, params, result.duplicates)
    applied = apply_events(selection, items, params, result)
    prepared = new_states(messages, selection, applied, items, params, result)
    for position, user_id in erasures:
        if user_id not in result.states:
            result.erased[user_id] = position
    if experiment is not None:
        apply_experiment(prepared, experiment)
    return prepared


def forget_users(
    erasures: Sequence[tuple[int, str]],
    accepted: list[tuple[int, Event]],
    load_state: Callable[[str, int], UserState | None],
) -> tuple[list[tuple[int, Event]], Callable[[str, int], UserState | None]]:
    """Apply the batch's erasure requests: drop each erased user's events before their (last)
    request and read no stored state for them, so that their events after it start afresh.

    >>> events = [(0, Event("e1", "u1", "i", "view", 1.0)), (2, Event("e2", "u1", "i", "view", 2.0)),
    ...           (3, Event("e3", "u2", "i", "view", 3.0))]
    >>> kept, load = forget_users([(1, "u1")], events, lambda user_id, position: "stored")
    >>> [(position, event.event_id) for position, event in kept], load("u1", 2), load("u2", 3)
    ([(2, 'e2'), (3, 'e3')], None, 'stored')
    """
    last = {}
    for position, user_id in erasures:
        last[user_id] = max(position, last.get(user_id, -1))
    kept = [(position, event) for position, event in accepted if position > last.get(event.user_id, -1)]

    def load(user_id: str, position: int) -> UserState | None:
        return None if user_id in last else load_state(user_id, position)

    return kept, load


def apply_experiment(prepared: PreparedBatch, experiment: Experiment) -> None:
    """Stamp the experiment on the batch; users of a ``params`` variant get their query vector
    re-derived from their recent events with the variant's parameters (their stored state keeps
    the served parameters')."""
    prepared.experiment = experiment
    items = prepared.items
    for slot, user_id in enumerate(prepared.users):
        variant = assign(experiment, user_id)
        if variant.kind == "params" and variant.params is not None:
            stored = prepared.result.states.get(user_id)
            history = stored[0].recent if stored is not None else prepared.recent[slot]
            prepared.vectors[slot] = variant_query(items, history, variant.params)


def variant_query(items: LiveItems, history: Sequence[RecentEvent], params: InterestParams) -> np.ndarray:
    """A ``params`` variant's query vector: the user's recent events folded with its parameters."""
    known = [(items.row(e.item_id), e.type, e.ts) for e in history if e.item_id in items.row_of]
    vector, _ = fold_events(known, items.context, params)
    return vector


def group_by_user(accepted: Sequence[tuple[int, Event]]) -> dict[str, list[tuple[int, Event]]]:
    """Accepted ``(position, event)`` pairs per user, in batch order, users in first-seen order."""
    per_user: dict[str, list[tuple[int, Event]]] = {}
    for position, event in accepted:
        per_user.setdefault(event.user_id, []).append((position, event))
    return per_user


@dataclass
class Selection:
    """The batch's users and what of their events is new."""

    #: Each user's stored state, in the current model's space (None for a new user).
    old_states: dict[str, UserState | None]
    #: Events to apply, per user, in batch order.
    fresh: dict[str, list[tuple[int, Event]]]
    #: Users whose only events in the batch repeat the state's own last event: their list is sent again.
    resend: dict[str, tuple[int, Event]]

    @property
    def users(self) -> list[str]:
        """Users that get a list, fresh ones first."""
        return list(self.fresh) + list(self.resend)


def select_fresh(
    messages: Sequence[Message],
    per_user: dict[str, list[tuple[int, Event]]],
    load_state: Callable[[str, int], UserState | None],
    items: LiveItems,
    params: InterestParams,
    duplicates: list[int],
) -> Selection:
    """The de-duplication and offset guarantee, whole: every event is applied at most once.

    A user's stored state records the source partition and offset of the newest event it
    reflects and the ids of its recent events; an event at or below that offset (replayed after
    a crash or a rebalance) or with a recent id (re-sent) is a duplicate: skipped, its position
    added to ``duplicates``. A user all of whose events in the batch were duplicates gets their
    last list again only when the newest duplicate is the state's own last event (its list may
    have been lost in a crash). States of an older model version are rebuilt in the current
    one's space first (:func:`rebuild_state`).
    """
    old_states: dict[str, UserState | None] = {}
    fresh: dict[str, list[tuple[int, Event]]] = {}
    resend: dict[str, tuple[int, Event]] = {}
    for user_id, events in per_user.items():
        state = load_state(user_id, events[0][0])
        if state is not None and state.model_version != items.version:
            state = rebuild_state(state, items, params)
        old_states[user_id] = state
        seen: set[str] = set()
        kept = []
        for position, event in events:
            if is_duplicate(state, seen, event, messages[position]):
                duplicates.append(position)
                if state is not None and state.recent.last_event_id == event.event_id:
                    resend[user_id] = (position, event)
            else:
                seen.add(event.event_id)
                kept.append((position, event))
        if kept:
            fresh[user_id] = kept
            resend.pop(user_id, None)
        elif user_id in resend and resend[user_id][0] != events[-1][0]:
            del resend[user_id]  # a later duplicate than the state's last event came: nothing to re-send
    return Selection(old_states, fresh, resend)


@dataclass
class Applied:
    """The users' vectors after the batch's fresh events, and those events as arrays."""

    vectors: np.ndarray  # (users, d), rows in Selection.users order
    last_ts: np.ndarray
    rows: np.ndarray  # per fresh event (users' order, then batch order): the item's row
    type_codes: np.ndarray
    ts: np.ndarray
    #: Per event on a new item: its position among the fresh events, the user's vector just
    #: before it and whether the user had an event before.
    on_new: np.ndarray
    before: np.ndarray
    had_before: np.ndarray
    #: The users' taste vectors (:mod:`streamrec.core.taste`); None when taste is off.
    taste: np.ndarray | None = None


def apply_events(selection: Selection, items: LiveItems, params: InterestParams, result: BatchResult) -> Applied:
    """Apply every fresh event to its user's vector (:func:`streamrec.core.interest.update_batch`).
    A user whose vector the update makes non-finite has all their events of the batch rejected
    (``non_finite_vector``) and keeps their stored state: a broken vector is never stored or
    searched."""
    users = selection.users
    slot_of = {user_id: slot for slot, user_id in enumerate(users)}
    vectors = np.zeros((len(users), items.dim), dtype=np.float32)
    last_ts = np.full(len(users), np.nan)
    for slot, user_id in enumerate(users):
        state = selection.old_states[user_id]
        if state is not None:
            vectors[slot] = state.vector
            last_ts[slot] = np.nan if state.last_ts is None else state.last_ts
    events = [event for user_id in selection.fresh for _, event in selection.fresh[user_id]]
    rows = items.rows_for(events)
    type_codes = np.fromiter((EVENT_TYPE_CODES[e.type] for e in events), dtype=np.int64, count=len(events))
    ts = np.fromiter((e.ts for e in events), dtype=np.float64, count=len(events))
    on_new = np.flatnonzero(rows >= items.n_model)
    result.event_types = np.bincount(type_codes, minlength=len(EVENT_TYPE_CODES))
    taste = taste_vectors(selection, users, items.dim, params)
    owners = np.fromiter((slot_of[e.user_id] for e in events), dtype=np.int64, count=len(events))
    with np.errstate(over="ignore", invalid="ignore"):  # checked just below
        if taste is not None:
            update_taste(taste, last_ts, owners, rows, type_codes, ts, items.context, params)
        captured = update_batch(vectors, last_ts, owners, rows, type_codes, ts, items.context, params,
                                capture=on_new if len(on_new) else None)
    before, had_before = captured if captured is not None else (np.zeros((0, items.dim), np.float32), np.zeros(0, bool))
    with np.errstate(invalid="ignore"):  # inf + -inf is NaN: not finite, as it should be
        finite = np.isfinite(vectors.sum(axis=1, dtype=np.float64))  # the test UserState applies
        if taste is not None:
            finite &= np.isfinite(taste.sum(axis=1, dtype=np.float64))
    if not finite.all():
        for slot in np.flatnonzero(~finite):
            user_id = users[slot]
            for position, _ in selection.fresh.get(user_id, []):
                result.rejected.append(Rejected(position, "non_finite_vector", f"the update made {user_id!r}'s vector non-finite"))
            selection.resend.pop(user_id, None)
        result.rejected.sort(key=lambda r: r.position)
        # The user's events stay in the arrays (they still count as trending and new items'
        # positions stay aligned); only their state and list are dropped, in new_states.
    return Applied(vectors, last_ts, rows, type_codes, ts, on_new, before, had_before, taste)


def taste_vectors(selection: Selection, users: list[str], dim: int, params: InterestParams) -> np.ndarray | None:
    """The users' stored taste vectors (zeros for none), or None when taste is off."""
    if params.taste_decay <= 0:
        return None
    taste = np.zeros((len(users), dim), dtype=np.float32)
    for slot, user_id in enumerate(users):
        state = selection.old_states[user_id]
        if state is not None and state.taste is not None and len(state.taste) == dim:
            taste[slot] = state.taste
    return taste


def new_states(
    messages: Sequence[Message],
    selection: Selection,
    applied: Applied,
    items: LiveItems,
    params: InterestParams,
    result: BatchResult,
) -> PreparedBatch:
    """Each user's new state (recent events, purchases, source offset), exclusions, triggering
    event and recent events; new items learn from the events on them; trending counts the events.

    The events are handled as the arrays :func:`apply_events` made of them, user by user (a
    state's history grows by whole columns, :meth:`streamrec.core.state.History.extended`);
    only the events on a new item, or just after one, are visited one by one."""
    users = selection.users
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(applied.vectors.sum(axis=1, dtype=np.float64))
        if applied.taste is not None:
            finite &= np.isfinite(applied.taste.sum(axis=1, dtype=np.float64))
    broken = {users[slot] for slot in np.flatnonzero(~finite)}
    learn_new_items(selection, applied, items, broken)
    exclusions: list[set[int]] = []
    triggers: list[Event] = []
    recent_events: list[History] = []
    kept_slots: list[int] = []
    history_size, max_exclusions, version = params.history_size, params.max_exclusions, items.version
    type_bytes = applied.type_codes.astype(np.uint8).tobytes()
    ts_bytes = applied.ts.astype("<f8").tobytes()
    vectors = applied.vectors.copy()  # the states' vectors are rows of it
    taste = None if applied.taste is None else applied.taste.copy()
    old_states, fresh = selection.old_states, selection.fresh
    j = 0  # the user's first event among the fresh events (users' order, then batch order)
    for slot, user_id in enumerate(users):
        old = old_states[user_id]
        recent = old.recent if old is not None else EMPTY_HISTORY
        purchased = old.purchased if old is not None else ()
        events = fresh.get(user_id)
        if events is not None:
            n = len(events)
            codes = type_bytes[j : j + n]
            recent = recent.extended([e.event_id for _, e in events], [e.item_id for _, e in events], codes,
                                     ts_bytes[8 * j : 8 * (j + n)], limit=history_size)
            j += n
            if _PURCHASE in codes:
                bought = list(purchased)
                for _, event in events:
                    if event.type == "purchase":
                        if event.item_id in bought:
                            bought.remove(event.item_id)
                        bought.append(event.item_id)
                purchased = tuple(bought[-max_exclusions:])
            if user_id in broken:
                continue
            position, trigger = events[-1]
            source = messages[position]
            last_ts = applied.last_ts[slot]
            result.states[user_id] = (
                checked_state(vectors[slot], None if math.isnan(last_ts) else float(last_ts),
                              (old.n_events if old is not None else 0) + n, version, recent, purchased,
                              source.partition, source.offset,  # the vectors' finiteness is checked above
                              None if taste is None else taste[slot]),
                position,
            )
        else:
            position, trigger = selection.resend[user_id]
        kept_slots.append(slot)
        triggers.append(trigger)
        exclusions.append(items.exclusions(purchased) if purchased else set())
        recent_events.append(recent)
    items.observe(applied.rows, applied.type_codes, applied.ts)
    kept_users = [users[slot] for slot in kept_slots]
    queries = taste_query(applied.vectors[kept_slots], None if applied.taste is None else applied.taste[kept_slots],
                          items.model.taste)
    return PreparedBatch(result, kept_users, queries, exclusions, triggers, items, params.k,
                         recent_events, items.view(), **finishing_steps(params))


#: The purchase type's code, as a byte of a history's type column.
_PURCHASE = bytes([PURCHASE])


def learn_new_items(selection: Selection, applied: Applied, items: LiveItems, broken: set[str]) -> None:
    """New items learn from the batch's events, in order: an event on a new item folds the
    user's vector just before it into the item (:meth:`LiveItems.fold_in`, with the item the
    user touched before as its neighbour), and the event right after one on a new item links
    the two (:meth:`LiveItems.link`). Users whose vector broke teach nothing."""
    new_from, rows = items.n_model, applied.rows
    if items.n_rows <= new_from or not len(rows):
        return  # no new item anywhere: nothing to learn
    counts = np.fromiter((len(events) for events in selection.fresh.values()), np.int64, len(selection.fresh))
    firsts = np.cumsum(counts) - counts
    previous = np.empty(len(rows), np.int64)
    previous[1:] = rows[:-1]
    row_of = items.row_of
    for first, user_id in zip(firsts.tolist(), selection.fresh):
        old = selection.old_states[user_id]
        last_item = old.recent.last_item_id if old is not None else None
        previous[first] = row_of.get(last_item, -1) if last_item is not None else -1
    owner = np.repeat(np.arange(len(counts)), counts)
    fresh_users = list(selection.fresh)
    captured_at = {int(e): c for c, e in enumerate(applied.on_new)}
    for j in np.flatnonzero((rows >= new_from) | (previous >= new_from)).tolist():
        if fresh_users[owner[j]] in broken:
            continue
        row, before = int(rows[j]), int(previous[j])
        if row >= new_from:
            c = captured_at[j]
            items.fold_in(row, applied.before[c] if applied.had_before[c] else None, before if before >= 0 else None)
        else:
            items.link(before, row)


def finish_batch(prepared: PreparedBatch, rows: np.ndarray, scores: np.ndarray) -> BatchResult:
    """The batch's result, with one recommendation per user from the search's rows and scores,
    after the item side's rules (:meth:`streamrec.core.items.LiveItems.finish_list`)."""
    result, k, items = prepared.result, prepared.k, prepared.items
    produced_at = time.time()
    width = rows.shape[1] if len(rows) else 0
    knn, fused = neighbours_on(prepared), factors_on(prepared)
    recent = recent_rows_of(prepared, max(REPEAT_EVENTS if repeat_on(prepared) or fused else 0,
                                          prepared.knn_events if knn else 0))
    bound = search_bound(prepared, rows, scores) if knn else None
    shown = shown_width(k, prepared.diversity, width)
    rows, scores = repeat_step(prepared, rows, scores, keep_all=knn, recent_rows=recent)
    rows, scores = neighbour_step(prepared, rows, scores, served_width(shown, prepared.factor_depth if fused else 0),
                                  recent_rows=recent, bound=bound)
    rows, scores = factor_step(prepared, rows, scores, shown, recent_rows=recent)
    rows, scores = diversity_step(prepared, rows, scores)
    item_ids = items.item_ids
    # Lists the rules must finish: short ones, and those holding an item blocked since the
    # search (one vectorised check for the whole batch).
    short = (rows < 0).any(axis=1) if len(rows) else np.zeros(0, bool)
    stale = items.blocked_rows(np.maximum(rows, 0)).any(axis=1) if len(rows) else short
    experiment = prepared.experiment
    all_rows, all_scores, finished = rows.tolist(), scores.tolist(), (short | stale).tolist()
    for slot, user_id in enumerate(prepared.users):
        trigger = prepared.triggers[slot]
        found = all_rows[slot]
        variant = assign(experiment, user_id) if experiment is not None else None
        if variant is not None and variant.kind == "trending":
            chosen = items.finish_list([], [], k, prepared.exclusions[slot], [])
        elif not finished[slot]:
            chosen = tuple(map(ScoredItem, map(item_ids.__getitem__, found), all_scores[slot]))
        else:
            n_found = k - found.count(-1)  # -1 pads the end of a short list
            chosen = items.finish_list(found[:n_found], scores[slot, :n_found].tolist(), k,
                                       prepared.exclusions[slot],
                                       recent_item_ids(prepared.recent[slot])[-RECENT_CATEGORY_EVENTS:])
        result.recommendations.append(
            Recommendation(user_id, chosen, items.version, trigger.event_id, trigger.ts, produced_at,
                           list_id_for(user_id, trigger.event_id, items.version),
                           None if experiment is None else experiment.name, None if variant is None else variant.name)
        )
    return result


def recent_item_ids(recent: Sequence[RecentEvent]) -> list[str]:
    """The item ids of a user's recent events, oldest first (a :class:`History`'s column)."""
    return recent.item_ids() if isinstance(recent, History) else [event.item_id for event in recent]


def recent_rows_of(prepared: PreparedBatch, last: int) -> list[list[int]]:
    """Each user's last ``last`` recent items as the item side's rows (-1: unknown), oldest first."""
    if last <= 0:
        return [[] for _ in prepared.recent]
    row_of = prepared.items.row_of
    return [[row_of.get(item_id, -1) for item_id in recent_item_ids(history)[-last:]] for history in prepared.recent]


def repeat_on(prepared: PreparedBatch) -> bool:
    """Whether the repeat step runs on this batch (its weight > 0, the version has repeat propensities)."""
    return prepared.repeat_weight > 0 and prepared.items.has_repeat


def repeat_step(prepared: PreparedBatch, rows: np.ndarray, scores: np.ndarray, *,
                recent_rows: list[list[int]], keep_all: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Every user's search result re-ranked with their recent items (:mod:`streamrec.core.repeat`);
    excluded and blocked items are never added. Unchanged when the step is off or the model
    version has no repeat propensities. ``recent_rows``: :func:`recent_rows_of` at least
    ``REPEAT_EVENTS``. ``keep_all``: no candidate is cut (the neighbour step comes next and cuts)."""
    items = prepared.items
    if not repeat_on(prepared) or not len(rows):
        return rows, scores
    view = prepared.view or items.view()
    by_age = items.model.repeat_by_age
    width = min(REPEAT_EVENTS, len(by_age))
    recent = recent_matrix([user_rows[-width:] for user_rows in recent_rows], by_age)
    # Excluded and blocked items are never added: they leave the recent rows.
    known = recent >= 0
    recent[known & items.blocked_rows(np.maximum(recent, 0))] = -1
    for slot, excluded in enumerate(prepared.exclusions):
        if isinstance(excluded, (set, frozenset)) and not excluded:
            continue  # the usual user: nothing excluded (serve's filters exclude by membership)
        recent[slot, [row >= 0 and row in excluded for row in recent[slot].tolist()]] = -1
    return repeat_batch(rows, scores, rows.shape[1] + (width if keep_all else 0), prepared.vectors, recent,
                        lambda r: items.targets(r, view), items.repeat_lift, prepared.repeat_weight, by_age)


def neighbours_on(prepared: PreparedBatch) -> bool:
    """Whether the neighbour step runs on this batch (its weight > 0 and the version has
    neighbours, or popular items with a weight > 0)."""
    items = prepared.items
    return ((prepared.knn_weight > 0 and items.has_neighbours)
            or (prepared.pop_weight > 0 and prepared.pop_items > 0 and items.model.target is not None
                and items.model.popularity is not None))


def search_bound(prepared: PreparedBatch, rows: np.ndarray, scores: np.ndarray) -> np.ndarray | None:
    """Per user, a score (as an inner product of the query and a target vector is computed in
    float32) that no item outside the search's list exceeds, unless it was excluded or blocked;
    +inf where the list is short; None unless the search is exact (a CPU flat inner-product
    index). The list's lowest score bounds the exact inner products of the rest; two float32
    inner products of length d differ from the exact one by at most ``d * 2**-24 / (1 - d *
    2**-24)`` times ``|query| * |target|`` each (the standard bound for any order of summation),
    so the bound adds twice that, doubled again for safety, with the largest target norm."""
    view = prepared.view or prepared.items.view()
    index, model = view.index, prepared.items.model
    if (not len(rows) or model.target is None or not isinstance(index, faiss.IndexFlat)
            or index.metric_type != faiss.METRIC_INNER_PRODUCT or is_euclidean(index)):
        return None
    vectors = np.asarray(prepared.vectors, np.float64)
    largest = max(model.max_target_norm(), largest_norm(view.new_target))
    unit = vectors.shape[1] * 2.0**-24
    margin = 4 * unit / (1 - unit) * np.sqrt(np.einsum("ij,ij->i", vectors, vectors)) * largest
    full = (rows >= 0).all(axis=1)
    return np.where(full, np.min(scores, axis=1).astype(np.float64) + margin, np.inf)


def neighbour_step(prepared: PreparedBatch, rows: np.ndarray, scores: np.ndarray, width: int, *,
                   recent_rows: list[list[int]], bound: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every user's list re-ranked with the neighbours of their last items
    (:mod:`streamrec.core.neighbours`; ``recent_rows``: :func:`recent_rows_of` at least
    ``knn_events``) and cut to ``width``; excluded and blocked items are never added. Unchanged
    (but cut) when the step is off or the model version has no neighbours. ``bound``:
    :func:`search_bound` of the search's list (candidates that cannot be shown are not scored)."""
    items = prepared.items
    if not neighbours_on(prepared) or not len(rows):
        return rows[:, :width], scores[:, :width]
    view = prepared.view or items.view()
    last = prepared.knn_events
    recent = recent_matrix([user_rows[-last:] if last else [] for user_rows in recent_rows], np.ones(last))
    exclusions = prepared.exclusions

    def banned(slots: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        out = items.blocked_rows(candidates)
        span = items.n_rows + 1
        pairs: list[int] = []
        for slot in np.unique(slots).tolist():
            excluded = exclusions[slot]
            if isinstance(excluded, (set, frozenset)):  # the worker's: a set of rows
                pairs += [slot * span + row for row in excluded]
            else:  # serve's filters exclude by membership
                mine = np.flatnonzero(slots == slot)
                out[mine] |= [int(row) in excluded for row in candidates[mine].tolist()]
        if pairs:
            out |= np.isin(slots.astype(np.int64) * span + candidates, np.asarray(pairs, np.int64))
        return out

    model = items.model
    knn = items.has_neighbours
    out_rows, out_scores = neighbour_batch(rows, scores, width, prepared.vectors, recent,
                                           model.neighbours if knn else np.zeros((0, 0), np.int32),
                                           model.neighbour_sims if knn else np.zeros((0, 0), np.float32),
                                           lambda r: items.targets(r, view), weight=prepared.knn_weight if knn else 0.0,
                                           decay=prepared.knn_decay, banned=banned,
                                           popular=model.popular(prepared.pop_items, prepared.pop_weight),
                                           bound=bound)
    # A vector that says nothing (no known item yet) has no list of its own: the catalog's rules
    # fill it with what is trending now (LiveItems.finish_list), not with the training's popular items.
    silent = ~np.asarray(prepared.vectors).any(axis=1)
    if silent.any():
        out_rows[silent], out_scores[silent] = rows[silent, :width], scores[silent, :width]
    return out_rows, out_scores


def factors_on(prepared: PreparedBatch) -> bool:
    """Whether the factor step runs on this batch (its weight > 0, the version has factors)."""
    return prepared.items.model.factors is not None and factor_weight_of(prepared) > 0


def factor_weight_of(prepared: PreparedBatch) -> float:
    """The factor step's weight for this batch: the setting, or the version's own for "auto"."""
    return resolve_weight(prepared.factor_weight, prepared.items.model.factor_weight)


def factor_step(prepared: PreparedBatch, rows: np.ndarray, scores: np.ndarray, width: int, *,
                recent_rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Every user's list fused with their ALS list (:mod:`streamrec.core.factors`; ``recent_rows``:
    :func:`recent_rows_of` at least ``REPEAT_EVENTS``, the state's recent events) and cut to
    ``width``; excluded and blocked items are never added. Only cut when the step is off."""
    if not factors_on(prepared) or not len(rows):
        return rows[:, :width], scores[:, :width]
    items, model = prepared.items, prepared.items.model
    n_model = len(model.factors)
    blocked = np.flatnonzero(items.blocked_rows(np.arange(n_model)))

    def banned(slot: int) -> np.ndarray:
        excluded = prepared.exclusions[slot]
        if isinstance(excluded, (set, frozenset)):  # the worker's: a set of rows
            mine = np.fromiter((row for row in excluded if 0 <= row < n_model), np.int64)
        else:  # serve's filters exclude by membership
            mine = np.flatnonzero([row in excluded for row in range(n_model)])
        return np.concatenate([blocked, mine])

    return factor_batch(rows, scores, width, recent_rows, model.factors, model.factor_solved(),
                        confidence=model.factor_confidence, weight=factor_weight_of(prepared),
                        depth=prepared.factor_depth, banned=banned,
                        repeats=resolve_repeats(prepared.factor_repeats, model.factor_repeats))


def diversity_step(prepared: PreparedBatch, rows: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every user's k items chosen from the candidates by MMR (:mod:`streamrec.core.diversity`);
    the first k candidates when the step is off."""
    items, k = prepared.items, prepared.k
    if prepared.diversity <= 0 or not len(rows) or items.model.target is None:
        return rows[:, :k], scores[:, :k]
    view = prepared.view or items.view()
    out_rows = np.full((len(rows), k), -1, np.int64)
    out_scores = np.full((len(rows), k), -np.inf, dtype=scores.dtype)
    for slot in range(len(rows)):
        out_rows[slot], out_scores[slot] = mmr(rows[slot], scores[slot], k, lambda r: items.targets(r, view),
                                               prepared.diversity)
    return out_rows, out_scores
