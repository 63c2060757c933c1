"""The Faust application: topics, the ``user-states`` table (RocksDB via rocksdict) and agents.

``create_app(settings)`` builds a fresh app (tests build several, one per broker); the
``streamrec worker`` command runs it. Events are read as raw bytes and decoded by the
contract in the agent, so a malformed message never reaches Faust's own decoder and can be
dead-lettered with its original bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import faust

from streamrec.config import Settings
from streamrec.contract import DLQ_MAX_MESSAGE_BYTES
from streams.interest import InterestParams
from streams.model import ModelHolder
from streams.tables import USER_STATES_TABLE

logger = logging.getLogger(__name__)



@dataclass
class StreamrecApp:
    app: faust.App
    events_topic: faust.TopicT
    recommendations_topic: faust.TopicT
    dlq_topic: faust.TopicT
    user_states: faust.Table
    model: ModelHolder
    params: InterestParams
    settings: Settings


def create_app(
    settings: Settings,
    params: InterestParams | None = None,
    *,
    register: Callable[[StreamrecApp], None] | None = None,
) -> StreamrecApp:
    """Build the app; raises :class:`indexing.artifact.ArtifactError` when no usable model exists.

    ``register`` adds the agents (default: :func:`streams.agents.register_agents`); the
    benchmark's naive baseline passes its own, so both run on the very same app.
    """
    if register is None:
        from streams.agents import register_agents as register

    params = params or InterestParams()
    faiss.omp_set_num_threads(settings.index.search_threads)
    model = ModelHolder.from_settings(settings)
    kafka = settings.kafka
    worker = settings.worker
    app = faust.App(
        worker.app_id,
        broker=f"kafka://{kafka.bootstrap}",
        store="rocksdb://",
        datadir=str(worker.data_dir),
        topic_partitions=kafka.partitions,
        topic_replication_factor=1,
        web_enabled=False,
        web_port=worker.web_port,
        # Recommendations and changelog writes leave in few, large produce requests: aiokafka's
        # default 16 kB batches made socket writes a tenth of the worker's time.
        producer_linger_ms=10,
        producer_max_batch_size=1024 * 1024,
        producer_acks=-1,
        producer_max_request_size=DLQ_MAX_MESSAGE_BYTES + 64 * 1024,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=max(4 * worker.batch_size, 4096),
        broker_max_poll_records=worker.batch_size,
        broker_commit_every=max(worker.batch_size, 1000),
        table_cleanup_interval=600.0,
        table_standby_replicas=worker.standby_replicas,
        broker_session_timeout=worker.session_timeout_s,
        broker_heartbeat_interval=min(3.0, worker.session_timeout_s / 4),
        rocksdb_options={"block_cache_size": 64 * 1024**2, "block_cache_compressed_size": 0, "write_buffer_size": 16 * 1024**2},
    )
    events_topic = app.topic(kafka.events_topic, key_serializer="raw", value_serializer="raw", partitions=kafka.partitions)
    recommendations_topic = app.topic(
        kafka.recommendations_topic, key_serializer="raw", value_serializer="raw", partitions=kafka.partitions
    )
    dlq_topic = app.topic(kafka.dlq_topic, key_serializer="raw", value_serializer="raw", partitions=kafka.partitions)
    user_states = app.Table(
        USER_STATES_TABLE,
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=kafka.partitions,
        options={"driver": "rocksdict"},
    )
    bundle = StreamrecApp(app, events_topic, recommendations_topic, dlq_topic, user_states, model, params, settings)
    register(bundle)
    return bundle
