"""The worker's catalog table: every catalog record, restored from the items topic.

The items topic is compacted and keyed by ``item_id`` (:class:`streamrec.contract.CatalogItem`;
a tombstone removes the item). Unlike users' states, the catalog is not partitioned between
workers: every worker follows every partition of the topic (assigned, no consumer group) and
keeps all records in its own RocksDB (``<data_dir>/v1/tables/catalog.db``), with the offset it
has read to per partition, so a restart reads only what is new. At start the worker reads
the topic up to its end before it serves (:meth:`CatalogTable.restore`); afterwards it polls
it between batches (:meth:`CatalogTable.poll`) and hands the changes to the live item side.

A record that breaks the contract comes back as a :class:`CatalogReject`; the engine sends it
to the dead-letter topic, like a bad event.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from rocksdict import Options, Rdict, WriteBatch

from indexing.artifact import ModelArtifact
from streamrec.contract import (
    CatalogItem,
    InvalidCatalogItem,
    decode_catalog_item,
    encode_catalog_item,
    encode_dead_letter,
)
from streamrec.core.items import ItemRules, ItemsModel, LiveItems, rules_from_settings
from streamrec.kafka.admin import watermarks
from streamrec.kafka.clients import IDLE_FETCH_WAIT_MS
from streamrec.kafka.security import client_config
from streams.tables import TABLE_DIR

logger = logging.getLogger(__name__)

_ITEM_PREFIX = b"item\0"
_OFFSET_PREFIX = b"offset\0"


@dataclass(frozen=True)
class CatalogChange:
    item_id: str
    item: CatalogItem | None  # None: removed


@dataclass(frozen=True)
class CatalogReject:
    """A record of the items topic that broke the contract."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str


class CatalogTable:
    """All catalog records, in RocksDB and in memory (``items``), following the items topic."""

    def __init__(self, data_dir: Path, bootstrap: str, topic: str) -> None:
        self.topic = topic
        folder = Path(data_dir) / TABLE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self._db = Rdict(str(folder / "catalog.db"), options=options)
        self.items: dict[str, CatalogItem] = {}
        self._offsets: dict[int, int] = {}  # next offset to read per partition
        for key, value in self._db.items():
            if key.startswith(_ITEM_PREFIX):
                item = decode_catalog_item(key[len(_ITEM_PREFIX):], value)
                if item is not None:
                    self.items[item.item_id] = item
            elif key.startswith(_OFFSET_PREFIX):
                self._offsets[int(key[len(_OFFSET_PREFIX):])] = int(value)
        self._consumer = Consumer({
            **client_config(bootstrap),
            "group.id": f"catalog-{uuid.uuid4().hex[:8]}",  # never joined: partitions are assigned
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": IDLE_FETCH_WAIT_MS,
            "log_level": 4,
        })
        self._assigned = False

    def _assign(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            metadata = self._consumer.list_topics(self.topic, timeout=5).topics.get(self.topic)
            if metadata is not None and metadata.error is None and metadata.partitions:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the items topic {self.topic} does not exist")
            time.sleep(0.2)
        self._ends = {p: watermarks(self._consumer, self.topic, p, deadline=deadline)[1] for p in metadata.partitions}
        self._consumer.assign([TopicPartition(self.topic, p, self._offsets.get(p, OFFSET_BEGINNING))
                               for p in sorted(metadata.partitions)])
        self._assigned = True

    def restore(self, timeout: float = 120.0) -> tuple[list[CatalogChange], list[CatalogReject]]:
        """Read the topic up to its current end (what this table missed while down)."""
        started = time.monotonic()
        self._assign(timeout)
        changes: list[CatalogChange] = []
        rejects: list[CatalogReject] = []
        while any(self._offsets.get(p, 0) < end for p, end in self._ends.items()):
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"the items topic {self.topic} was not read to its end within {timeout:g} s")
            more, bad = self.poll(timeout=0.5)
            changes += more
            rejects += bad
        logger.info("catalog restored: %d item(s), %d new record(s) read in %.2f s", len(self.items),
                    len(changes) + len(rejects), time.monotonic() - started)
        return changes, rejects

    def poll(self, *, max_records: int = 10_000, timeout: float = 0.0) -> tuple[list[CatalogChange], list[CatalogReject]]:
        """Read what is new (waiting at most ``timeout``), store it and return it."""
        if not self._assigned:
            self._assign(30.0)
        changes: list[CatalogChange] = []
        rejects: list[CatalogReject] = []
        messages = self._consumer.consume(max_records, timeout=timeout)
        if not messages:
            return changes, rejects
        batch = WriteBatch(raw_mode=True)
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._offsets[message.partition()] = max(self._offsets.get(message.partition(), 0), message.offset())
                    continue
                raise KafkaException(error)
            partition, offset = message.partition(), message.offset()
            key, value = message.key(), message.value()
            try:
                item = decode_catalog_item(key, value)
            except InvalidCatalogItem as exc:
                rejects.append(CatalogReject(partition, offset, key, value, exc.reason, exc.detail))
            else:
                item_id = key.decode()
                if item is None:
                    self.items.pop(item_id, None)
                    batch.delete(_ITEM_PREFIX + key)
                else:
                    self.items[item_id] = item
                    batch.put(_ITEM_PREFIX + key, encode_catalog_item(item))
                changes.append(CatalogChange(item_id, item))
            self._offsets[partition] = offset + 1
            batch.put(_OFFSET_PREFIX + str(partition).encode(), str(offset + 1).encode())
        self._db.write(batch)
        return changes, rejects

    def close(self) -> None:
        try:
            self._consumer.close()
        except RuntimeError:
            pass
        self._db.close()


