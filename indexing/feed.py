"""The worker's side of model distribution: follow the models topic, adopt intact versions.

:class:`ModelFeed` reads the compacted models topic (:mod:`indexing.distribute`) from the
beginning, folds every record into a :class:`~indexing.distribute.TopicState`, keeps the
chunks of versions still arriving, and writes each version that arrives complete and
verified into the worker's own models folder. A corrupt or incomplete version is logged
(which chunk, which file, expected and actual sha256, which chunks are missing) and never
written.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from indexing.distribute import (
    DistributionError,
    IncompleteVersion,
    TopicState,
    assemble,
    assign_all,
    models_consumer,
    topic_partition,
    watermarks,
    write_version,
)

logger = logging.getLogger(__name__)


class ModelFeed:
    """Follows the models topic from the beginning (every partition assigned, no consumer
    group), assembles complete versions, verifies them and writes them into ``models_dir``.

    :attr:`serving` names the version the topic says to serve; :meth:`usable` gives its
    local folder once it has arrived intact, :meth:`problem` says why not. Polling never
    blocks on the broker beyond a short metadata look-up while the topic does not exist yet.
    """

    #: Seconds between looks for a models topic that does not exist yet.
    METADATA_EVERY_S = 5.0

    def __init__(self, bootstrap: str, topic: str, models_dir: Path) -> None:
        self.bootstrap, self.topic, self.models_dir = bootstrap, topic, Path(models_dir)
        self.state = TopicState()
        self._chunks: dict[str, dict[int, bytes]] = {}
        self._ready: dict[str, tuple[Path, str]] = {}  # version -> (folder, sha256 of the whole)
        self._problems: dict[str, str] = {}
        self._consumer: Any = None
        self._partitions: list[int] | None = None
        self._next_metadata = 0.0

    @property
    def serving(self) -> str | None:
        return self.state.serving.version if self.state.serving else None

    def usable(self, version: str) -> Path | None:
        """The verified local folder of ``version``, None until it has arrived intact."""
        entry = self._ready.get(version)
        return entry[0] if entry else None

    def problem(self, version: str) -> str | None:
        """Why ``version`` is not usable (None when it is, or nothing is known yet)."""
        if version in self._ready:
            return None
        if version in self._problems:
            return self._problems[version]
        state = self.state.versions.get(version)
        return state.problem() if state else f"model {version} is not on topic {self.topic}"

    def _assigned(self, timeout: float) -> bool:
        if self._partitions is not None:
            return True
        now = time.monotonic()
        if now < self._next_metadata:
            return False
        self._next_metadata = now + self.METADATA_EVERY_S
        from confluent_kafka import KafkaException

        if self._consumer is None:
            self._consumer = models_consumer(self.bootstrap)
        try:
            self._partitions = assign_all(self._consumer, self.topic, timeout)
        except KafkaException as exc:
            logger.warning("models topic %s on %s: %s", self.topic, self.bootstrap, exc)
        return self._partitions is not None

    def poll(self, *, max_records: int = 5000) -> int:
        """Handle the records already fetched (never waits for new ones); returns how many."""
        if not self._assigned(timeout=1.0):
            return 0
        handled = 0
        while handled < max_records:
            messages = self._consumer.consume(min(500, max_records - handled), timeout=0)
            if not messages:
                break
            handled += self._handle_all(messages)
        return handled

    def catch_up(self, timeout: float = 10.0) -> bool:
        """Read the topic up to its current end (at start, before serving); False when the
        topic does not exist or could not be read to its end within ``timeout`` seconds."""
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + timeout
        self._next_metadata = 0.0
        if not self._assigned(timeout=timeout):
            return False
        try:
            marks = watermarks(self._consumer, self.topic, self._partitions, timeout)
        except KafkaException as exc:
            logger.warning("models topic %s: cannot read its offsets: %s", self.topic, exc)
            return False
        ends = {p: high for p, (_, high) in marks.items()}
        positions = {p: max(low, position.offset) for p, (low, _), position in
                     zip(self._partitions, marks.values(), self._consumer.position([topic_partition(self.topic, p) for p in self._partitions]))}
        while any(positions[p] < ends[p] for p in self._partitions):
            if time.monotonic() > deadline:
                logger.warning("models topic %s: not read to its end within %.0f s", self.topic, timeout)
                return False
            messages = self._consumer.consume(500, timeout=0.2)
            self._handle_all(messages)
            for message in messages:
                if not message.error():
                    positions[message.partition()] = message.offset() + 1
                elif message.offset() is not None and message.offset() >= 0:
                    positions[message.partition()] = max(positions[message.partition()], message.offset())
        return True

    def _handle_all(self, messages: list[Any]) -> int:
        handled = 0
        for message in messages:
            if message.error():
                from confluent_kafka import KafkaError

                if message.error().code() != KafkaError._PARTITION_EOF:
                    logger.warning("models topic %s[%s]: %s", self.topic, message.partition(), message.error())
                continue
            self._handle(message.key(), message.value())
            handled += 1
        return handled

    def _handle(self, key: bytes | None, value: bytes | None) -> None:
        version = self.state.apply(key, value)
        if version is None:
            return
        rest = (key or b"").decode(errors="replace").partition("/")[2]
        if rest.startswith("chunk/"):
            number = int(rest.partition("/")[2])
            if value is None:
                self._chunks.get(version, {}).pop(number, None)
            else:
                self._chunks.setdefault(version, {})[number] = value
        self._try_complete(version, manifest_arrived=rest == "manifest")

    def _try_complete(self, version: str, *, manifest_arrived: bool) -> None:
        state = self.state.versions.get(version)
        if state is None or state.manifest is None:
            return
        manifest = state.manifest
        if version in self._ready and self._ready[version][1] == manifest["sha256"]:
            self._chunks.pop(version, None)  # a re-published copy of what is already here
            return
        chunks = self._chunks.get(version, {})
        if not manifest_arrived and (version not in self._problems or any(n not in chunks for n in range(manifest["chunks"]))):
            return  # a chunk of a version not yet complete (or re-published): wait for the rest
        try:
            files = assemble(manifest, chunks)
            folder = write_version(self.models_dir, version, files)
        except IncompleteVersion as exc:
            self._note_problem(version, str(exc), logging.WARNING)
            return
        except DistributionError as exc:  # corrupt, or a different folder of that name exists
            self._note_problem(version, str(exc), logging.ERROR)
            self._chunks.pop(version, None)
            return
        self._chunks.pop(version, None)
        self._problems.pop(version, None)
        self._ready[version] = (folder, manifest["sha256"])
        logger.info("model %s arrived from topic %s intact (%d files, %d bytes) -> %s",
                    version, self.topic, len(files), manifest["size"], folder)

    def _note_problem(self, version: str, problem: str, level: int) -> None:
        if self._problems.get(version) != problem:
            logger.log(level, "not adopting %s from topic %s: %s", version, self.topic, problem)
        self._problems[version] = problem

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

