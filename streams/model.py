"""The model a worker serves, swapped when another version should be served (no Faust here).

Two sources, in this order:

1. the models topic (:class:`indexing.feed.ModelFeed`): when it has a ``serving`` record, the
   worker serves that version as soon as it has arrived intact in its own ``models_dir``
   (promote, rollback and the trainer's publications reach every worker this way);
2. the local folder's ``LATEST`` pointer, while the topic names no serving version (a single
   machine, the tests and the demo, which train into the worker's folder).

At start the holder reads the topic to its end (up to ``catch_up_s``), so a worker with an
empty models folder starts with the serving version from the topic; with neither a serving
version nor a local model it cannot start (:class:`indexing.artifact.ArtifactError`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from indexing.artifact import ArtifactError, ModelArtifact, latest_version, load_artifact

if TYPE_CHECKING:
    from indexing.feed import ModelFeed
    from streamrec.config import Settings

logger = logging.getLogger(__name__)


class ModelHolder:
    """The model the worker serves, swapped for another version when one should be served.

    It holds files' contents, not state: every worker derives it from the models topic and
    ``models_dir``.
    """

    def __init__(
        self, models_dir: Path, *, use_gpu: bool, nprobe: int | None = None, feed: ModelFeed | None = None, catch_up_s: float = 10.0
    ) -> None:
        self.models_dir = Path(models_dir)
        self.use_gpu = use_gpu
        self.nprobe = nprobe
        self.feed = feed
        self._reported: set[tuple[str, str]] = set()  # (version, problem) already logged
        self._failed: set[str] = set()  # versions that arrived but could not be loaded
        initial = None
        if feed is not None:
            feed.catch_up(catch_up_s)
            target = feed.serving
            if target is not None:
                initial = feed.usable(target)
                if initial is None:
                    self._report(target, None)
        if initial is None and latest_version(self.models_dir) is None and feed is not None and feed.serving:
            raise ArtifactError(
                f"no model to start with: topic {feed.topic} says serve {feed.serving}, but {feed.problem(feed.serving)}; "
                f"and {self.models_dir} has no LATEST"
            )
        self.current: ModelArtifact = load_artifact(initial or self.models_dir, use_gpu=use_gpu, nprobe=nprobe)
        source = f"topic {feed.topic}" if initial is not None else f"{self.models_dir}/LATEST"
        logger.info("serving model %s from %s (%d items, d=%d)", self.current.version, source, self.current.n_items, self.current.dim)

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelHolder:
        """The worker's holder: ``index.models_dir`` plus the feed of ``kafka.models_topic``."""
        from indexing.feed import ModelFeed

        index, kafka = settings.index, settings.kafka
        feed = ModelFeed(kafka.bootstrap, kafka.models_topic, index.models_dir) if kafka.models_topic else None
        return cls(index.models_dir, use_gpu=index.use_gpu, nprobe=index.nprobe, feed=feed)

    def _report(self, version: str, problem: str | None) -> None:
        problem = problem or (self.feed.problem(version) if self.feed else None) or "it has not arrived yet"
        if (version, problem) not in self._reported:
            self._reported.add((version, problem))
            current = getattr(self, "current", None)
            logger.warning("topic says serve %s, but %s; still serving %s", version, problem,
                           current.version if current else "nothing")

    def _target(self) -> Path | None:
        """The folder of the version to serve now, or None to keep the current one."""
        if self.feed is not None:
            self.feed.poll()
            version = self.feed.serving
            if version is not None:
                if version == self.current.version or version in self._failed:
                    return None
                folder = self.feed.usable(version)
                if folder is None:
                    self._report(version, None)
                return folder
        version = latest_version(self.models_dir)
        if version is None or version == self.current.version or version in self._failed:
            return None
        return self.models_dir / version

    def reload_if_newer(self) -> bool:
        """Swap to the version that should be served if it differs; True when it swapped.

        A version that cannot be loaded is logged once and ignored: the worker keeps serving."""
        try:
            folder = self._target()
        except Exception:  # the feed must never take the worker down
            logger.exception("reading the models topic failed; still serving %s", self.current.version)
            return False
        if folder is None:
            return False
        try:
            model = load_artifact(folder, use_gpu=self.use_gpu, nprobe=self.nprobe)
        except Exception:  # a broken new version must not take the worker down
            logger.exception("model %s could not be loaded; still serving %s", folder, self.current.version)
            self._failed.add(folder.name)
            return False
        logger.info("swapping model %s -> %s", self.current.version, model.version)
        self.current = model
        return True
