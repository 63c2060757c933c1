"""Typed, frozen settings: one object, one env prefix (``STREAMREC_``), split into parts.

Nested fields read from ``STREAMREC_<PART>__<FIELD>``, e.g. ``STREAMREC_KAFKA__BOOTSTRAP``.
Numerical hyper-parameters of the model live in :mod:`streams.interest` as a plain frozen
dataclass so that the numerical core never imports pydantic.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class KafkaSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    bootstrap: str = "127.0.0.1:9092"
    events_topic: str = "events"
    recommendations_topic: str = "recommendations"
    dlq_topic: str = "events-dlq"
    #: The catalog: a compacted topic keyed by item_id (streamrec.contract.CatalogItem).
    items_topic: str = "items"
    #: Model versions, distributed to every worker: a compacted topic (indexing.distribute).
    models_topic: str = "models"
    partitions: int = Field(4, ge=1)
    #: SASL password for brokers that need one (unused by the local broker).
    sasl_password: SecretStr | None = None


class LocalKafkaSettings(BaseModel):
    """Where ``streamrec kafka up`` keeps the broker's jars, data and logs."""

    model_config = ConfigDict(frozen=True)

    home: Path = PROJECT_ROOT / ".kafka"
    port: int = Field(9092, ge=1, le=65535)
    controller_port: int = Field(9093, ge=1, le=65535)
    heap: str = "1g"
    #: Extra JVM options of the local broker. C1 only: on two cores the C2 compiler kept a
    #: third of a core busy through a 20 s benchmark; with C1 the broker used 11.8 instead of
    #: 17 CPU seconds at 2,000 events/s (`streamrec bench --rate 2000 --events 40000 --no-naive`,
    #: with and without STREAMREC_LOCAL_KAFKA__JVM_OPTIONS='[]').
    jvm_options: tuple[str, ...] = ("-XX:TieredStopAtLevel=1",)


class IndexSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    #: Folder holding versioned model artifacts (``v000001/``, ...) and the ``LATEST`` pointer.
    models_dir: Path = PROJECT_ROOT / "models"
    #: FAISS factory string; ``auto`` picks one from the catalog size (see indexing.index).
    factory: str = "Flat"
    #: Put the index on a GPU when FAISS sees one.
    use_gpu: bool = True
    #: IVF probes / HNSW efSearch for approximate indexes.
    nprobe: int = Field(32, ge=1)
    #: OpenMP threads FAISS may use in the worker. One leaves the other core to Faust's
    #: consumer thread and the broker; spinning OpenMP threads on a busy 2-core machine cost
    #: more than they give.
    search_threads: int = Field(1, ge=1)


class RulesSettings(BaseModel):
    """Business rules applied to every published list, and the live item side."""

    model_config = ConfigDict(frozen=True)

    #: Categories (any level of a catalog path, e.g. "Groceries") whose items may be
    #: recommended again after a purchase: consumables. Other purchased items never are.
    repeat_purchase_categories: tuple[str, ...] = ()
    #: Half-life, in event-time seconds, of the decayed counts that rank trending items.
    trending_half_life_s: float = Field(6 * 3600.0, gt=0)
    #: How many events of users on a new item weigh as much as its catalog prior: its vector
    #: moves from the prior to what its users say as they accumulate (docs/model.md).
    new_item_prior_events: float = Field(1.0, gt=0)


class WorkerSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    #: ``batch``: the librdkafka micro-batch engine (streams/engine.py), the fast default;
    #: ``faust``: the Faust agent (streams/agents.py). Both keep the same RocksDB table and
    #: changelog, so a worker can switch between them and keep its users' state.
    engine: Literal["batch", "faust"] = "batch"
    app_id: str = "streamrec"
    data_dir: Path = PROJECT_ROOT / ".worker"
    #: Most events per micro-batch. The batch engine takes whatever is queued up to this, so
    #: a quiet shop gets small, fast batches; under a backlog larger batches coalesce more of
    #: a user's events into one recommendation and mean fewer produce requests and commits
    #: (the broker's main cost). 12k items, flat out: 12,145 events/s at 5,000 and 15,469
    #: at 20,000 (docs/performance.md).
    batch_size: int = Field(20_000, ge=1)
    batch_within_s: float = Field(0.05, gt=0)
    #: The batch engine commits source offsets at most this often (and on every rebalance
    #: and shutdown); a crash replays the rest, which the states recognise.
    commit_interval_s: float = Field(1.0, ge=0)
    #: How often the worker looks for a newer model version, in seconds.
    model_poll_s: float = Field(10.0, gt=0)
    web_port: int = Field(6066, ge=1, le=65535)
    #: A worker that stops heart-beating is declared dead after this long and its
    #: partitions move to the others.
    session_timeout_s: float = Field(10.0, gt=0)
    #: Standby copies of each table partition kept warm on other workers.
    standby_replicas: int = Field(1, ge=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMREC_", env_nested_delimiter="__", frozen=True)

    kafka: KafkaSettings = KafkaSettings()
    local_kafka: LocalKafkaSettings = LocalKafkaSettings()
    index: IndexSettings = IndexSettings()
    rules: RulesSettings = RulesSettings()
    worker: WorkerSettings = WorkerSettings()
    datasets_dir: Path = PROJECT_ROOT.parent / "shared" / "datasets"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
