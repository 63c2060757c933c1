"""The model a worker serves, swapped for a newer version when one appears (no Faust here)."""

from __future__ import annotations

import logging
from pathlib import Path

from indexing.artifact import ModelArtifact, latest_version, load_artifact

logger = logging.getLogger(__name__)


class ModelHolder:
    """The model the worker serves, swapped for a newer version when one appears.

    It holds files' contents, not state: every worker derives it from ``models_dir``.
    """

    def __init__(self, models_dir: Path, *, use_gpu: bool, nprobe: int) -> None:
        self.models_dir = models_dir
        self.use_gpu = use_gpu
        self.nprobe = nprobe
        self.current: ModelArtifact = load_artifact(models_dir, use_gpu=use_gpu, nprobe=nprobe)
        logger.info("serving model %s (%d items, d=%d)", self.current.version, self.current.n_items, self.current.dim)

    def reload_if_newer(self) -> bool:
        version = latest_version(self.models_dir)
        if version is None or version == self.current.version:
            return False
        try:
            model = load_artifact(self.models_dir / version, use_gpu=self.use_gpu, nprobe=self.nprobe)
        except Exception:  # a broken new version must not take the worker down
            logger.exception("model %s in %s could not be loaded; still serving %s", version, self.models_dir, self.current.version)
            return False
        logger.info("swapping model %s -> %s", self.current.version, model.version)
        self.current = model
        return True
