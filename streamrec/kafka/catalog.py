"""Read the compacted items (catalog) topic: every product the shop has published, by id."""

from __future__ import annotations

import logging

from streamrec.contract import CatalogItem, InvalidEvent, decode_catalog_item
from streamrec.kafka.reading import NoSuchTopic, read_to_end

logger = logging.getLogger(__name__)

#: The consumer group prefix of the catalog's readers (they commit nothing; ACLs name it).
CATALOG_READER_GROUP = "streamrec-catalog-reader"


def read_catalog_topic(bootstrap: str, topic: str, *, timeout: float = 30.0) -> dict[str, CatalogItem]:
    """Every item record on ``topic``, read from the beginning to its end offsets now: the newest
    record per item id, without the removed ones (a tombstone). A topic that does not exist holds
    none. A record that is not a valid catalog item is logged (topic, partition, offset) and
    skipped. Raises :class:`TimeoutError` when reading makes no progress for ``timeout`` seconds."""
    found: dict[str, CatalogItem] = {}
    try:
        for message in read_to_end(bootstrap, topic, timeout=timeout, group=CATALOG_READER_GROUP):
            try:
                item = decode_catalog_item(message.key(), message.value())
            except InvalidEvent as exc:
                logger.warning("%s[%d]@%d: not a catalog item: %s", topic, message.partition(), message.offset(),
                               exc.detail)
                continue
            if item is None:  # a tombstone (its key checked as a UTF-8 item id): the item was removed
                found.pop(message.key().decode(), None)
            else:
                found[item.item_id] = item
    except NoSuchTopic:
        pass
    return found
