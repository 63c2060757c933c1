"""Shared pieces of the integration tests: a trained synthetic shop, publishing, checking."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexing.artifact import ModelArtifact, load_artifact
from indexing.train import TrainParams, interactions_from_events, train_model
from producers.publisher import EventPublisher
from producers.synthetic import SyntheticShop
from streamrec.contract import Event, Recommendation
from streamrec.core.interest import InterestParams, fold_events
from streamrec.core.state import UserState
from streamrec.harness.topics import last_event_per_user, wait_for_answers
from streamrec.kafka.admin import ensure_topics


@dataclass
class Shop:
    models_dir: Path
    model: ModelArtifact
    live: list[Event]


def trained_shop(folder: Path, *, items: int, users: int, history: int, live: int, seed: int, dim: int = 32) -> Shop:
    """A model trained on a synthetic shop's first ``history`` events, and the next ``live``."""
    stream = list(SyntheticShop(items=items, users=users, seed=seed).events(history + live, start_ts=1_700_000_000.0))
    data = interactions_from_events(stream[:history])
    train_model(data, TrainParams(dim=dim)).save(folder)
    model = load_artifact(folder, use_gpu=False)
    return Shop(folder, model, [e for e in stream[history:] if e.item_id in model.row_of])


def publish(bootstrap: str, topic: str, events: list[Event], *, partitions: int = 2) -> None:
    ensure_topics(bootstrap, {topic: partitions})
    with EventPublisher(bootstrap, topic, linger_ms=20) as publisher:
        for event in events:
            publisher.publish(event)


def wait_for_recommendations(
    bootstrap: str, topic: str, events: list[Event], *, timeout: float = 300.0
) -> list[tuple[Recommendation, float]]:
    """Read recommendations until every user's last event has triggered one; return them with
    the wall time each was read."""
    return wait_for_answers(bootstrap, topic, last_event_per_user(events).values(), timeout=timeout)


@dataclass
class Audit:
    users: int
    lost: int  # users whose state misses events
    doubled: int  # users whose state counts an event twice
    mismatched: int  # users whose vector differs from the offline computation


def audit_states(states: dict[str, UserState], events: list[Event], model: ModelArtifact) -> Audit:
    """Compare every user's stored state with the pure function applied to their events."""
    params = InterestParams()
    per_user: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        per_user[event.user_id].append(event)
    lost = doubled = mismatched = 0
    for user_id, history in per_user.items():
        state = states.get(user_id)
        applied = 0 if state is None else state.n_events
        if applied < len(history):
            lost += 1
        elif applied > len(history):
            doubled += 1
        if state is None:
            continue
        expected, _ = fold_events([(model.row_of[e.item_id], e.type, e.ts) for e in history], model.context, params)
        if not np.allclose(state.vector, expected, rtol=1e-5, atol=1e-5):
            mismatched += 1
    return Audit(len(per_user), lost, doubled, mismatched)


def conflicting_lists(recs: list[Recommendation]) -> int:
    """Triggering events that got two different lists."""
    lists: dict[str, tuple[str, ...]] = {}
    conflicts = 0
    for rec in recs:
        items = tuple(i.item_id for i in rec.items)
        if lists.setdefault(rec.event_id, items) != items:
            conflicts += 1
    return conflicts


def record(fault: str, **row: object) -> None:
    """Append a row to the reliability report (docs/reliability.md) when asked to."""
    path = os.environ.get("STREAMREC_RELIABILITY_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps({"fault": fault, **row}) + "\n")
