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
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
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
    #: A validation error never echoes the input: it may hold the password.
    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    bootstrap: str = "127.0.0.1:9092"
    events_topic: str = "events"
    recommendations_topic: str = "recommendations"
    dlq_topic: str = "events-dlq"
    #: The catalog: a compacted topic keyed by item_id (streamrec.contract.CatalogItem).
    items_topic: str = "items"
    #: Model versions, distributed to every worker: a compacted topic (indexing.distribute).
    models_topic: str = "models"
    #: Erasure requests (``streamrec forget``): a compacted topic keyed by user_id
    #: (streamrec.privacy, docs/security.md).
    erasures_topic: str = "erasures"
    #: Attribution aggregates, published by ``streamrec attribute`` (docs/business.md).
    attribution_topic: str = "attribution"
    #: Demand forecasts per series: a compacted topic keyed by series (streamrec.forecasting.service).
    forecasts_topic: str = "forecasts"
    partitions: int = Field(4, ge=1)
    #: Extra topic settings for every compacted topic streamrec creates (the catalog, the
    #: changelog, the erasures), e.g. ``{"max.compaction.lag.ms": "3600000"}``: how soon an
    #: erased user's records are cleaned away (docs/security.md).
    compacted_configs: dict[str, str] = Field(default_factory=dict)
    #: How clients reach the broker: ``PLAINTEXT`` (the local default), ``SSL`` (TLS only),
    #: ``SASL_SSL`` (TLS and a user name and password; what ``streamrec kafka up --secure``
    #: serves) or ``SASL_PLAINTEXT``. docs/security.md describes a secure deployment.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    #: A secret: never in logs, reprs or error messages.
    sasl_password: SecretStr | None = None
    #: PEM file of the certificate authority that signed the broker's certificate; None trusts
    #: the system's authorities.
    ssl_cafile: Path | None = None

    @model_validator(mode="after")
    def _credentials_complete(self) -> KafkaSettings:
        """SASL needs a user name and a password; TLS settings need a TLS protocol."""
        if self.security_protocol.startswith("SASL_") and (not self.sasl_username or self.sasl_password is None):
            raise ValueError(
                f"kafka.security_protocol {self.security_protocol} needs kafka.sasl_username and "
                "kafka.sasl_password (STREAMREC_KAFKA__SASL_USERNAME, STREAMREC_KAFKA__SASL_PASSWORD)")
        if self.ssl_cafile is not None and not self.security_protocol.endswith("SSL"):
            raise ValueError(f"kafka.ssl_cafile is set but kafka.security_protocol is {self.security_protocol}, "
                             "which does not use TLS; use SSL or SASL_SSL")
        return self

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")


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
    #: ``streamrec kafka up --secure``: a TLS listener with SASL/SCRAM users and ACLs instead of
    #: the open plaintext one (docs/security.md).
    secure: bool = False


class IndexSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    #: Folder holding versioned model artifacts (``v000001/``, ...) and the ``LATEST`` pointer.
    models_dir: Path = Field(default_factory=lambda: state_paths(default_home())["models_dir"])
    #: FAISS factory string; ``auto`` picks one from the catalog size (see indexing.index).
    factory: str = "Flat"
    #: Put the index on a GPU when FAISS sees one.
    use_gpu: bool = True
    #: recall@10 (against exact search) an approximate index is calibrated to when a model is
    #: built: the smallest IVF nprobe / HNSW efSearch reaching it is saved with the model.
    target_recall: float = Field(0.95, gt=0, le=1)
    #: Override of the calibrated IVF nprobe / HNSW efSearch (none: the model's own).
    nprobe: int | None = Field(None, ge=1)
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
    #: Per-event decay of the long-term taste vector (0: off; docs/model.md). The worker and the
    #: trainers read it: a model version trained with it carries the taste map.
    taste_decay: float = Field(0.0, ge=0, lt=1)
    #: Weight of the neighbour step that lists items following the user's last items, and of
    #: the popular items among its candidates (0: off; docs/model.md, chosen on validation in
    #: docs/quality.md). A model version without neighbours is served without the step.
    knn_weight: float = Field(0.03, ge=0)
    pop_weight: float = Field(0.001, ge=0)
    #: Weight of the factor step that fuses the user's ALS list (a second factor space of the
    #: whole user x item matrix, folded in from the recent events) with the served list by
    #: reciprocal rank (0: off; "auto": each model version's own weight, chosen at its training on
    #: the shop's held-out events, 0 where the step does not clearly pay; docs/model.md, measured
    #: in docs/quality.md). The worker and the trainers read it: a model version trained with it
    #: carries the item factors.
    factor_weight: Annotated[float, Field(ge=0)] | Literal["auto"] = "auto"
    #: Whether the factor step's list may hold the user's recent items (false: bringing them back
    #: is the repeat step's alone; "auto": each version's own answer, chosen with its weight).
    factor_repeats: bool | Literal["auto"] = "auto"
    #: How long the factor list and the served list it is fused with are (where the step runs).
    factor_depth: int = Field(50, ge=1)


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
    #: Compression of the batch engine's output batches (recommendations and changelog), done
    #: in librdkafka's own threads; docs/performance.md, "Settings and why".
    compression: Literal["none", "lz4", "zstd", "snappy", "gzip"] = "none"


