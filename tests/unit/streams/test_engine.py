"""The batch engine's pieces that need no broker: the partition store and delivery reports."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.config import Settings
from streamrec.core.state import UserState, encode_state
from streamrec.kafka.clients import worker_client_configs
from streams.engine import _Deliveries
from streams.tables import OFFSET_KEY, PartitionStore, changelog_topic, read_user_states


def state(n: int) -> bytes:
    return encode_state(UserState(vector=np.full(4, n, dtype=np.float32), last_ts=float(n), n_events=n, model_version="v1"))


def test_store_writes_states_and_changelog_offset_together_in_faust_layout(tmp_path) -> None:
    store = PartitionStore(tmp_path)
    assert store.persisted_offset(3) is None
    store.write(3, [(b"u1", state(1)), (b"u2", state(2))], changelog_offset=41)
    store.write(3, [(b"u2", state(5)), (b"u1", None)], changelog_offset=None)  # None keeps the old offset
    assert store.persisted_offset(3) == 41
    assert store.db(3).get(OFFSET_KEY) == b"41"
    store.close_all()
    assert store.partitions == []
    with pytest.raises(KeyError):
        store.db(3)
    # The offline reader (written for Faust's tables) sees exactly the live keys.
    assert store.path(3) == tmp_path / "v1" / "tables" / "user-states-3.db"
    states = read_user_states(tmp_path)
    assert set(states) == {"u2"} and states["u2"].n_events == 5


class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._t, self._p, self._o = topic, partition, offset

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o


class FakeError:
    def str(self) -> str:  # noqa: A003 - librdkafka's KafkaError API
        return "Broker: Message size too large"


def test_delivery_reports_keep_the_newest_changelog_offset_per_partition_and_every_error() -> None:
    reports = _Deliveries("app-user-states-changelog")
    for partition, offset in [(0, 7), (0, 5), (1, 2)]:
        reports(None, FakeMessage("app-user-states-changelog", partition, offset))
    reports(None, FakeMessage("recommendations", 0, 99))
    reports(FakeError(), FakeMessage("events-dlq", 1, -1))
    assert reports.offsets == {0: 7, 1: 2}
    assert reports.errors == ["events-dlq[1]: Broker: Message size too large"]
    reports.reset()
    assert (reports.offsets, reports.errors) == ({}, [])


def test_client_configs_follow_the_settings() -> None:
    settings = Settings(kafka={"bootstrap": "h:1"}, worker={"app_id": "shop", "session_timeout_s": 6})
    consumer, producer = worker_client_configs(settings)
    assert consumer["group.id"] == "shop" and consumer["session.timeout.ms"] == 6000
    assert consumer["enable.auto.commit"] is False
    assert producer["acks"] == "all" and producer["enable.idempotence"] is True
    assert producer["bootstrap.servers"] == consumer["bootstrap.servers"] == "h:1"
    assert changelog_topic("shop") == "shop-user-states-changelog"


def test_a_user_erased_in_a_batch_under_way_has_no_state_whatever_rocksdb_still_says(tmp_path) -> None:
    from types import SimpleNamespace

    from streamrec.core.batch import BatchResult
    from streams.engine import BatchEngine

    def under_way(result: BatchResult) -> SimpleNamespace:
        return SimpleNamespace(prepared=SimpleNamespace(result=result))

    class Raw:
        def key(self) -> bytes:
            return b"u1"

        def value(self) -> bytes:
            return b"{}"

        def partition(self) -> int:
            return 0

        def offset(self) -> int:
            return 9

    engine = BatchEngine.__new__(BatchEngine)  # only the pipeline's state reads: no broker, no model
    engine.store = PartitionStore(tmp_path)
    engine.store.write(0, [(b"u1", state(1)), (b"u2", state(2))], changelog_offset=3)  # not yet settled: stale
    engine.shell = SimpleNamespace(prepare=lambda messages, load: load)
    fresh = UserState(vector=np.full(4, 7, dtype=np.float32), last_ts=7.0, n_events=1, model_version="v1")
    cases = [
        (None, BatchResult(erased={"u1": 0}), None),  # erased in the batch being delivered
        (BatchResult(erased={"u1": 0}), BatchResult(states={"u1": (fresh, 0)}), None),  # the newest batch wins
        (BatchResult(states={"u1": (fresh, 0)}), BatchResult(erased={"u1": 0}), 1),  # back with new events
    ]
    for searched, delivering, n_events in cases:
        engine._pending = under_way(searched) if searched is not None else None
        engine._delivering = under_way(delivering)
        load = engine.prepare([Raw()]).prepared
        found = load("u1", 0)
        assert (found.n_events if found is not None else None) == n_events
        assert load("u2", 0).n_events == 2  # others still come from RocksDB
    engine.store.close_all()
