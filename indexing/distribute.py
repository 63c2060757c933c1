"""Model versions distributed through a compacted Kafka topic (``kafka.models_topic``).

Workers on other machines get every version without a shared folder. Records on the topic:

``<version>/chunk/<n>``
    raw bytes: chunk ``n`` of the version's files concatenated in the manifest's order
    (:data:`CHUNK_BYTES` each, the last one shorter).
``<version>/manifest``
    JSON, written after all chunks: the files (name, size, sha256), the sha256 of every chunk
    and of the whole, the number of chunks, and the version's ``meta.json`` (training summary
    and gate scores), so ``streamrec model list`` needs no chunk.
``serving``
    JSON: the version workers must serve and the ``history`` of promoted versions (oldest
    first, the serving one last), so ``rollback`` can go back one step.

Every key is unique to what it holds, so compaction only drops superseded ``serving``
records and re-published copies of a version. A version is adopted only when its manifest
has arrived, every chunk is present and every checksum matches; a corrupt or incomplete
one is reported (which chunk, which file, expected and actual sha256) and never served.

The pure core (:func:`split_files`, :class:`TopicState`, :func:`assemble`,
:func:`serving_after_promote`, :func:`serving_after_rollback`) knows nothing about Kafka;
:class:`ModelPublisher` and :func:`read_models_topic` are the I/O shell; the worker follows the
topic with :class:`indexing.feed.ModelFeed`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexing.artifact import version_number
from streamrec.kafka.security import client_config

logger = logging.getLogger(__name__)

#: Size of one chunk record.
CHUNK_BYTES = 512 * 1024
#: ``max.message.bytes`` of the models topic and of its producers: a chunk plus room for a
#: manifest of a large model (a sha256 per chunk).
MAX_MESSAGE_BYTES = 2 * 1024 * 1024
SERVING_KEY = "serving"
#: Files of a version, in the order they are chunked.
MODEL_FILES = ("meta.json", "item_ids.json", "context.npy", "index.faiss")


class DistributionError(RuntimeError):
    """A version on the models topic that cannot be used, or a request that cannot be met."""


class IncompleteVersion(DistributionError):
    """A version whose manifest or some of whose chunks have not arrived."""


class CorruptVersion(DistributionError):
    """A version whose bytes do not match its manifest's checksums."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunk_key(version: str, n: int) -> str:
    return f"{version}/chunk/{n}"


def manifest_key(version: str) -> str:
    return f"{version}/manifest"


# --------------------------------------------------------------------------- pure core


def split_files(
    version: str, files: Mapping[str, bytes], *, chunk_bytes: int = CHUNK_BYTES, published_at: float | None = None
) -> tuple[list[bytes], dict[str, Any]]:
    """Chunks and manifest of a version's ``files`` (``{name: content}``, chunked in that order).

    >>> chunks, manifest = split_files("v000001", {"meta.json": b'{"version": "v000001"}', "a": b"xyz"}, chunk_bytes=8)
    >>> [len(c) for c in chunks], manifest["chunks"], [f["name"] for f in manifest["files"]]
    ([8, 8, 8, 1], 4, ['meta.json', 'a'])
    """
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    if "meta.json" not in files:
        raise ValueError(f"version {version} has no meta.json")
    whole = b"".join(files.values())
    chunks = [whole[i : i + chunk_bytes] for i in range(0, len(whole), chunk_bytes)]
    manifest = {
        "version": version,
        "files": [{"name": name, "size": len(data), "sha256": sha256(data)} for name, data in files.items()],
        "size": len(whole),
        "sha256": sha256(whole),
        "chunks": len(chunks),
        "chunk_bytes": chunk_bytes,
        "chunk_sha256": [sha256(c) for c in chunks],
        "meta": json.loads(files["meta.json"]),
        "published_at": time.time() if published_at is None else published_at,
    }
    return chunks, manifest


def version_records(
    version: str, files: Mapping[str, bytes], *, chunk_bytes: int = CHUNK_BYTES
) -> list[tuple[str, bytes]]:
    """The records that publish a version, in order: every chunk, then the manifest."""
    chunks, manifest = split_files(version, files, chunk_bytes=chunk_bytes)
    records = [(chunk_key(version, n), chunk) for n, chunk in enumerate(chunks)]
    records.append((manifest_key(version), json.dumps(manifest).encode()))
    return records


