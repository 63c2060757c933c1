"""The Kafka client settings of the worker, for both engines: librdkafka's (the batch engine)
and Faust's (the Faust agent), derived from the one settings object. Why each value was chosen,
with the measurements, is in docs/performance.md."""

from __future__ import annotations

from typing import Any

from streamrec.config import Settings
from streamrec.contract import DLQ_MAX_MESSAGE_BYTES
from streamrec.kafka.security import client_config, faust_credentials

#: Largest produce request: a dead letter of the largest accepted size, and some room.
MAX_REQUEST_BYTES = DLQ_MAX_MESSAGE_BYTES + 64 * 1024
#: ``fetch.wait.max.ms`` of the consumers that follow slow topics (the catalog; serve's replica):
#: with ``fetch.min.bytes`` 1 the broker answers as soon as a record arrives, so this only bounds
#: how often an idle consumer asks again.
IDLE_FETCH_WAIT_MS = 500


def worker_client_configs(settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """librdkafka settings of the batch engine's consumer and producer."""
    kafka, worker = settings.kafka, settings.worker
    session_ms = int(worker.session_timeout_s * 1000)
    consumer = {
        **client_config(kafka.bootstrap, kafka),
        "group.id": worker.app_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": session_ms,
        "heartbeat.interval.ms": max(100, min(3000, session_ms // 4)),
        "partition.assignment.strategy": "range",
        # A fetch waits up to 5 ms for 64 kB rather than returning each trickle: fetches cost
        # the broker CPU.
        "fetch.wait.max.ms": 5,
        "fetch.min.bytes": 64 * 1024,
        "log_level": 4,
    }
    producer = {
        **client_config(kafka.bootstrap, kafka),
        "acks": "all",
        "enable.idempotence": True,
        # A batch's output leaves in a few large produce requests rather than many small ones;
        # it is settled a batch later, and the engine flushes at once when the stream goes quiet.
        "linger.ms": 20,
        "batch.num.messages": 10_000,
        "batch.size": 1024 * 1024,
        "queue.buffering.max.messages": 1_000_000,
        "message.max.bytes": MAX_REQUEST_BYTES,
        # Same partitioner as Java clients and aiokafka: a user's messages land where Faust's would.
        "partitioner": "murmur2_random",
        "compression.type": worker.compression,
        "log_level": 4,
    }
    return consumer, producer


def faust_app_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``faust.App`` for the Faust agent (the same settings, Faust's names)."""
    kafka, worker = settings.kafka, settings.worker
    return dict(
        broker=f"kafka://{kafka.bootstrap}",
        # TLS and SASL of the settings (None for plaintext), for Faust's consumer, producer and admin.
        broker_credentials=faust_credentials(kafka),
        store="rocksdb://",
        datadir=str(worker.data_dir),
        topic_partitions=kafka.partitions,
        topic_replication_factor=1,
        web_enabled=False,
        # Lists and changelog writes leave in few, large produce requests.
        producer_linger_ms=10,
        producer_max_batch_size=1024 * 1024,
        producer_acks=-1,
        producer_max_request_size=MAX_REQUEST_BYTES,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=max(4 * worker.batch_size, 4096),
        broker_max_poll_records=worker.batch_size,
        # Offsets are committed at most every commit_interval_s, as the batch engine does (or
        # after 10,000 events / one full batch, whichever is more, if that comes first).
        broker_commit_every=max(worker.batch_size, 10_000),
        broker_commit_interval=worker.commit_interval_s if worker.commit_interval_s > 0 else 2.8,
        table_cleanup_interval=600.0,
        table_standby_replicas=worker.standby_replicas,
        broker_session_timeout=worker.session_timeout_s,
        broker_heartbeat_interval=min(3.0, worker.session_timeout_s / 4),
        rocksdb_options={"block_cache_size": 64 * 1024**2, "block_cache_compressed_size": 0, "write_buffer_size": 16 * 1024**2},
    )
