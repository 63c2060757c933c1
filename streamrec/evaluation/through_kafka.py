"""Leave-one-out through the real pipeline: a broker, a ``streamrec worker``, its messages.

The served model is trained on the training events exactly as in the in-process harness
and saved as a model version; a real worker (:class:`streamrec.harness.worker.WorkerProcess`) serves
it; every evaluated user's history (all their events but the test one, with the dataset's
own event ids and timestamps) is published to the events topic; the last recommendation
the worker publishes for each user (the one triggered by their last history event) is
scored against the held-out item (events on items the model does not know are not published:
both sides serve the trained catalog). The same model also answers in process, with the
worker's exclusion rule (the user's purchased items, the last ``max_exclusions``), and the
two are compared user by user.

The worker publishes ``InterestParams.k`` (10) items, so HR and NDCG at 5 and 10 are measured.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from indexing.train import TrainParams
from streamrec.contract import PURCHASE
from streamrec.core.interest import InterestParams
from streamrec.evaluation.data import EventLog, leave_one_out
from streamrec.evaluation.metrics import hit_positions, summarise
from streamrec.evaluation.served import ServedModel

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class KafkaOutcome:
    metrics: dict[str, float]
    in_process_metrics: dict[str, float]
    users: int
    #: Users whose worker list and in-process list are the same items in the same order.
    same_lists: int
    #: Users where the held-out item is a hit in one and not the other.
    hit_disagreements: int
    events_published: int
    messages_read: int
    seconds: float
    replay_seconds: float
    positions: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    in_process_positions: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))


def worker_exclusions(log: EventLog, histories: list[np.ndarray], history_index: list[np.ndarray],
                      max_exclusions: int) -> list[np.ndarray]:
    """Per user, the distinct items they purchased in their history, the last ``max_exclusions``."""
    out = []
    for items, index in zip(histories, history_index, strict=True):
        bought = items[log.types[index] == PURCHASE].tolist()
        last: dict[int, None] = {}
        for item in bought:
            last.pop(item, None)
            last[item] = None
        out.append(np.asarray(list(last)[-max_exclusions:], dtype=np.int64))
    return out


def run_through_kafka(
    log: EventLog,
    *,
    bootstrap: str,
    train_params: TrainParams | None = None,
    partitions: int = 4,
    workdir: Path | None = None,
    timeout_s: float | None = None,
    progress: Progress | None = None,
    taste_decay: float = 0.0,
    factor_weight: float = 0.0,
) -> KafkaOutcome:
    """Replay ``log``'s leave-one-out histories through a real worker (see the module doc).

    ``taste_decay`` and ``factor_weight``: the long-term taste's and the factor step's settings
    (``rules.taste_decay``, ``rules.factor_weight``) of both the worker and the in-process model."""
    from producers.publisher import EventPublisher
    from streamrec.harness.topics import read_topic
    from streamrec.harness.worker import WorkerConfig, WorkerProcess

    if log.event_ids is None:
        raise ValueError("replaying through Kafka needs the events' ids (load the log with load_log)")
    say = progress or (lambda _message: None)
    started = time.perf_counter()
    params = InterestParams(taste_decay=taste_decay, factor_weight=factor_weight)
    split = leave_one_out(log)
    by_user = _history_index(log, split.users)

    say("training the served model on the training events")
    model = ServedModel(train_params, params)
    model.fit(log.take(split.train))
    model.observe(log.take(split.validation))
    exclusions = worker_exclusions(log, split.histories, by_user, params.max_exclusions)
    local_top = model.recommend(split.users, params.k, exclusions)

    owned = tempfile.TemporaryDirectory(prefix="streamrec-evaluate-") if workdir is None else None
    root = Path(owned.name) if owned is not None else workdir
    try:
        models_dir = root / "models"
        model.trained.save(models_dir, factory=model.factory)
        run = uuid.uuid4().hex[:8]
        config = WorkerConfig(
            bootstrap=bootstrap, models_dir=models_dir, data_dir=root / "worker", app_id=f"streamrec-evaluate-{run}",
            events_topic=f"evaluate-{run}-events", recommendations_topic=f"evaluate-{run}-recommendations",
            dlq_topic=f"evaluate-{run}-events-dlq", partitions=partitions,
            extra_env={"STREAMREC_INDEX__USE_GPU": "false", "STREAMREC_RULES__TASTE_DECAY": str(taste_decay),
                       "STREAMREC_RULES__FACTOR_WEIGHT": str(factor_weight)},
        )
        say("starting a worker")
        with WorkerProcess(config, log_file=root / "worker.log") as worker:
            worker.wait_ready(timeout=120)
            say(f"publishing the histories of {len(split.users):,} users")
            replay_started = time.perf_counter()
            last_event: dict[str, str] = {}
            published = 0
            with EventPublisher(bootstrap, config.events_topic) as publisher:
                # User after user: each user's events arrive together, in their order.
                for index in by_user:
                    # Only events on items the model knows: the in-process adapter serves a
                    # fixed catalog (the worker would make the others new items, which the
                    # lifecycle evaluation measures); the user's last one triggers the list.
                    known = index[model.model_row[log.items[index]] >= 0]
                    for event in log.take(known).events():
                        publisher.publish(event)
                    published += len(known)
                    if len(known):
                        last_event[log.user_ids[log.users[known[-1]]]] = log.event_ids[known[-1]]
            latest = _Latest(last_event)
            limit = timeout_s if timeout_s is not None else 120.0 + published / 500.0
            say("reading the recommendations")
            try:
                messages = read_topic(bootstrap, config.recommendations_topic, done=latest.done, timeout=limit)
            except TimeoutError as exc:
                raise TimeoutError(f"{exc}; worker log:\n{worker.log_tail()}") from None
            replay_seconds = time.perf_counter() - replay_started
    finally:
        if owned is not None:
            owned.cleanup()

    row_of = {item: row for row, item in enumerate(log.item_ids)}
    kafka_top = np.full((len(split.users), params.k), -1, dtype=np.int64)
    for n, user in enumerate(split.users.tolist()):
        rec = latest.recommendation.get(log.user_ids[user])
        if rec is None:  # none of the user's items is known to the model: no message
            local_top[n] = -1
            continue
        rows = [row_of.get(scored.item_id, -1) for scored in rec.items][: params.k]
        kafka_top[n, : len(rows)] = rows
    positions = hit_positions(kafka_top, split.test_items)
    local_positions = hit_positions(local_top, split.test_items)
    ks = (5, 10)
    return KafkaOutcome(
        metrics=summarise(positions, ks),
        in_process_metrics=summarise(local_positions, ks),
        users=len(split.users),
        same_lists=int(np.all(kafka_top == local_top, axis=1).sum()),
        hit_disagreements=int(np.sum((positions < params.k) != (local_positions < params.k))),
        events_published=published,
        messages_read=len(messages),
        seconds=time.perf_counter() - started,
        replay_seconds=replay_seconds,
        positions=positions,
        in_process_positions=local_positions,
    )


def _history_index(log: EventLog, users: np.ndarray) -> list[np.ndarray]:
    """Per evaluated user, the indices of their events except the last (the test event)."""
    from streamrec.evaluation.data import user_sequences

    sequences = user_sequences(log)
    return [sequences[u][:-1] for u in users.tolist()]


class _Latest:
    """Follows the recommendations topic incrementally: each user's recommendation for their
    last published event, once it arrives."""

    def __init__(self, last_event: dict[str, str]) -> None:
        self.last_event = last_event
        self.recommendation: dict[str, object] = {}
        self.read = 0

    def done(self, messages: list[tuple[bytes | None, bytes]]) -> bool:
        from streamrec.contract import decode_recommendation

        for _, value in messages[self.read :]:
            rec = decode_recommendation(value)
            if self.last_event.get(rec.user_id) == rec.event_id:
                self.recommendation[rec.user_id] = rec
        self.read = len(messages)
        return len(self.recommendation) == len(self.last_event)