def _file_of(manifest: Mapping[str, Any], chunk: int) -> list[str]:
    """Names of the files chunk ``chunk`` holds bytes of."""
    start, end = chunk * manifest["chunk_bytes"], (chunk + 1) * manifest["chunk_bytes"]
    names, offset = [], 0
    for entry in manifest["files"]:
        if offset < end and offset + entry["size"] > start:
            names.append(entry["name"])
        offset += entry["size"]
    return names


def assemble(manifest: Mapping[str, Any], chunks: Mapping[int, bytes]) -> dict[str, bytes]:
    """The version's files from its chunks; raises :class:`IncompleteVersion` naming the
    missing chunks, or :class:`CorruptVersion` naming every chunk and file whose size or
    sha256 differs from the manifest (expected and actual)."""
    version = manifest["version"]
    missing = [n for n in range(manifest["chunks"]) if n not in chunks]
    if missing:
        raise IncompleteVersion(
            f"model {version} is incomplete: {len(missing)} of {manifest['chunks']} chunks missing "
            f"({_numbers(missing)})"
        )
    problems = []
    for n in range(manifest["chunks"]):
        actual = sha256(chunks[n])
        if actual != manifest["chunk_sha256"][n]:
            problems.append(
                f"chunk {n} (in {', '.join(_file_of(manifest, n))}) has sha256 {actual}, expected {manifest['chunk_sha256'][n]}"
            )
    whole = b"".join(chunks[n] for n in range(manifest["chunks"]))
    files, offset = {}, 0
    for entry in manifest["files"]:
        data = whole[offset : offset + entry["size"]]
        offset += entry["size"]
        if len(data) != entry["size"]:
            problems.append(f"file {entry['name']} has {len(data)} bytes, expected {entry['size']}")
        elif (actual := sha256(data)) != entry["sha256"]:
            problems.append(f"file {entry['name']} has sha256 {actual}, expected {entry['sha256']}")
        files[entry["name"]] = data
    if len(whole) != manifest["size"]:
        problems.append(f"the version has {len(whole)} bytes, expected {manifest['size']}")
    elif (actual := sha256(whole)) != manifest["sha256"]:
        problems.append(f"the whole version has sha256 {actual}, expected {manifest['sha256']}")
    if problems:
        raise CorruptVersion(f"model {version} is corrupt: " + "; ".join(problems))
    return files


def _numbers(numbers: list[int], show: int = 20) -> str:
    text = ", ".join(map(str, numbers[:show]))
    return text + (f" and {len(numbers) - show} more" if len(numbers) > show else "")


@dataclass
class VersionState:
    """What the topic holds of one version: its manifest and a sha256 per chunk seen."""

    version: str
    manifest: dict[str, Any] | None = None
    chunk_sha256: dict[int, str] = field(default_factory=dict)

    def problem(self) -> str | None:
        """Why the version cannot be served (None when every chunk is there and matches)."""
        if self.manifest is None:
            return f"model {self.version} has no manifest on the topic (still being published, or abandoned)"
        expected = self.manifest["chunk_sha256"]
        missing = [n for n in range(self.manifest["chunks"]) if n not in self.chunk_sha256]
        if missing:
            return f"model {self.version} is incomplete: {len(missing)} of {len(expected)} chunks missing ({_numbers(missing)})"
        bad = [n for n in range(len(expected)) if self.chunk_sha256[n] != expected[n]]
        if bad:
            return f"model {self.version} is corrupt: chunk(s) {_numbers(bad)} do not match the manifest's sha256"
        return None


