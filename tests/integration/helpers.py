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


@dataclass
class HistoryAudit:
    users: int
    wrong_count: int  # users whose stored n_events differs from the published log's
    wrong_recent: int  # users whose stored recent event ids differ from the log's last ones


def audit_histories(states: dict[str, UserState], published: list[Event], *, history_size: int = 32) -> HistoryAudit:
    """Compare every user's stored ``n_events`` and recent event ids (the last
    ``history_size``, in order) with what the *published log* says they must be.

    ``published`` is every event the test sent, in the order it sent them (a user's events
    are all on one partition, so that is their order on the topic too); copies the test
    knows it re-sent must be left out by the caller. Unlike :func:`audit_states`, this does
    not trust the worker's own counter: it checks which events the state holds."""
    per_user: dict[str, list[str]] = defaultdict(list)
    for event in published:
        per_user[event.user_id].append(event.event_id)
    wrong_count = wrong_recent = 0
    for user_id, ids in per_user.items():
        state = states.get(user_id)
        stored_ids = [] if state is None else [r[0] for r in state.recent]
        if (0 if state is None else state.n_events) != len(ids):
            wrong_count += 1
        if stored_ids != ids[-history_size:]:
            wrong_recent += 1
    return HistoryAudit(len(per_user), wrong_count, wrong_recent)


def republished(recs: list[Recommendation]) -> int:
    """Recommendation messages beyond one per triggering event: lists published again for
    an event the worker met a second time (a replay) and skipped as a duplicate."""
    return len(recs) - len({rec.event_id for rec in recs})


def changelog_records_applied(log_file: Path) -> int:
    """Changelog records the batch engine says it applied when partitions were assigned."""
    import re

    text = Path(log_file).read_text(errors="replace")
    return sum(int(n) for n in re.findall(r"partition \d+ assigned: (\d+) changelog record", text))


def logged_duplicates(log_file: Path) -> int | None:
    """``duplicates`` in the batch engine's last stats line (its own count; None if absent)."""
    import re

    found = re.findall(r"'duplicates': (\d+)", Path(log_file).read_text(errors="replace"))
    return int(found[-1]) if found else None


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets of ``topic`` (partitions with none left out)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in found if tp.offset >= 0}
