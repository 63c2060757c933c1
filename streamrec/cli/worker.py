"""``streamrec worker`` and ``streamrec consume``."""

from __future__ import annotations

import logging
import sys
import time
import uuid
from pathlib import Path

import click

from streamrec.cli.readable import Kind, Unreadable, format_recommendation, render
from streamrec.config import KafkaSettings, get_settings
from streamrec.kafka.admin import ensure_worker_topics
from streamrec.kafka.security import client_config

logger = logging.getLogger(__name__)


@click.command()
@click.option("--bootstrap", help="Kafka bootstrap servers [default: from settings].")
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), help="Folder of model versions.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Where RocksDB tables live.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Events per micro-batch.")
@click.option("--engine", type=click.Choice(["batch", "faust"]),
              help="batch: librdkafka micro-batches (fast); faust: the Faust agent [default: from settings, batch].")
def worker(bootstrap, models_dir, data_dir, batch_size, engine) -> None:  # noqa: ANN001
    """Run the worker: events in, user vectors updated, recommendations out."""
    from indexing.artifact import ArtifactError

    settings = get_settings()
    updates: dict[str, dict] = {}
    if bootstrap:
        updates["kafka"] = {"bootstrap": bootstrap}
    worker_updates = {k: v for k, v in {"data_dir": data_dir, "batch_size": batch_size, "engine": engine}.items()
                      if v is not None}
    if worker_updates:
        updates["worker"] = worker_updates
    if models_dir:
        updates["index"] = {"models_dir": models_dir}
    settings = settings.model_copy(
        update={part: getattr(settings, part).model_copy(update=values) for part, values in updates.items()}
    )
    loglevel = str(click.get_current_context().find_root().params.get("log_level") or "WARNING").lower()
    level = logging.getLevelName(loglevel.upper())  # the group's --log-level
    try:
        if settings.worker.engine == "batch":
            _run_batch_engine(settings, level)
        else:
            _run_faust_agent(settings, loglevel, level)
    except ArtifactError as exc:
        raise click.ClickException(f"cannot start the worker: {exc}") from None


def _announce(settings, model_version: str) -> None:  # noqa: ANN001
    click.echo(
        f"worker {settings.worker.app_id} ({settings.worker.engine} engine): {settings.kafka.events_topic} -> "
        f"{settings.kafka.recommendations_topic} on {settings.kafka.bootstrap}, model {model_version}",
        err=True,
    )


def _run_batch_engine(settings, level: int) -> None:  # noqa: ANN001
    import faiss

    from streams.engine import BatchEngine

    logging.getLogger().setLevel(level)
    faiss.omp_set_num_threads(settings.index.search_threads)
    engine = BatchEngine(settings)
    ensure_worker_topics(settings.kafka, changelog=engine.changelog)
    engine.shell.serve_metrics()
    _announce(settings, engine.model.current.version)
    engine.run()


def _run_faust_agent(settings, loglevel: str, level: int) -> None:  # noqa: ANN001
    import faust

    from streams.agents import register_agents
    from streams.app import create_app

    bundle = create_app(settings, register=register_agents)
    # The changelog too, so that it gets kafka.compacted_configs (Faust keeps an existing one).
    ensure_worker_topics(settings.kafka, changelog=bundle.user_states.changelog_topic.get_topic_name())
    bundle.shell.serve_metrics()
    _announce(settings, bundle.model.current.version)

    @bundle.app.task
    async def apply_log_level() -> None:
        # mode's logging setup leaves the root logger at DEBUG whatever the level asked, and
        # aiokafka and faust then format a debug line (with the message bytes) for every
        # message sent: a measurable share of the worker's time.
        for name in ("", "aiokafka", "faust", "mode"):
            logging.getLogger(name).setLevel(level)

    faust.Worker(bundle.app, loglevel=loglevel.lower(), quiet=True).execute_from_commandline()


__all__ = ["consume", "format_recommendation", "topic_kind", "worker"]


def topic_kind(topic: str, kafka: KafkaSettings) -> Kind | None:
    """What the settings say ``topic`` carries; None for a topic they do not name."""
    kinds: dict[str, Kind] = {kafka.events_topic: "events", kafka.erasures_topic: "events", kafka.items_topic: "items",
                              kafka.dlq_topic: "dead-letters", kafka.recommendations_topic: "recommendations"}
    return kinds.get(topic)


@click.command()
@click.option("--bootstrap", help="Kafka bootstrap servers [default: from settings].")
@click.option("--topic", help="Topic to read [default: the recommendations topic]. The settings' dead-letter, items and "
                              "events topics print as such; any other topic by the shape of each message.")
@click.option("--user", "users", multiple=True, help="Only this user's recommendations or events (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of readable lines.")
@click.option("--from-beginning", is_flag=True,
              help="Start at the oldest message instead of new ones (a throwaway consumer group either way).")
@click.option("--max-messages", type=click.IntRange(min=1), help="Stop after this many messages.")
@click.option("--timeout", type=click.FloatRange(min=0), help="Stop after this many seconds without a message.")
def consume(bootstrap, topic, users, as_json, from_beginning, max_messages, timeout) -> None:  # noqa: ANN001
    """Tail a topic: recommendations (default), dead letters, catalog records or events, readably."""
    from confluent_kafka import Consumer, KafkaError

    settings = get_settings().kafka
    topic = topic or settings.recommendations_topic
    kind = topic_kind(topic, settings)
    if users and kind in ("dead-letters", "items"):
        raise click.BadParameter(
            f"topic {topic!r} holds {'dead letters' if kind == 'dead-letters' else 'catalog records'}, which belong "
            f"to no user; --user filters recommendations and events",
            param_hint="--user",
        )
    consumer = Consumer(
        {
            **client_config(bootstrap or settings.bootstrap, settings),
            "group.id": f"streamrec-consume-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    wanted = set(users)
    seen = 0
    idle_since = time.monotonic()
    try:
        while max_messages is None or seen < max_messages:
            message = consumer.poll(0.5)
            if message is None:
                if timeout is not None and time.monotonic() - idle_since > timeout:
                    break
                continue
            if message.error():
                if message.error().code() != KafkaError._PARTITION_EOF:
                    click.echo(f"consumer error: {message.error()}", err=True)
                continue
            idle_since = time.monotonic()
            try:
                rendered = render(kind, message.key(), message.value(), as_json=as_json)
            except Unreadable as exc:
                click.echo(f"skipping an unreadable message of topic {topic!r}, partition {message.partition()}, "
                           f"offset {message.offset()}: {exc}", err=True)
                continue
            if wanted and rendered.user_id not in wanted:
                continue
            seen += 1
            click.echo(rendered.line)
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