@dataclass
class Serving:
    """The ``serving`` record: which version workers serve, and what was promoted before."""

    version: str
    history: list[str]
    reason: str = "promote"
    updated_at: float = 0.0

    def encode(self) -> bytes:
        return json.dumps(
            {"version": self.version, "history": self.history, "reason": self.reason, "updated_at": self.updated_at}
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Serving:
        payload = json.loads(raw)
        return cls(payload["version"], list(payload.get("history", [payload["version"]])), payload.get("reason", "promote"),
                   float(payload.get("updated_at", 0.0)))


def serving_after_promote(current: Serving | None, version: str, *, reason: str = "promote", now: float | None = None) -> Serving:
    """The serving record once ``version`` is promoted (appended to the history).

    >>> serving_after_promote(Serving("v000001", ["v000001"]), "v000002", now=0.0).history
    ['v000001', 'v000002']
    """
    history = list(current.history) if current else []
    if not history or history[-1] != version:
        history.append(version)
    return Serving(version, history, reason, time.time() if now is None else now)


def serving_after_rollback(current: Serving | None, *, now: float | None = None) -> Serving:
    """The serving record once the serving version is rolled back to the one promoted before it.

    >>> serving_after_rollback(Serving("v000003", ["v000001", "v000003"]), now=0.0).version
    'v000001'
    """
    if current is None or len(current.history) < 2:
        serving = "nothing is served" if current is None else f"{current.version} is the only version ever promoted"
        raise DistributionError(f"cannot roll back: {serving}, so there is no earlier version to go back to")
    history = current.history[:-1]
    return Serving(history[-1], history, "rollback", time.time() if now is None else now)


@dataclass
class TopicState:
    """Everything the models topic says, folded record by record (no chunk bytes kept)."""

    versions: dict[str, VersionState] = field(default_factory=dict)
    serving: Serving | None = None

    def apply(self, key: bytes | None, value: bytes | None) -> str | None:
        """Fold one record in; returns the version it concerns (None for others).

        A tombstone of a manifest forgets the version; unknown keys are ignored."""
        name = (key or b"").decode(errors="replace")
        if name == SERVING_KEY:
            self.serving = Serving.decode(value) if value is not None else None
            return None
        version, _, rest = name.partition("/")
        if version_number(version) is None:
            return None
        state = self.versions.setdefault(version, VersionState(version))
        if rest == "manifest":
            if value is None:
                self.versions.pop(version, None)
                return version
            state.manifest = json.loads(value)
            return version
        kind, _, number = rest.partition("/")
        if kind == "chunk" and number.isdigit():
            if value is None:
                state.chunk_sha256.pop(int(number), None)
            else:
                state.chunk_sha256[int(number)] = sha256(value)
            return version
        return None

    def check_servable(self, version: str) -> VersionState:
        """The version's state; raises :class:`DistributionError` with a sentence when it is
        unknown or cannot be served."""
        state = self.versions.get(version)
        if state is None or state.manifest is None and not state.chunk_sha256:
            known = ", ".join(sorted(v for v, s in self.versions.items() if s.manifest)) or "none"
            raise DistributionError(f"unknown model version {version!r}: the topic holds {known}")
        problem = state.problem()
        if problem is not None:
            raise DistributionError(f"cannot serve {version}: {problem}")
        return state

    def newest_number(self) -> int:
        return max((version_number(v) or 0 for v in self.versions), default=0)


# --------------------------------------------------------------------------- local files


def read_version_files(folder: Path) -> dict[str, bytes]:
    """The files of a saved version, in :data:`MODEL_FILES` order, then any others by name."""
    names = [n for n in MODEL_FILES if (folder / n).is_file()]
    names += sorted(p.name for p in folder.iterdir() if p.is_file() and p.name not in MODEL_FILES)
    if "meta.json" not in names:
        raise DistributionError(f"{folder} is not a model version: it has no meta.json")
    return {name: (folder / name).read_bytes() for name in names}


def write_version(models_dir: Path, version: str, files: Mapping[str, bytes]) -> Path:
    """Write a verified version into ``models_dir/version`` atomically (a temporary folder
    renamed into place). An existing folder with the same files is kept; one with different
    content is an error, never overwritten."""
    folder = models_dir / version
    if folder.exists():
        differing = [n for n, data in files.items() if not (folder / n).is_file() or (folder / n).read_bytes() != data]
        if differing:
            raise DistributionError(
                f"{folder} already exists with different content ({', '.join(differing)}); "
                f"not overwriting it with model {version} from the topic"
            )
        return folder
    models_dir.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=models_dir))
    try:
        for name, data in files.items():
            (temporary / name).write_bytes(data)
        os.rename(temporary, folder)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return folder


# --------------------------------------------------------------------------- Kafka shell


def ensure_models_topic(bootstrap: str, topic: str, *, timeout: float = 30.0) -> None:
    """Create the compacted models topic (one partition: chunks stay before their manifest)."""
    from streamrec.kafka.admin import ensure_topics

    ensure_topics(
        bootstrap, {topic: 1}, timeout=timeout,
        configs={topic: {"cleanup.policy": "compact", "max.message.bytes": str(MAX_MESSAGE_BYTES)}},
    )


def models_consumer(bootstrap: str) -> Any:
    from confluent_kafka import Consumer

    return Consumer({
        **client_config(bootstrap),
        "group.id": f"models-reader-{uuid.uuid4().hex[:8]}",  # never joined: partitions are assigned
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "fetch.message.max.bytes": MAX_MESSAGE_BYTES,
        "log_level": 0,
    })