class LiveCatalog:
    """The catalog table and the live item side of the served model, as both engines use them:
    restore at start, poll between batches, rebuild the item side when a model is adopted, and
    the dead letters of bad catalog records.

    Every worker reads every catalog record; a bad one is dead-lettered by the worker that owns
    the events partition of the same number (modulo the events topic's partitions), so that
    several workers do not each send it. Rejects read before the worker owns any partition wait.
    """

    def __init__(self, table: CatalogTable, rules: ItemRules) -> None:
        self.table = table
        self.rules = rules
        self.items: LiveItems | None = None
        self._rejects: list[CatalogReject] = []

    @classmethod
    def from_settings(cls, settings) -> LiveCatalog:  # noqa: ANN001 - streamrec.config.Settings
        table = CatalogTable(settings.worker.data_dir, settings.kafka.bootstrap, settings.kafka.items_topic)
        return cls(table, rules_from_settings(settings.rules))

    def start(self, model: ModelArtifact) -> LiveItems:
        """Restore the table from the topic and build the item side of ``model``."""
        _, rejects = self.table.restore()
        self._rejects += rejects
        return self.adopt(model)

    def adopt(self, model: ModelArtifact) -> LiveItems:
        """The item side of a newly adopted model version, with every catalog record applied."""
        self.items = LiveItems(ItemsModel.from_artifact(model), self.rules, self.table.items)
        return self.items

    def poll(self) -> int:
        """Apply what is new on the items topic to the item side; how many records."""
        changes, rejects = self.table.poll()
        for change in changes:
            self.items.apply_catalog(change.item_id, change.item)
        self._rejects += rejects
        return len(changes) + len(rejects)

    def drop_rejects(self) -> None:
        """Forget the rejected records (for a reader that does not send dead letters: a worker does)."""
        self._rejects = []

    def dead_letters(self, owned: set[int], n_partitions: int) -> list[tuple[bytes | None, bytes]]:
        """``(key, dead letter)`` of the rejects this worker must send (see the class doc)."""
        if not owned:
            return []
        mine = [r for r in self._rejects if r.partition % n_partitions in owned]
        self._rejects = []
        for reject in mine:
            logger.warning("rejected %s[%d]@%d: %s (%s)", self.table.topic, reject.partition, reject.offset,
                           reject.reason, reject.detail)
        return [(r.key, encode_dead_letter(r.value, r.reason, r.detail, topic=self.table.topic,
                                           partition=r.partition, offset=r.offset)) for r in mine]

    def close(self) -> None:
        self.table.close()
