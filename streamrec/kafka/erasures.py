"""Read the compacted erasures topic: who asked to be forgotten, and when (docs/security.md)."""

from __future__ import annotations

import logging

from streamrec.contract import ErasureRequest, InvalidEvent, decode_erasure
from streamrec.kafka.reading import NoSuchTopic, read_to_end

logger = logging.getLogger(__name__)


def read_erasures(bootstrap: str, topic: str, *, timeout: float = 30.0) -> dict[str, ErasureRequest]:
    """Every erasure request on ``topic``, read from the beginning to its end offsets now, by user
    id (the newest per user). A topic that does not exist holds none. A record that is not a valid
    request is logged (topic, partition, offset) and skipped. Raises :class:`TimeoutError` when
    reading makes no progress for ``timeout`` seconds."""
    found: dict[str, ErasureRequest] = {}
    try:
        for message in read_to_end(bootstrap, topic, timeout=timeout, group="streamrec-erasures-reader"):
            key = message.key()
            if key is None:
                continue
            user_id = key.decode("utf-8", errors="replace")
            if message.value() is None:
                found.pop(user_id, None)
                continue
            partition, offset = message.partition(), message.offset()
            try:
                request = decode_erasure(message.value())
            except InvalidEvent as exc:
                logger.warning("%s[%d]@%d: not an erasure request: %s", topic, partition, offset, exc.detail)
                continue
            if request.user_id == user_id:
                found[user_id] = request
            else:
                logger.warning("%s[%d]@%d: key %r is not the request's user id", topic, partition, offset, key)
    except NoSuchTopic:
        pass
    return found
