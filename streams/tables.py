"""Reading the worker's RocksDB tables offline (for inspection, tests and recovery checks).

While a worker runs, its tables belong to it; these helpers open a stopped worker's
``user-states`` partitions read-only (rocksdict, raw mode, as Faust writes them).
"""

from __future__ import annotations

from pathlib import Path

from rocksdict import AccessType, Options, Rdict

from streams.state import UserState, decode_state

USER_STATES_TABLE = "user-states"
#: Faust keeps its own bookkeeping (the persisted changelog offset) in each partition's DB.
FAUST_RESERVED_PREFIX = b"__faust"


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
