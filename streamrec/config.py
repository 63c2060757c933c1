"""Typed, frozen settings: one object, one env prefix (``STREAMREC_``), split into parts.

Nested fields read from ``STREAMREC_<PART>__<FIELD>``, e.g. ``STREAMREC_KAFKA__BOOTSTRAP``.

State lives under a *home* folder, ``STREAMREC_HOME`` (default: the current working
directory), never beside the installed package: ``<home>/.kafka`` (the local broker, its jars
in ``<home>/.kafka/lib``), ``<home>/.worker`` (the worker's RocksDB tables), ``<home>/models``
(model versions). Each can still be moved on its own (``STREAMREC_LOCAL_KAFKA__HOME``,
``STREAMREC_WORKER__DATA_DIR``, ``STREAMREC_INDEX__MODELS_DIR``). The shared datasets are read
from ``STREAMREC_DATASETS_DIR``, falling back to ``<home>/../shared/datasets``.
Numerical hyper-parameters of the model live in :mod:`streamrec.core.interest` as a plain frozen
dataclass so that the numerical core never imports pydantic.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Environment variable naming the folder that holds all local state.
HOME_ENV_VAR = "STREAMREC_HOME"


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    """The state folder: ``$STREAMREC_HOME`` if set, else the current working directory.

    >>> default_home({"STREAMREC_HOME": "/srv/streamrec"})
    PosixPath('/srv/streamrec')
    >>> default_home({}) == Path.cwd()
    True
    """
    env = os.environ if environ is None else environ
    value = env.get(HOME_ENV_VAR)
    return Path(value).expanduser().absolute() if value else Path.cwd()


def state_paths(home: Path) -> dict[str, Path]:
    """Where each kind of state goes under ``home``.

    >>> sorted((name, str(path)) for name, path in state_paths(Path("/h")).items())
    [('datasets_dir', '/shared/datasets'), ('kafka_home', '/h/.kafka'), ('models_dir', '/h/models'), ('worker_data_dir', '/h/.worker')]
    """
    return {
        "kafka_home": home / ".kafka",
        "models_dir": home / "models",
        "worker_data_dir": home / ".worker",
        "datasets_dir": home.parent / "shared" / "datasets",
    }


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


class LocalKafkaSettings(BaseModel):
    """Where ``streamrec kafka up`` keeps the broker's jars, data and logs."""

    model_config = ConfigDict(frozen=True)

    home: Path = Field(default_factory=lambda: state_paths(default_home())["kafka_home"])
    port: int = Field(9092, ge=1, le=65535)
    controller_port: int = Field(9093, ge=1, le=65535)
    heap: str = "1g"
    #: Extra JVM options of the local broker. C1 only: on two cores the C2 compiler costs the
    #: broker more CPU than it saves (docs/performance.md, "Settings and why").
    jvm_options: tuple[str, ...] = ("-XX:TieredStopAtLevel=1",)


class IndexSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    #: Folder holding versioned model artifacts (``v000001/``, ...) and the ``LATEST`` pointer.
    models_dir: Path = Field(default_factory=lambda: state_paths(default_home())["models_dir"])
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
    #: Weight of the repeat step that brings back items of the user's recent events (0: off;
    #: docs/model.md, chosen on validation in docs/quality.md).
    repeat_weight: float = Field(0.3, ge=0)
    #: Strength λ of the optional diversity step, MMR over 3k candidates (0: off).
    diversity: float = Field(0.0, ge=0, le=1)


class WorkerSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    #: ``batch``: the librdkafka micro-batch engine (streams/engine.py), the fast default;
    #: ``faust``: the Faust agent (streams/agents.py). Both keep the same RocksDB table and
    #: changelog, so a worker can switch between them and keep its users' state.
    engine: Literal["batch", "faust"] = "batch"
    app_id: str = "streamrec"
    data_dir: Path = Field(default_factory=lambda: state_paths(default_home())["worker_data_dir"])
    #: Most events per micro-batch. The batch engine takes whatever is queued up to this, so
    #: a quiet shop gets small, fast batches; under a backlog larger batches coalesce more of
    #: a user's events into one recommendation and mean fewer produce requests and commits
    #: (the broker's main cost; docs/performance.md, "Settings and why").
    batch_size: int = Field(20_000, ge=1)
    batch_within_s: float = Field(0.05, gt=0)
    #: Both engines commit source offsets at most this often (and on every rebalance
    #: and shutdown); a crash replays the rest, which the states recognise.
    commit_interval_s: float = Field(1.0, ge=0)
    #: How often the worker looks for a newer model version, in seconds.
    model_poll_s: float = Field(10.0, gt=0)
    #: A worker that stops heart-beating is declared dead after this long and its
    #: partitions move to the others.
    session_timeout_s: float = Field(10.0, gt=0)
    #: Standby copies of each table partition kept warm on other workers.
    standby_replicas: int = Field(1, ge=0)
    #: Port of the worker's Prometheus ``/metrics`` (docs/operations.md); 0 serves none.
    metrics_port: int = Field(9108, ge=0, le=65535)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMREC_", env_nested_delimiter="__", frozen=True)

    #: The folder all local state goes under (``STREAMREC_HOME``; default: the working directory).
    home: Path = Field(default_factory=default_home)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    local_kafka: LocalKafkaSettings = Field(default_factory=LocalKafkaSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    rules: RulesSettings = Field(default_factory=RulesSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    #: The shared datasets (``STREAMREC_DATASETS_DIR``; default: ``<home>/../shared/datasets``).
    datasets_dir: Path = Field(default_factory=lambda: state_paths(default_home())["datasets_dir"])

    @model_validator(mode="before")
    @classmethod
    def _paths_under_home(cls, data: Any) -> Any:
        """Place every path not given explicitly under ``home`` (when ``home`` is given)."""
        if not isinstance(data, dict) or data.get("home") is None:
            return data
        paths = state_paths(Path(data["home"]).expanduser().absolute())
        data = {**data, "home": Path(data["home"]).expanduser().absolute()}
        data.setdefault("datasets_dir", paths["datasets_dir"])
        for part, field, key in (("local_kafka", "home", "kafka_home"), ("index", "models_dir", "models_dir"),
                                 ("worker", "data_dir", "worker_data_dir")):
            given = data.get(part)
            if given is None:
                data[part] = {field: paths[key]}
            elif isinstance(given, dict) and field not in given:
                data[part] = {**given, field: paths[key]}
        return data


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
