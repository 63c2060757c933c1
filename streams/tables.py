"""The ``user-states`` table on disk: one RocksDB (rocksdict, raw mode) per partition.

The layout is Faust's (``<data_dir>/v1/tables/user-states-<partition>.db``, the newest
changelog offset applied under Faust's ``__faust\0offset__`` key, the changelog topic
``<app_id>-user-states-changelog``), so the Faust agent and the batch engine share one table
and a worker can switch engines without losing state. :class:`PartitionStore` is the batch
engine's read-write access; :func:`read_user_states` opens a stopped worker's table
read-only (for inspection, tests and recovery checks).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from rocksdict import AccessType, BlockBasedOptions, Cache, Options, Rdict, WriteBatch

from streamrec.core.state import StateDecodeError, UserState, decode_state

logger = logging.getLogger(__name__)

USER_STATES_TABLE = "user-states"
#: Faust keeps its own bookkeeping (the persisted changelog offset) in each partition's DB.
FAUST_RESERVED_PREFIX = b"__faust"
#: Where Faust (and the batch engine) keep the newest changelog offset applied to a partition.
OFFSET_KEY = b"__faust\0offset__"
#: Faust's ``app.conf.version`` (1) names the table folder.
TABLE_DIR = Path("v1") / "tables"


def changelog_topic(app_id: str, table: str = USER_STATES_TABLE) -> str:
    """The compacted topic that backs ``table`` up (Faust's naming)."""
    return f"{app_id}-{table}-changelog"


class PartitionStore:
    """Read-write access to the table's partitions a worker owns (the batch engine's store).

    Each partition is its own RocksDB, opened when the partition is assigned and closed when
    it is revoked. Writes come in one ``WriteBatch`` per partition and micro-batch, together
    with the newest changelog offset they reflect, so the two never disagree after a crash.
    """

    def __init__(self, data_dir: Path, table: str = USER_STATES_TABLE, *, block_cache_mb: int = 64) -> None:
        self.folder = Path(data_dir) / TABLE_DIR
        self.table = table
        self._dbs: dict[int, Rdict] = {}
        self._cache = Cache(block_cache_mb * 1024**2)

    def path(self, partition: int) -> Path:
        return self.folder / f"{self.table}-{partition}.db"

    def _options(self) -> Options:
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_write_buffer_size(16 * 1024**2)
        table_options = BlockBasedOptions()
        table_options.set_block_cache(self._cache)
        table_options.set_bloom_filter(10, True)
        options.set_block_based_table_factory(table_options)
        return options

    def open(self, partition: int) -> Rdict:
        if partition not in self._dbs:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._dbs[partition] = Rdict(str(self.path(partition)), options=self._options())
        return self._dbs[partition]

    def db(self, partition: int) -> Rdict:
        """The open RocksDB of an owned partition (KeyError if it is not owned)."""
        return self._dbs[partition]

    @property
    def partitions(self) -> list[int]:
        return sorted(self._dbs)

    def persisted_offset(self, partition: int) -> int | None:
        raw = self.open(partition).get(OFFSET_KEY)
        return None if raw is None else int(raw)

    def write(self, partition: int, items: Iterable[tuple[bytes, bytes | None]], changelog_offset: int | None) -> None:
        """Put (or, for a None value, delete) ``items`` and record ``changelog_offset``, atomically."""
        batch = WriteBatch(raw_mode=True)
        for key, value in items:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        if changelog_offset is not None:
            batch.put(OFFSET_KEY, str(changelog_offset).encode())
        self.open(partition).write(batch)

    def close(self, partition: int) -> None:
        db = self._dbs.pop(partition, None)
        if db is not None:
            db.close()

    def close_all(self) -> None:
        for partition in list(self._dbs):
            self.close(partition)


def read_state(table: Mapping[bytes, bytes | None], user_id: str) -> UserState | None:
    """A user's stored state; None for a new user, or (logged) for bytes that do not decode."""
    raw = table.get(user_id.encode())
    if raw is None:
        return None
    try:
        return decode_state(raw)
    except StateDecodeError:
        logger.exception("unreadable state for user %r; starting afresh", user_id)
        return None


def table_partitions(data_dir: Path, table: str = USER_STATES_TABLE) -> list[Path]:
    """The RocksDB folders of ``table`` under a worker's data dir, one per partition."""
    return sorted(Path(data_dir).glob(f"v*/tables/{table}-*.db"))


def read_user_states(data_dir: Path) -> dict[str, UserState]:
    """Every user's state held in a (stopped) worker's RocksDB ``user-states`` table."""
    states: dict[str, UserState] = {}
    for path in table_partitions(data_dir):
        db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            for key, value in db.items():
                if value is not None and not key.startswith(FAUST_RESERVED_PREFIX):
                    states[key.decode()] = decode_state(value)
        finally:
            db.close()
    return states
