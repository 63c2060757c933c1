"""How soon an erased user's records leave a compacted topic (docs/security.md).

Starts its own broker on free ports, creates a one-partition compacted topic with
``max.compaction.lag.ms`` and ``delete.retention.ms`` (everything else at Kafka's defaults, so
``segment.ms`` is 7 days and ``min.cleanable.dirty.ratio`` 0.5), writes ten users' states and the
erased user's state, then the tombstone, and reads the topic from the beginning every second
until neither the state nor the tombstone is left; with ``--writes`` another key is written every
second (a shop whose events keep flowing), without it the partition stays idle::

    python -m streamrec.benchmarks.compaction --lag-ms 10000 --delete-retention-ms 5000 --writes
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from streamrec.config import LocalKafkaSettings
from streamrec.kafka import KafkaLauncher
from streamrec.kafka.admin import ensure_topics

TOPIC = "changelog"


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _read(bootstrap: str) -> list[tuple[bytes | None, bytes | None]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "enable.partition.eof": True})
    consumer.assign([TopicPartition(TOPIC, 0, OFFSET_BEGINNING)])
    records = []
    try:
        while True:
            for message in consumer.consume(100, timeout=1.0):
                if message.error() is None:
                    records.append((message.key(), message.value()))
                elif message.error().code() == KafkaError._PARTITION_EOF:
                    return records
    finally:
        consumer.close()


def measure(lag_ms: int, delete_retention_ms: int, backoff_ms: int, writes: bool, limit_s: float) -> dict:
    launcher = KafkaLauncher(LocalKafkaSettings(home=Path(tempfile.mkdtemp()), port=_free_port(),
                                                controller_port=_free_port(), heap="512m"),
                             lib_dir=LocalKafkaSettings().home / "lib")
    launcher.up(timeout=120)
    try:
        bootstrap = launcher.bootstrap
        admin = AdminClient({"bootstrap.servers": bootstrap})
        broker = str(next(iter(admin.list_topics(timeout=10).brokers)))
        backoff = ConfigResource(ConfigResource.Type.BROKER, broker, incremental_configs=[
            ConfigEntry("log.cleaner.backoff.ms", str(backoff_ms), incremental_operation=AlterConfigOpType.SET)])
        for future in admin.incremental_alter_configs([backoff]).values():
            future.result(timeout=30)
        ensure_topics(bootstrap, {TOPIC: 1}, configs={TOPIC: {
            "cleanup.policy": "compact", "max.compaction.lag.ms": str(lag_ms), "delete.retention.ms": str(delete_retention_ms)}})
        producer = Producer({"bootstrap.servers": bootstrap})
        for n in range(10):
            producer.produce(TOPIC, b"state", f"user-{n}".encode())
        producer.produce(TOPIC, b"state-of-the-erased-user", b"erased")
        producer.flush()
        time.sleep(1.0)
        producer.produce(TOPIC, None, b"erased")
        producer.flush()
        started = time.monotonic()
        state_gone = tombstone_gone = None
        while time.monotonic() - started < limit_s:
            records = _read(bootstrap)
            if state_gone is None and (b"erased", b"state-of-the-erased-user") not in records:
                state_gone = round(time.monotonic() - started, 1)
            if not any(key == b"erased" for key, _ in records):
                tombstone_gone = round(time.monotonic() - started, 1)
                break
            if writes:
                producer.produce(TOPIC, b"state", f"other-{int(time.monotonic())}".encode())
                producer.flush()
            time.sleep(1.0)
        return {"max.compaction.lag.ms": lag_ms, "delete.retention.ms": delete_retention_ms,
                "log.cleaner.backoff.ms": backoff_ms, "writes_after_tombstone": writes, "watched_s": limit_s,
                "state_gone_after_s": state_gone, "tombstone_gone_after_s": tombstone_gone}
    finally:
        launcher.down()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lag-ms", type=int, default=10_000, help="max.compaction.lag.ms of the topic")
    parser.add_argument("--delete-retention-ms", type=int, default=5_000, help="delete.retention.ms of the topic")
    parser.add_argument("--backoff-ms", type=int, default=1_000, help="the broker's log.cleaner.backoff.ms")
    parser.add_argument("--writes", action="store_true", help="write another key every second after the tombstone")
    parser.add_argument("--limit-s", type=float, default=120.0, help="give up after this many seconds")
    args = parser.parse_args()
    print(json.dumps(measure(args.lag_ms, args.delete_retention_ms, args.backoff_ms, args.writes, args.limit_s)))


if __name__ == "__main__":
    main()