class PrivacySettings(BaseModel):
    """Pseudonymous user ids (docs/security.md)."""

    model_config = ConfigDict(frozen=True)

    #: The HMAC-SHA256 key that turns user ids into pseudonyms (``produce --pseudonymize``,
    #: ``streamrec pseudonym``, ``EventPublisher(pseudonymizer=...)``); at least 16 characters.
    #: A secret: never logged, never shown in an error.
    user_id_key: SecretStr | None = None


class ServeSettings(BaseModel):
    """``streamrec serve``'s HTTP API (docs/serving.md, docs/security.md)."""

    model_config = ConfigDict(frozen=True)

    #: When set, every route but ``/healthz`` needs ``Authorization: Bearer <token>``.
    token: SecretStr | None = None
class VariantSettings(BaseModel):
    """One arm of an experiment (streamrec.core.experiments.Variant)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1)
    #: Relative share of users.
    weight: float = Field(1.0, gt=0)
    #: ``model``: the served model's list; ``params``: the served model with the query vector
    #: re-derived under ``event_weights``/``event_decay``/``half_life_s``; ``trending``: the
    #: shop's trending items (a non-personalised control).
    kind: Literal["model", "params", "trending"] = "model"
    event_weights: dict[str, float] | None = None
    event_decay: float | None = None
    half_life_s: float | None = None


class ExperimentSettings(BaseModel):
    """A named experiment; the first variant is the control."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1)
    #: Salt of the user hash: a new salt reshuffles the users between variants.
    salt: str = Field(min_length=1)
    variants: tuple[VariantSettings, ...] = Field(min_length=2)