def assign_all(consumer: Any, topic: str, timeout: float) -> list[int] | None:
    """Assign every partition of ``topic`` from the beginning; None when it does not exist."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        return None
    partitions = sorted(metadata.partitions)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    return partitions


def watermarks(consumer: Any, topic: str, partitions: list[int], timeout: float) -> dict[int, tuple[int, int]]:
    """``{partition: (low, high)}`` watermark offsets."""
    return {p: consumer.get_watermark_offsets(topic_partition(topic, p), timeout=timeout) for p in partitions}


def read_models_topic(
    bootstrap: str, topic: str, *, timeout: float = 30.0, on_record: Callable[[Any], None] | None = None
) -> TopicState:
    """Read the whole models topic (to its current end) into a :class:`TopicState`."""
    from confluent_kafka import KafkaException

    from streamrec.kafka.reading import NoSuchTopic, read_to_end

    state = TopicState()
    try:
        for message in read_to_end(bootstrap, topic, timeout=timeout, group="models-reader",
                                   config={"fetch.message.max.bytes": MAX_MESSAGE_BYTES}):
            state.apply(message.key(), message.value())
            if on_record is not None:
                on_record(message)
    except NoSuchTopic:
        pass
    except TimeoutError as exc:
        raise DistributionError(f"could not read topic {topic} to its end: {exc}") from None
    except KafkaException as exc:
        raise DistributionError(f"could not read topic {topic} on Kafka at {bootstrap}: {exc}") from None
    return state


class ModelPublisher:
    """Publishes versions to the models topic and sets the ``serving`` record."""

    def __init__(self, bootstrap: str, topic: str, *, chunk_bytes: int = CHUNK_BYTES, timeout: float = 60.0) -> None:
        from confluent_kafka import Producer

        if chunk_bytes > MAX_MESSAGE_BYTES - 64 * 1024:
            raise ValueError(f"chunk_bytes must be below {MAX_MESSAGE_BYTES - 64 * 1024}, got {chunk_bytes}")
        self.bootstrap, self.topic, self.chunk_bytes, self.timeout = bootstrap, topic, chunk_bytes, timeout
        ensure_models_topic(bootstrap, topic, timeout=timeout)
        self._producer = Producer({
            **client_config(bootstrap), "acks": "all", "enable.idempotence": True,
            "message.max.bytes": MAX_MESSAGE_BYTES, "linger.ms": 5, "log_level": 0,
        })
        self._errors: list[str] = []

    def _report(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._errors.append(f"{msg.key()!r}: {err}")

    def send(self, records: list[tuple[str, bytes | None]]) -> None:
        """Produce records in order and wait until the broker has them all."""
        for key, value in records:
            while True:
                try:
                    self._producer.produce(self.topic, key=key.encode(), value=value, on_delivery=self._report)
                    break
                except BufferError:
                    self._producer.poll(0.1)
        left = self._producer.flush(self.timeout)
        if left or self._errors:
            errors, self._errors = self._errors, []
            raise DistributionError(
                f"publishing to {self.topic} failed: {left} record(s) undelivered after {self.timeout:g} s; {'; '.join(errors[:3])}"
            )

    def publish_version(self, folder: Path) -> dict[str, Any]:
        """Publish a saved version folder (chunks, then its manifest); returns the manifest."""
        files = read_version_files(folder)
        version = json.loads(files["meta.json"]).get("version", folder.name)
        records = version_records(version, files, chunk_bytes=self.chunk_bytes)
        self.send(records)
        logger.info("published model %s to %s: %d chunks, %d bytes", version, self.topic, len(records) - 1,
                    sum(len(v) for _, v in records[:-1]))
        return json.loads(records[-1][1])

    def promote(self, version: str, *, reason: str = "promote", state: TopicState | None = None) -> Serving:
        """Make workers serve ``version`` (it must be complete on the topic)."""
        state = state or read_models_topic(self.bootstrap, self.topic, timeout=self.timeout)
        state.check_servable(version)
        serving = serving_after_promote(state.serving, version, reason=reason)
        self.send([(SERVING_KEY, serving.encode())])
        logger.info("serving %s (history %s)", version, serving.history)
        return serving

    def rollback(self) -> Serving:
        """Serve the version promoted before the serving one."""
        state = read_models_topic(self.bootstrap, self.topic, timeout=self.timeout)
        serving = serving_after_rollback(state.serving)
        state.check_servable(serving.version)
        self.send([(SERVING_KEY, serving.encode())])
        logger.info("rolled back to %s", serving.version)
        return serving

    def close(self) -> None:
        self._producer.flush(self.timeout)

    def __enter__(self) -> ModelPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def topic_partition(topic: str, partition: int) -> Any:
    from confluent_kafka import TopicPartition

    return TopicPartition(topic, partition)
