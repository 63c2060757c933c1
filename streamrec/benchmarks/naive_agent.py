"""The baseline: the textbook per-event Faust agent, doing the worker's work one event at a time.

``async for event in stream.events():`` decode and validate the event, read the user's state
from the ``user-states`` table, apply :func:`streamrec.core.interest.update_vector`, write the
state back, search the index for this one vector, and ``send`` one recommendation.

Same contract, same state codec, same update rule, same duplicate detection and exclusions
(the pure helpers of :mod:`streamrec.core.batch` are reused), same model; the Faust app, topics
and the RocksDB table with its options come from :func:`streams.app.create_app` itself, with
this agent registered in place of the worker's. So the comparison differs only in *how* the
work is done (one event, one table write, one search and one send at a time), not in what
is done or with which settings (the garbage collector's included: the agent applies the
batch engine's ``GC_THRESHOLDS`` and freezes what was loaded at start, as the worker does).
``tests/unit/benchmarks/test_naive_agent.py`` checks that :func:`handle_event` gives the
states and recommendations that ``process_batch`` gives.

Run as its own process, configured like the worker by ``STREAMREC_*`` variables::

    python -m streamrec.benchmarks.naive_agent --log-level info
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click
import numpy as np

from indexing.artifact import ModelArtifact
from streamrec.contract import (
    EVENT_TYPE_CODES,
    InvalidEvent,
    Recommendation,
    decode_event,
    encode_dead_letter,
    encode_recommendation,
)
from streamrec.core.batch import (
    Message,
    is_duplicate,
    live_items,
    rebuild_state,
    recommend_one,
)
from streamrec.core.interest import InterestParams, update_vector
from streamrec.core.state import EMPTY_HISTORY, History, UserState, encode_state
from streams.engine import GC_THRESHOLDS
from streams.tables import read_state

if TYPE_CHECKING:
    from streams.app import StreamrecApp

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What one event leads to: a state to write, a recommendation to send, or a reject."""

    state: UserState | None = None
    recommendation: Recommendation | None = None
    rejected: InvalidEvent | None = None
    duplicate: bool = False


def _recommend(vector: np.ndarray, purchased: tuple[str, ...], trigger, model: ModelArtifact,
               params: InterestParams, recent: History) -> Recommendation:
    """One user's list as the worker's core finishes it (the steps after the search, the
    catalog's rules), for a search of that one user."""
    items = live_items(model)
    return recommend_one(items, trigger.user_id, vector, trigger, recent, k=params.k,
                         excluded=items.exclusions(purchased) if purchased else set(), params=params)


def handle_event(
    message: Message,
    load_state: Callable[[str], UserState | None],
    model: ModelArtifact,
    params: InterestParams,
    *,
    now: float | None = None,
) -> Outcome:
    """The per-event path: decode, read state, update, and search for this one user."""
    try:
        event = decode_event(message.value, now=now)
        if message.key is None or message.key != event.user_id.encode():
            raise InvalidEvent("key_mismatch", f"the message key must be the user_id {event.user_id!r}, got {message.key!r}")
        row = model.row_of.get(event.item_id)
        if row is None:
            raise InvalidEvent("unknown_item", f"item {event.item_id!r} is not in model {model.version}")
    except InvalidEvent as exc:
        return Outcome(rejected=exc)

    state = load_state(event.user_id)
    if state is not None and state.model_version != model.version:
        state = rebuild_state(state, model, params)
    if is_duplicate(state, set(), event, message):
        if state is not None and state.recent.last_event_id == event.event_id:
            return Outcome(recommendation=_recommend(state.vector, state.purchased, event, model, params, state.recent),
                           duplicate=True)
        return Outcome(duplicate=True)

    vector, last_ts = (np.zeros(model.dim, np.float32), None) if state is None else (state.vector, state.last_ts)
    with np.errstate(over="ignore", invalid="ignore"):
        vector, last_ts = update_vector(vector, last_ts, model.context[row], event.type, event.ts, params)
    if not np.isfinite(vector).all():
        return Outcome(rejected=InvalidEvent("non_finite_vector", f"the update made {event.user_id!r}'s vector non-finite"))
    recent = (state.recent if state else EMPTY_HISTORY).extended(
        [event.event_id], [event.item_id], bytes([EVENT_TYPE_CODES[event.type]]), [event.ts], limit=params.history_size)
    purchased = list(state.purchased) if state else []
    if event.type == "purchase":
        if event.item_id in purchased:
            purchased.remove(event.item_id)
        purchased.append(event.item_id)
    new_state = UserState(
        vector=vector,
        last_ts=last_ts,
        n_events=(state.n_events if state else 0) + 1,
        model_version=model.version,
        recent=recent,
        purchased=tuple(purchased[-params.max_exclusions :]),
        partition=message.partition,
        offset=message.offset,
    )
    return Outcome(state=new_state, recommendation=_recommend(vector, new_state.purchased, event, model, params, recent))


def register_naive_agent(bundle: StreamrecApp) -> None:
    """Register the per-event agent on a bundle built by ``create_app`` (under the worker's
    agent name, so consumer group and changelog topics are named the same way)."""
    app = bundle.app
    table = bundle.user_states
    params = bundle.params

    def load_state(user_id: str) -> UserState | None:
        return read_state(table, user_id)

    @app.agent(bundle.events_topic, name="recommend")
    async def recommend(stream):
        async for event in stream.events():
            source = event.message
            message = Message(source.key, source.value, source.partition, source.offset)
            outcome = handle_event(message, load_state, bundle.model.current, params)
            if outcome.state is not None:
                table[source.key] = encode_state(outcome.state)
            if outcome.recommendation is not None:
                await bundle.recommendations_topic.send(key=source.key, value=encode_recommendation(outcome.recommendation))
            if outcome.rejected is not None:
                await bundle.dlq_topic.send(
                    key=source.key,
                    value=encode_dead_letter(source.value, outcome.rejected.reason, outcome.rejected.detail,
                                             topic=source.topic, partition=source.partition, offset=source.offset),
                )

    @app.timer(interval=bundle.settings.worker.model_poll_s)
    async def poll_model() -> None:
        bundle.model.reload_if_newer()

    @app.task
    async def same_gc_as_the_worker() -> None:
        # The batch engine's garbage-collector settings (streams.engine.BatchEngine.warm_up),
        # applied the same way once the model is loaded, so that the two sides of the bench
        # differ in how they do the work, not in their process settings.
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        logger.info("garbage collector: thresholds %s, %d objects frozen", gc.get_threshold(), gc.get_freeze_count())


@click.command()
@click.option("--log-level", "loglevel", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
def main(loglevel: str) -> None:
    """Run the naive per-event agent as a worker process (settings from STREAMREC_* variables)."""
    import faust

    from indexing.artifact import ArtifactError
    from streamrec.config import get_settings
    from streamrec.kafka.admin import ensure_topics
    from streams.app import create_app

    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    try:
        bundle = create_app(settings, register=register_naive_agent)
    except ArtifactError as exc:
        raise click.ClickException(f"cannot start the naive agent: {exc}") from None
    kafka = settings.kafka
    ensure_topics(kafka.bootstrap, {t: kafka.partitions for t in (kafka.events_topic, kafka.recommendations_topic, kafka.dlq_topic)})
    click.echo(f"naive agent {settings.worker.app_id}: {settings.kafka.events_topic} -> "
               f"{settings.kafka.recommendations_topic} on {settings.kafka.bootstrap}", err=True)
    sys.argv = sys.argv[:1]  # faust.Worker must not see this command's options
    faust.Worker(bundle.app, loglevel=loglevel.lower(), quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