class AttributionSettings(BaseModel):
    """How ``streamrec attribute`` credits actions to lists (docs/business.md)."""

    model_config = ConfigDict(frozen=True)

    #: An action without a list_id counts for a list that held its item and was published for
    #: the user at most this long (event time) before it.
    window_s: float = Field(24 * 3600.0, gt=0)
    #: Newest lists kept per user for window attribution.
    lists_per_user: int = Field(32, ge=1)
    #: How often the job publishes the aggregates that changed, in seconds.
    publish_every_s: float = Field(2.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMREC_", env_nested_delimiter="__", frozen=True,
                                      hide_input_in_errors=True)

    #: The folder all local state goes under (``STREAMREC_HOME``; default: the working directory).
    home: Path = Field(default_factory=default_home)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    local_kafka: LocalKafkaSettings = Field(default_factory=LocalKafkaSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    rules: RulesSettings = Field(default_factory=RulesSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    #: Experiments (``STREAMREC_EXPERIMENTS`` as JSON); at most one runs: its variant is stamped on
    #: every list (``streamrec.core.experiments.experiment_from_dict`` turns it into the core's).
    experiments: tuple[ExperimentSettings, ...] = ()
    attribution: AttributionSettings = Field(default_factory=AttributionSettings)
    #: The shared datasets (``STREAMREC_DATASETS_DIR``; default: ``<home>/../shared/datasets``).
    datasets_dir: Path = Field(default_factory=lambda: state_paths(default_home())["datasets_dir"])

    @model_validator(mode="after")
    def _one_experiment(self) -> Settings:
        if len(self.experiments) > 1:
            raise ValueError(f"at most one experiment runs at a time (users are split once), got {len(self.experiments)}: "
                             + ", ".join(e.name for e in self.experiments))
        for experiment in self.experiments:
            names = [v.name for v in experiment.variants]
            if len(set(names)) != len(names):
                raise ValueError(f"experiment {experiment.name!r} has variants with the same name: {names}")
            for v in experiment.variants:
                if v.kind == "params" and v.event_weights is None and v.event_decay is None and v.half_life_s is None:
                    raise ValueError(f"variant {v.name!r} of kind params sets none of event_weights, event_decay, half_life_s")
        return self

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


def _field_path(loc: tuple[Any, ...], model: type[BaseModel]) -> tuple[tuple[str | int, ...], bool]:
    """The leading part of an error's ``loc`` that names settings fields and tuple positions (the
    rest are union members' tags), and whether the field holds a secret."""
    path: list[str | int] = []
    current: Any = model
    secret = False
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if isinstance(part, int) and path:
            path.append(part)  # an element of a tuple of parts (experiments, variants)
            continue
        if not isinstance(part, str) or fields is None or part not in fields:
            break
        path.append(part)
        annotation = fields[part].annotation
        secret = "SecretStr" in repr(annotation)
        inner = [a for a in getattr(annotation, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
        current = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else (inner[0] if inner else None)
    return tuple(path), secret


def _names(path: tuple[str | int, ...]) -> tuple[str, str]:
    """The environment variable that sets ``path`` and its dotted name (a path into a JSON list is set
    by the list's variable)."""
    named = path[:next((i for i, p in enumerate(path) if isinstance(p, int)), len(path))]
    variable = "STREAMREC_" + "__".join(str(p).upper() for p in named)
    dotted = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return variable, dotted


def explain_settings_error(exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    """One line per bad setting, naming its environment variable and what it accepts.

    >>> try:
    ...     Settings(rules={"factor_weight": "sometimes", "knn_weight": -1})
    ... except ValidationError as exc:
    ...     print(explain_settings_error(exc))
    invalid setting STREAMREC_RULES__KNN_WEIGHT (rules.knn_weight) = '-1': should be greater than or equal to 0
    invalid setting STREAMREC_RULES__FACTOR_WEIGHT (rules.factor_weight) = 'sometimes': should be a valid number, unable to parse string as a number, or 'auto'
    >>> try:
    ...     Settings(experiments=[{"name": "a"}])
    ... except ValidationError as exc:
    ...     print(explain_settings_error(exc))
    invalid setting STREAMREC_EXPERIMENTS (experiments[0].salt): is required
    invalid setting STREAMREC_EXPERIMENTS (experiments[0].variants): is required
    """
    model = model or Settings
    problems: dict[tuple[str | int, ...], list[str]] = {}
    shown: dict[tuple[str | int, ...], str] = {}
    for error in exc.errors():
        path, secret = _field_path(tuple(error.get("loc", ())), model)
        message = "is required" if error.get("type") == "missing" else str(error.get("msg", "is not valid"))
        if message.startswith("Input should be "):
            message = "should be " + message[len("Input should be "):]
        message = message.removeprefix("Value error, ").strip()
        problems.setdefault(path, []).append(message)
        if "input" in error and not secret and not isinstance(error["input"], (dict, list, tuple)):
            shown[path] = f" = {str(error['input'])!r}"
    lines = []
    for path, messages in problems.items():
        unique = list(dict.fromkeys(messages))
        said = unique[0] + "".join(", or " + m.removeprefix("should be ") for m in unique[1:])
        if not path:
            lines.append(f"invalid settings: {said}")
            continue
        variable, dotted = _names(path)
        lines.append(f"invalid setting {variable} ({dotted}){shown.get(path, '')}: {said}")
    return "\n".join(lines)
