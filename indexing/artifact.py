"""Versioned model artifacts: item vectors, their FAISS index, the item-id map and metadata.

Layout of a models folder::

    models/
      LATEST                 # name of the newest complete version, written last (atomic rename)
      v000001/
        index.faiss          # FAISS index over the target vectors (inner product)
        context.npy          # float32 (n_items, d): vectors added to a user's interest vector
        item_ids.json        # row -> item_id
        meta.json            # version, dimension, metric, factory, search (the calibrated
                             # effort and its measured recall@10), training summary, created_at
        target.npy           # optional extras, loaded into ``ModelArtifact.extras``: the target
        fold_in.npy          # vectors, the regression's (Z^T Z + r I)^-1 and the training
        popularity.npy       # events per item (new items' priors and fold-in, trending prior)
        repeat.npy           # each item's repeat lift (streamrec.core.repeat) and the
        taste.npy            # d x d taste map of the users' long-term vectors (streamrec.core.taste)
        neighbours.npy       # (n_items, M) each item's best neighbours and their similarities
        neighbour_sims.npy   # (streamrec.core.neighbours); a version without them: no neighbour step
        factors.npy          # (n_items, f) ALS item factors of the factor step (streamrec.core.factors)

A version folder is complete once ``meta.json`` exists; ``LATEST`` only ever names complete
versions, so a worker polling it never loads half a model.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from indexing.index import (
    DEFAULT_TARGET_RECALL,
    LEGACY_EFFORT,
    build_served_index,
    effort_name,
    maybe_to_gpu,
    set_search_effort,
)
from streamrec.core.search import check_vectors, is_euclidean, mark_euclidean

logger = logging.getLogger(__name__)

_VERSION_RE = re.compile(r"^v(\d{6})$")
#: Optional arrays of a version: the target vectors, the target regression's solve matrix and
#: the training events per item (see streamrec.core.items), the items' repeat lifts
#: (streamrec.core.repeat), the taste map (streamrec.core.taste), each item's neighbours and their
#: similarities (streamrec.core.neighbours), the factor step's item factors (streamrec.core.factors).
EXTRAS = ("target", "fold_in", "popularity", "repeat", "taste", "neighbours", "neighbour_sims", "factors")


class ArtifactError(RuntimeError):
    """A model artifact that is missing, incomplete or inconsistent."""


@dataclass
class ModelArtifact:
    """A loaded model: everything the worker needs to update vectors and search."""

    version: str
    path: Path
    item_ids: list[str]
    context: np.ndarray
    index: faiss.Index
    meta: dict[str, Any]
    #: Optional arrays saved beside the model (:data:`EXTRAS`), by name.
    extras: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    row_of: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.row_of = {item_id: row for row, item_id in enumerate(self.item_ids)}

    @property
    def dim(self) -> int:
        return int(self.context.shape[1])

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


def _versions(models_dir: Path) -> list[int]:
    if not models_dir.is_dir():
        return []
    return sorted(int(m.group(1)) for p in models_dir.iterdir() if (m := _VERSION_RE.match(p.name)))


def save_artifact(
    models_dir: Path,
    item_ids: list[str],
    context: np.ndarray,
    target: np.ndarray,
    *,
    factory: str = "Flat",
    training: dict[str, Any] | None = None,
    extras: dict[str, np.ndarray] | None = None,
    number: int | None = None,
    extra_meta: dict[str, Any] | None = None,
    target_recall: float = DEFAULT_TARGET_RECALL,
    queries: np.ndarray | None = None,
) -> Path:
    """Write a new version folder, then point ``LATEST`` at it. Returns the folder.

    ``extras``: optional arrays by name (:data:`EXTRAS`); the target vectors are always saved.
    ``number``: the version number to use (``v%06d``), e.g. one past the newest version on the
    models topic; default one past the newest version in ``models_dir``. ``extra_meta`` adds
    keys to ``meta.json`` (the trainer's gate scores). An approximate index is calibrated to
    ``target_recall`` (:func:`indexing.index.build_served_index`, on ``queries`` where given,
    else on synthetic sessions of the context vectors); ``meta.json``'s ``search`` says how.
    """
    context = check_vectors(context, "context vectors")
    target = check_vectors(target, "target vectors")
    if context.shape != target.shape or len(item_ids) != len(context):
        raise ValueError(
            f"context {context.shape}, target {target.shape} and {len(item_ids)} item ids must agree"
        )
    if len(set(item_ids)) != len(item_ids):
        raise ValueError("item ids must be unique")
    models_dir.mkdir(parents=True, exist_ok=True)
    newest = (_versions(models_dir) or [0])[-1]
    if number is None:
        number = newest + 1
    elif number < 1:
        raise ValueError(f"a version number must be >= 1, got {number}")
    version = f"v{number:06d}"
    folder = models_dir / version
    if folder.exists():
        raise ArtifactError(f"cannot save model {version}: {folder} already exists")
    folder.mkdir()
    index, calibration = build_served_index(target, factory, target_recall=target_recall, context=context, queries=queries)
    factory = calibration.factory
    faiss.write_index(index, str(folder / "index.faiss"))
    np.save(folder / "context.npy", context)
    for name, array in {"target": target, **(extras or {})}.items():
        if name not in EXTRAS:
            raise ValueError(f"unknown model extra {name!r}; known: {', '.join(EXTRAS)}")
        np.save(folder / f"{name}.npy", np.asarray(array))
    (folder / "item_ids.json").write_text(json.dumps(item_ids))
    meta = {
        "version": version,
        "dimension": int(context.shape[1]),
        "n_items": len(item_ids),
        "metric": "inner_product",
        "factory": factory,
        # An approximate index holds the Euclidean reduction of the target vectors: the
        # largest squared norm turns its distances back into inner products.
        "euclidean_norm2": index.mips_norm2 if is_euclidean(index) else None,
        "search": calibration.as_meta(),
        "created_at": time.time(),
        "training": training or {},
        **(extra_meta or {}),
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))
    if number > newest:  # LATEST names the newest version, never an older one saved later
        pointer = models_dir / "LATEST.tmp"
        pointer.write_text(version)
        os.replace(pointer, models_dir / "LATEST")
    logger.info("saved model %s (%d items, d=%d) to %s", version, len(item_ids), context.shape[1], folder)
    return folder


def version_number(version: str) -> int | None:
    """``7`` for ``"v000007"``; None for a name that is not a version.

    >>> version_number("v000007"), version_number("LATEST")
    (7, None)
    """
    match = _VERSION_RE.match(version)
    return int(match.group(1)) if match else None


def newest_number(models_dir: Path) -> int:
    """The highest version number in ``models_dir`` (0 when it holds none)."""
    return (_versions(models_dir) or [0])[-1]


def latest_version(models_dir: Path) -> str | None:
    pointer = models_dir / "LATEST"
    return pointer.read_text().strip() if pointer.is_file() else None


def resolve(path: Path) -> Path:
    """A version folder itself, or the version a models folder's ``LATEST`` names."""
    if (path / "meta.json").is_file():
        return path
    version = latest_version(path)
    if version is None:
        raise ArtifactError(f"no model in {path}: neither meta.json nor a LATEST pointer (run `streamrec train`)")
    return path / version


def search_effort_of(meta: dict[str, Any]) -> int:
    """The calibrated search effort in a model's meta.json (a model saved before calibration
    existed has none: :data:`indexing.index.LEGACY_EFFORT`).

    >>> search_effort_of({"search": {"effort": 24}}), search_effort_of({})
    (24, 32)
    """
    effort = (meta.get("search") or {}).get("effort")
    return int(effort) if effort is not None else LEGACY_EFFORT


def load_artifact(path: Path, *, use_gpu: bool = True, nprobe: int | None = None) -> ModelArtifact:
    """Load and check a model; raise :class:`ArtifactError` naming the file at fault.

    An approximate index searches at the effort its calibration chose (``meta.json``'s
    ``search.effort``), or at ``nprobe`` where one is given (an explicit override)."""
    folder = resolve(Path(path))
    files = {name: folder / name for name in ("meta.json", "index.faiss", "context.npy", "item_ids.json")}
    for name, file in files.items():
        if not file.is_file():
            raise ArtifactError(f"model {folder} is incomplete: {file} is missing")
    try:
        meta = json.loads(files["meta.json"].read_text())
        item_ids = json.loads(files["item_ids.json"].read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"model {folder}: cannot parse its JSON files ({exc})") from exc
    try:
        context = np.load(files["context.npy"], allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ArtifactError(f"{files['context.npy']} is unreadable or truncated ({exc})") from exc
    try:
        index = faiss.read_index(str(files["index.faiss"]))
    except RuntimeError as exc:
        raise ArtifactError(f"{files['index.faiss']} is unreadable or truncated ({str(exc).splitlines()[0]})") from exc
    dim = meta.get("dimension")
    problems = []
    if context.ndim != 2 or context.shape[1] != dim:
        problems.append(f"{files['context.npy']} has shape {context.shape}, meta.json says dimension {dim}")
    norm2 = meta.get("euclidean_norm2")
    if index.d != dim if norm2 is None else not (isinstance(dim, int) and index.d > dim):
        problems.append(f"{files['index.faiss']} has dimension {index.d}, meta.json says {dim}"
                        + ("" if norm2 is None else " (and one more: the Euclidean reduction)"))
    elif norm2 is not None:
        mark_euclidean(index, float(norm2), dim)
    if index.ntotal != len(item_ids) or len(context) != len(item_ids):
        problems.append(
            f"{files['index.faiss']} holds {index.ntotal} vectors, context.npy {len(context)}, "
            f"item_ids.json {len(item_ids)}: they must be equal"
        )
    if context.ndim == 2 and not np.all(np.isfinite(context)):
        problems.append(f"{files['context.npy']} contains NaN or infinite values")
    if problems:
        raise ArtifactError("model " + str(folder) + " is inconsistent: " + "; ".join(problems))
    extras = {}
    for name in EXTRAS:
        file = folder / f"{name}.npy"
        if file.is_file():
            try:
                extras[name] = np.load(file, allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise ArtifactError(f"{file} is unreadable or truncated ({exc})") from exc
            if len(extras[name]) != (dim if name in ("fold_in", "taste") else len(item_ids)) or not np.all(np.isfinite(extras[name])):
                raise ArtifactError(f"model {folder} is inconsistent: {file} has shape {extras[name].shape} or non-finite values")
    if "neighbours" in extras:
        near, sims = extras["neighbours"], extras.get("neighbour_sims")
        if (near.ndim != 2 or sims is None or sims.shape != near.shape
                or (near.size and not (-1 <= int(near.min()) and int(near.max()) < len(item_ids)))):
            raise ArtifactError(f"model {folder} is inconsistent: neighbours.npy must be (items, M) rows in "
                                f"[-1, {len(item_ids)}) with neighbour_sims.npy of the same shape")
    if "factors" in extras and (extras["factors"].ndim != 2 or "factors" not in meta.get("training", {})):
        raise ArtifactError(f"model {folder} is inconsistent: factors.npy must be (items, f) with the training "
                            f"summary's factor settings")
    if effort_name(index) is not None:
        effort = nprobe if nprobe is not None else search_effort_of(meta)
        set_search_effort(index, effort)
        logger.info("model %s: %s searches at %s %d%s", folder.name, meta.get("factory"), effort_name(index), effort,
                    "" if nprobe is None else " (override)")
    index = maybe_to_gpu(index, use_gpu=use_gpu)
    return ModelArtifact(
        version=meta.get("version", folder.name),
        path=folder,
        item_ids=item_ids,
        context=np.ascontiguousarray(context, dtype=np.float32),
        index=index,
        meta=meta,
        extras=extras,
    )
