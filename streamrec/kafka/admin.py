"""Topic administration: create the topics that are missing, read a topic's settings, and the
set of topics a worker needs. Beside the Kafka launcher: the base every other package uses."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from streamrec.config import KafkaSettings
from streamrec.contract import DLQ_MAX_MESSAGE_BYTES
from streamrec.kafka.security import client_config

logger = logging.getLogger(__name__)

#: Topic settings of a compacted topic (the catalog, the changelogs, the models).
COMPACTED = {"cleanup.policy": "compact"}


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    timeout: float = 30.0,
    admin_factory: Callable[[dict[str, Any]], Any] | None = None,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> list[str]:
    """Create the topics that are missing (``{name: partitions}``) and wait until they exist.

    ``configs`` gives topic-level settings for topics created here (``{name: {key: value}}``).

    Idempotent: existing topics are left alone (a warning is logged if one has fewer
    partitions than asked). Returns the names it created. Raises :class:`RuntimeError`
    with a readable message when the broker cannot be reached or refuses.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    for name, partitions in topics.items():
        if not name or partitions < 1:
            raise ValueError(f"topic {name!r} needs a name and at least 1 partition, got {partitions}")
    factory = admin_factory or AdminClient
    # librdkafka would log every failed connection attempt; the error raised below says it once.
    admin = factory({**client_config(bootstrap), "log_level": 0})
    deadline = time.monotonic() + timeout

    def existing() -> dict[str, int]:
        try:
            metadata = admin.list_topics(timeout=max(deadline - time.monotonic(), 0.1))
        except KafkaException as exc:
            raise RuntimeError(f"could not reach Kafka at {bootstrap} within {timeout:g} s: {exc}") from None
        return {name: len(meta.partitions) for name, meta in metadata.topics.items() if meta.error is None}

    found = existing()
    for name, partitions in topics.items():
        if name in found and found[name] < partitions:
            logger.warning("topic %r exists with %d partition(s), fewer than the %d asked", name, found[name], partitions)
    missing = [name for name in topics if name not in found]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(
                name,
                num_partitions=topics[name],
                replication_factor=replication_factor,
                config=dict((configs or {}).get(name, {})),
            )
            for name in missing
        ],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=max(deadline - time.monotonic(), 0.1))
            created.append(name)
            logger.info("created topic %r with %d partition(s)", name, topics[name])
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # created meanwhile by someone else: fine
            raise RuntimeError(f"could not create topic {name!r} on Kafka at {bootstrap}: {exc}") from None
    while not all(name in found for name in missing):
        if time.monotonic() >= deadline:
            raise RuntimeError(f"topics {', '.join(missing)} were created but did not appear within {timeout:g} s")
        time.sleep(0.1)
        found = existing()
    return created


def topic_config(
    bootstrap: str,
    topic: str,
    *,
    timeout: float = 30.0,
    admin_factory: Callable[[dict[str, Any]], Any] | None = None,
) -> dict[str, str]:
    """The topic-level settings of ``topic`` (``{"cleanup.policy": "compact", ...}``).

    Raises :class:`RuntimeError` with a readable message when the broker cannot be reached
    or does not know the topic.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import ConfigResource

    factory = admin_factory or _admin_client
    admin = factory({**client_config(bootstrap), "log_level": 0})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        entries = admin.describe_configs([resource], request_timeout=timeout)[resource].result(timeout=timeout)
    except KafkaException as exc:
        raise RuntimeError(f"could not read the settings of topic {topic!r} on Kafka at {bootstrap}: {exc}") from None
    return {name: entry.value for name, entry in entries.items() if entry.value is not None}


def _admin_client(config: dict[str, Any]) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient(config)


def compacted(kafka: KafkaSettings) -> dict[str, str]:
    """Topic settings of a compacted topic streamrec creates: :data:`COMPACTED` plus the
    operator's ``kafka.compacted_configs`` (how soon superseded and erased records go)."""
    return {**kafka.compacted_configs, **COMPACTED}


def ensure_worker_topics(kafka: KafkaSettings, *, changelog: str | None = None,
                         admin_factory: Callable[[dict[str, Any]], Any] | None = None) -> list[str]:
    """Create the worker's topics if missing: events, recommendations, the dead-letter topic
    (which takes large messages), the compacted catalog, the compacted erasure requests, and
    the table's compacted ``changelog`` when given (Faust creates its own; the batch engine does not)."""
    partitions = kafka.partitions
    topics = {kafka.events_topic: partitions, kafka.recommendations_topic: partitions, kafka.dlq_topic: partitions,
              kafka.items_topic: partitions, kafka.erasures_topic: partitions}
    configs: dict[str, Mapping[str, str]] = {kafka.dlq_topic: {"max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES)},
                                             kafka.items_topic: compacted(kafka), kafka.erasures_topic: compacted(kafka)}
    if changelog is not None:
        topics[changelog] = partitions
        configs[changelog] = compacted(kafka)
    return ensure_topics(kafka.bootstrap, topics, configs=configs, admin_factory=admin_factory)


#: Errors of a topic whose partitions have no leader yet (created a moment ago).
_NOT_READY = {"NOT_LEADER_FOR_PARTITION", "LEADER_NOT_AVAILABLE", "UNKNOWN_TOPIC_OR_PART", "_TIMED_OUT",
              "REQUEST_TIMED_OUT", "_TRANSPORT"}


def watermarks(consumer: Any, topic: str, partition: int, *, deadline: float) -> tuple[int, int]:
    """``(low, high)`` offsets of a partition, waiting (until the monotonic ``deadline``) while the
    topic is still electing its leaders, as a topic created a moment ago does."""
    from confluent_kafka import KafkaError, KafkaException, TopicPartition

    not_ready = {getattr(KafkaError, name) for name in _NOT_READY}
    while True:
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5.0)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            transient = isinstance(error, KafkaError) and (error.retriable() or error.code() in not_ready)
            if time.monotonic() > deadline or not transient:
                raise
            logger.info("%s[%d] not ready yet (%s); retrying", topic, partition, error.str())
            time.sleep(0.2)
