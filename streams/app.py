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
from streamrec.core.interest import InterestParams
from streams.shell import interest_params
from streamrec.kafka.clients import faust_app_options
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
    register: Callable[[StreamrecApp], None],
) -> StreamrecApp:
    """Build the app; raises :class:`indexing.artifact.ArtifactError` when no usable model exists.

    ``register`` adds the agents: :func:`streams.agents.register_agents` for the worker; the
    benchmark's naive baseline passes its own, so both run on the very same app.
    """
    params = params or interest_params(settings)
    faiss.omp_set_num_threads(settings.index.search_threads)
    model = ModelHolder.from_settings(settings)
    kafka = settings.kafka
    worker = settings.worker
    app = faust.App(worker.app_id, **faust_app_options(settings))
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
