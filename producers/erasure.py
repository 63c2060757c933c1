"""``streamrec forget``: publish a user's erasure request (the right to be forgotten).

:func:`forget` writes one :class:`~streamrec.contract.ErasureRequest` keyed by the user id, with
the events' partitioner, to two topics:

1. the compacted erasures topic (``kafka.erasures_topic``): the lasting record that the user
   asked to be forgotten and when; the trainer reads it to leave the user's older events out of
   every later training run, whatever source they come from;
2. the events topic, where it lands on the user's own partition after every event of the user
   published before it: the worker (both engines, through the pure core) deletes the user's state
   and writes the changelog tombstone when it reaches it, in order with the user's events, and the
   trainer drops the user's events before it from its window.

Both writes are acknowledged (``acks=all``) before :func:`forget` returns; repeating a request is
harmless (an unknown user is simply forgotten again). See docs/security.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from producers.publisher import EventPublisher, ProducerLike, _default_producer_factory
from streamrec.contract import ErasureRequest, encode_erasure
from streamrec.privacy import Pseudonymizer


def forget(
    user_id: str,
    *,
    bootstrap: str,
    events_topic: str,
    erasures_topic: str,
    pseudonymizer: Pseudonymizer | None = None,
    requested_at: float | None = None,
    timeout: float = 30.0,
    partitioner: str | None = None,
    producer_factory: Callable[[dict[str, Any]], ProducerLike] = _default_producer_factory,
) -> ErasureRequest:
    """Publish the erasure request of ``user_id`` (its pseudonym when a ``pseudonymizer`` is
    given) to the erasures topic, then to the events topic; returns the request sent.

    The request must land on the partition of the user's events: ``partitioner`` is librdkafka's
    ``partitioner`` setting of the shop's event producers (None: librdkafka's default,
    ``consistent_random``, what :class:`~producers.publisher.EventPublisher` uses; Java clients
    hash with ``murmur2_random``).

    Raises :class:`ValueError` for a blank id and :class:`producers.publisher.DeliveryError`
    when the broker did not take either record (then send it again).
    """
    if not user_id or not user_id.strip():
        raise ValueError("the user id to forget must not be empty")
    if pseudonymizer is not None:
        user_id = pseudonymizer(user_id)
    request = ErasureRequest(user_id, time.time() if requested_at is None else float(requested_at))
    key, value = user_id.encode("utf-8"), encode_erasure(request)
    for topic in (erasures_topic, events_topic):  # the lasting record first
        config = {"partitioner": partitioner} if partitioner else None
        with EventPublisher(bootstrap, topic, linger_ms=0, config=config, producer_factory=producer_factory) as publisher:
            publisher.publish_raw(key, value)
            publisher.flush(timeout)
    return request


def forget_with_settings(user_id: str, settings: Any, *, pseudonymize: bool = False) -> ErasureRequest:  # noqa: ANN401
    """:func:`forget` with the topics, broker and (``pseudonymize``) key of ``settings``."""
    kafka = settings.kafka
    return forget(user_id, bootstrap=kafka.bootstrap, events_topic=kafka.events_topic,
                  erasures_topic=kafka.erasures_topic,
                  pseudonymizer=Pseudonymizer.from_settings(settings) if pseudonymize else None)
