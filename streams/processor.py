"""One micro-batch of raw messages in, new user states, recommendations and rejects out.

This is everything the worker *decides*, with no Kafka and no Faust in it: the agent in
:mod:`streams.agents` only reads states from the table, calls :func:`process_batch`, and
writes what it returns. Several events of one user in a batch are applied in order and
produce one recommendation, triggered by that user's last event in the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from indexing.artifact import ModelArtifact
from indexing.index import search
from streamrec.contract import EVENT_TYPE_CODES, Event, InvalidEvent, Recommendation, ScoredItem, decode_event
from streams.interest import InterestParams, fold_events, update_batch
from streams.state import UserState


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


def decode_batch(
    messages: Sequence[tuple[bytes | None, bytes | None]], model: ModelArtifact, *, now: float | None = None
) -> tuple[list[tuple[int, Event]], list[Rejected]]:
    """Decode and validate ``(key, value)`` messages against the contract and the model."""
    accepted: list[tuple[int, Event]] = []
    rejected: list[Rejected] = []
    now = time.time() if now is None else now
    row_of = model.row_of
    for position, (key, value) in enumerate(messages):
        try:
            event = decode_event(value, now=now)
        except InvalidEvent as exc:
            rejected.append(Rejected(position, exc.reason, exc.detail))
            continue
        if key is None or key != event.user_id.encode():
            rejected.append(
                Rejected(position, "key_mismatch", f"the message key must be the user_id {event.user_id!r}, got {key!r}")
            )
        elif event.item_id not in row_of:
            rejected.append(
                Rejected(position, "unknown_item", f"item {event.item_id!r} is not in model {model.version}")
            )
        else:
            accepted.append((position, event))
    return accepted, rejected


def rebuild_state(state: UserState, model: ModelArtifact, params: InterestParams) -> UserState:
    """Re-derive a user's vector in a new model's space from their recent events."""
    known = [(model.row_of[item], kind, ts) for item, kind, ts in state.recent if item in model.row_of]
    vector, last_ts = fold_events(known, model.context, params)
    return UserState(vector, last_ts if known else None, state.n_events, model.version, state.recent, state.purchased)


def process_batch(
    messages: Sequence[tuple[bytes | None, bytes | None]],
    load_state: Callable[[str, int], UserState | None],
    model: ModelArtifact,
    params: InterestParams,
    *,
    now: float | None = None,
) -> BatchResult:
    """Decode, update every touched user's vector, search once, and build the outputs.

    ``load_state(user_id, position)`` returns the stored state (``position`` is the index
    of one of the user's messages, for stores that need the message's partition).
    """
    accepted, rejected = decode_batch(messages, model, now=now)
    result = BatchResult(rejected=rejected)
    if not accepted:
        return result

    users: dict[str, int] = {}
    for _, event in accepted:
        users.setdefault(event.user_id, len(users))
    user_list = list(users)
    first_position: dict[str, int] = {}
    for position, event in accepted:
        first_position.setdefault(event.user_id, position)

    dim = model.dim
    vectors = np.zeros((len(users), dim), dtype=np.float32)
    last_ts = np.full(len(users), np.nan)
    old_states: list[UserState | None] = []
    for slot, user_id in enumerate(user_list):
        state = load_state(user_id, first_position[user_id])
        if state is not None and state.model_version != model.version:
            state = rebuild_state(state, model, params)
        if state is not None:
            vectors[slot] = state.vector
            last_ts[slot] = np.nan if state.last_ts is None else state.last_ts
        old_states.append(state)

    events = [event for _, event in accepted]
    update_batch(
        vectors,
        last_ts,
        np.fromiter((users[e.user_id] for e in events), dtype=np.int64, count=len(events)),
        np.fromiter((model.row_of[e.item_id] for e in events), dtype=np.int64, count=len(events)),
        np.fromiter((EVENT_TYPE_CODES[e.type] for e in events), dtype=np.int64, count=len(events)),
        np.fromiter((e.ts for e in events), dtype=np.float64, count=len(events)),
        model.context,
        params,
    )
    if not np.all(np.isfinite(vectors)):
        bad = {user_list[i] for i in np.flatnonzero(~np.isfinite(vectors).all(axis=1))}
        raise FloatingPointError(f"non-finite user vectors for {sorted(bad)[:5]}: the model's context vectors are broken")

    per_user: dict[str, list[tuple[int, Event]]] = {u: [] for u in user_list}
    for position, event in accepted:
        per_user[event.user_id].append((position, event))

    exclusions: list[set[int]] = []
    for slot, user_id in enumerate(user_list):
        old = old_states[slot]
        recent = list(old.recent) if old else []
        purchased = list(old.purchased) if old else []
        for _, event in per_user[user_id]:
            recent.append((event.item_id, event.type, event.ts))
            if event.type == "purchase":
                if event.item_id in purchased:
                    purchased.remove(event.item_id)
                purchased.append(event.item_id)
        recent = recent[-params.history_size :]
        purchased = purchased[-params.max_exclusions :]
        new_state = UserState(
            vector=vectors[slot].copy(),
            last_ts=None if np.isnan(last_ts[slot]) else float(last_ts[slot]),
            n_events=(old.n_events if old else 0) + len(per_user[user_id]),
            model_version=model.version,
            recent=tuple(recent),
            purchased=tuple(purchased),
        )
        result.states[user_id] = (new_state, per_user[user_id][-1][0])
        exclusions.append({model.row_of[i] for i in purchased if i in model.row_of})

    rows, scores = search(model.index, vectors, params.k, exclusions)
    produced_at = time.time()
    item_ids = model.item_ids
    for slot, user_id in enumerate(user_list):
        trigger = per_user[user_id][-1][1]
        items = tuple(
            ScoredItem(item_ids[r], float(s)) for r, s in zip(rows[slot], scores[slot], strict=True) if r >= 0
        )
        result.recommendations.append(
            Recommendation(user_id, items, model.version, trigger.event_id, trigger.ts, produced_at)
        )
    return result
