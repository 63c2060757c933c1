"""The live item side of one model version: catalog rules, new items and trending.

A trained model knows a fixed set of items. A shop does not stand still: products are added,
go out of stock and come back, are removed. :class:`LiveItems` is the model's item side as
the stream sees it, and it is pure (no Kafka, no Faust): the engines feed it catalog records
and fresh events, and ask it for candidates and finished lists.

* **Rows.** The model's items keep their rows ``0 .. n_model-1``; an item the model has never
  seen (from a catalog record or an event) gets the next free row. ``context`` covers every
  row, so the user-vector update (:mod:`streamrec.core.interest`) treats new items like known ones.
* **New items' vectors.** A new item starts from its catalog *prior*: the weighted mean of the
  context and target vectors of the model's items that share its category path, brand,
  attributes and title words (:func:`item_features`). Then the users who act on it refine it
  with the training rule itself (*fold-in*): the target is the regression of the item on the
  user vectors just before its events, ``(sum of z) S / n^popularity_beta`` with the model's own
  ``S = (Z^T Z + r I)^-1``, and the context is the mean context of the items it follows or
  precedes in users' sequences. Prior and fold-in are blended with weight
  ``prior_events / (prior_events + n)``. New items are searched exactly, as a second, small
  matrix beside the FAISS index (scores merged with FAISS's), so exact search stays exact.
* **Rules.** An item is *blocked* while the catalog says it is unavailable or it was removed
  (a tombstone); blocked items are skipped inside the FAISS search (an ID selector) and
  re-checked when a list is finished. A purchased item is never recommended again unless its
  category path contains one of the ``repeat_purchase_categories``.
* **Trending.** Event-time decayed counts per item (``trending_half_life_s``) rank the
  backfill: when the rules leave fewer than k of the model's candidates, the list is filled
  from trending items of the categories the user engaged with recently, then from the whole
  shop's, so a list has exactly k items whenever k eligible items exist.

Each worker keeps its own :class:`LiveItems`, rebuilt from the catalog table and the model
when a version is adopted; trending and fold-in accumulate from the events the worker reads.

>>> import numpy as np, faiss
>>> from streamrec.contract import CatalogItem
>>> context = np.eye(3, dtype=np.float32); index = faiss.IndexFlatIP(3); index.add(context)
>>> items = LiveItems(ItemsModel("v1", ["a", "b", "c"], context, context, index))
>>> items.apply_catalog("b", CatalogItem("b", available=False))
>>> rows, _ = items.view().search(np.array([[0, 1, 0.5]], np.float32), 2, [set()])
>>> [items.item_ids[r] for r in rows[0]]
['c', 'a']
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import faiss
import numpy as np

from streamrec.contract import CatalogItem, ScoredItem
from streamrec.core.factors import solved
from streamrec.core.neighbours import popular_items
from streamrec.core.search import search

#: Weight of each feature group in a new item's catalog prior.
FEATURE_GROUP_WEIGHTS = {"cat": 4.0, "brand": 3.0, "attr": 2.0, "word": 1.0}
#: The groups of :func:`item_features`: category levels, brand, attributes, title words.
FEATURE_GROUPS: tuple[str, ...] = tuple(FEATURE_GROUP_WEIGHTS)
#: How the features of one group are combined in a prior: ``"idf"`` averages the per-feature
#: means weighted by ``log(1 + items / items with the feature)`` (a rare feature, a brand or an
#: unusual title word, says more than one most items share); ``"pooled"`` is the plain mean of
#: all the model items that share any of them (a common feature dominates, and the mean of
#: thousands of unrelated items is a short, uninformative vector).
PRIOR_WEIGHTING = "idf"
_WORD = re.compile(r"[a-z0-9]{3,}")
#: Trending counts are stored scaled by 2^((ts - ref) / half-life); past this exponent they
#: are rescaled (float64 holds 2^1023).
_RESCALE_AT = 512.0


@dataclass(frozen=True)
class ItemRules:
    """The numerical side of :class:`streamrec.config.RulesSettings` (no pydantic here)."""

    repeat_purchase_categories: frozenset[str] = frozenset()
    trending_half_life_s: float = 6 * 3600.0
    new_item_prior_events: float = 1.0
    #: Weight of each event type in the trending counts (order of ``EVENT_TYPES``).
    trending_weights: tuple[float, ...] = (1.0, 1.0, 2.0, 2.0, 3.0)


class ArtifactLike(Protocol):
    """What the core reads of a saved model version (:class:`indexing.artifact.ModelArtifact`)."""

    version: str
    item_ids: list[str]
    context: np.ndarray
    index: faiss.Index
    meta: dict
    extras: dict[str, np.ndarray]


@dataclass
class ItemsModel:
    """What :class:`LiveItems` needs of a model version (a :class:`indexing.artifact.ModelArtifact`
    provides it through :meth:`from_artifact`)."""

    version: str
    item_ids: list[str]
    context: np.ndarray
    #: Target vectors of the model's items, for new items' priors (None: no priors from them).
    target: np.ndarray | None
    index: faiss.Index
    #: ``(Z^T Z + r I)^-1`` of the target regression and ``popularity_beta`` (fold-in).
    fold_in: np.ndarray | None = None
    popularity_beta: float = 0.3
    #: Training events per item, the trending prior before live events arrive.
    popularity: np.ndarray | None = None
    #: Each item's repeat lift and the re-visit share by age (:mod:`streamrec.core.repeat`).
    repeat: np.ndarray | None = None
    repeat_by_age: np.ndarray | None = None
    #: The taste map ``W`` (:mod:`streamrec.core.taste`); None: the query is the interest vector.
    taste: np.ndarray | None = None
    #: Each model item's best neighbours and their similarities (:mod:`streamrec.core.neighbours`).
    neighbours: np.ndarray | None = None
    neighbour_sims: np.ndarray | None = None
    #: ALS item factors of the factor step and their fold-in's settings (:mod:`streamrec.core.factors`;
    #: None: no step).
    factors: np.ndarray | None = None
    factor_reg: float = 20.0
    factor_confidence: float = 40.0
    #: The weight chosen for this version at its training (``factor_weight = "auto"``), and whether
    #: its factor list may hold recent items (``factor_repeats = "auto"``).
    factor_weight: float = 0.0
    factor_repeats: bool = False
    #: :meth:`popular`'s answers, by ``(top, weight)`` (derived from ``popularity``).
    _popular: dict = field(default_factory=dict, repr=False, compare=False)
    #: :meth:`max_target_norm`'s answer, once computed.
    _max_norm: list = field(default_factory=list, repr=False, compare=False)
    #: :meth:`factor_solved`'s answer, once computed.
    _solved: list = field(default_factory=list, repr=False, compare=False)

    def factor_solved(self) -> np.ndarray:
        """:func:`streamrec.core.factors.solved` of the factors, once computed."""
        if not self._solved:
            self._solved.append(solved(self.factors, self.factor_reg))
        return self._solved[0]

    def max_target_norm(self) -> float:
        """The largest Euclidean norm of a model item's target vector (0 without targets)."""
        if not self._max_norm:
            self._max_norm.append(0.0 if self.target is None else largest_norm(self.target))
        return self._max_norm[0]

    def popular(self, top: int, weight: float) -> tuple[np.ndarray, np.ndarray]:
        """The ``top`` items with the most training events and their bonuses
        (:func:`streamrec.core.neighbours.popular_items`; none without ``popularity``)."""
        key = (top, weight)
        if key not in self._popular:
            counts = self.popularity if self.popularity is not None else np.zeros(0)
            self._popular[key] = popular_items(counts, top, weight)
        return self._popular[key]

    @classmethod
    def from_artifact(cls, model: ArtifactLike) -> ItemsModel:
        training = model.meta.get("training", {})
        params, factors = training.get("params", {}), training.get("factors", {})
        return cls(model.version, model.item_ids, model.context, model.extras.get("target"), model.index,
                   model.extras.get("fold_in"), float(params.get("popularity_beta", 0.3)), model.extras.get("popularity"),
                   model.extras.get("repeat"),
                   None if "repeat_by_age" not in training else np.asarray(training["repeat_by_age"], np.float64),
                   model.extras.get("taste"), model.extras.get("neighbours"), model.extras.get("neighbour_sims"),
                   model.extras.get("factors"), float(factors.get("reg", 20.0)), float(factors.get("confidence", 40.0)),
                   float(factors.get("weight", 0.0)), bool(factors.get("repeats", False)))


def item_features(item: CatalogItem) -> list[tuple[str, str]]:
    """``(group, feature)`` pairs a catalog record shares with other items.

    >>> item_features(CatalogItem("x", title="Rose Hand Cream", category=("Beauty", "Skin"), brand="Acme"))
    [('cat', 'beauty'), ('cat', 'beauty/skin'), ('brand', 'acme'), ('word', 'cream'), ('word', 'hand'), ('word', 'rose')]
    """
    features = [("cat", "/".join(item.category[: depth + 1]).lower()) for depth in range(len(item.category))]
    if item.brand:
        features.append(("brand", item.brand.lower()))
    features += [("attr", f"{key.lower()}={value.lower()}") for key, value in sorted(item.attributes.items())]
    features += [("word", word) for word in sorted(set(_WORD.findall((item.title or "").lower())))]
    return features


def catalog_features(catalog: Mapping[str, CatalogItem]) -> dict[str, tuple[tuple[str, str], ...]]:
    """The :func:`item_features` of every record of a catalog, by item id (what training reads:
    ``indexing.train.Interactions.item_features``).

    >>> catalog_features({"x": CatalogItem("x", brand="Acme")})
    {'x': (('brand', 'acme'),)}
    """
    return {item_id: tuple(item_features(item)) for item_id, item in catalog.items()}


class _FeatureSums:
    """Sums of the model items' vectors per feature, for new items' priors."""

    def __init__(self, dim: int) -> None:
        self.slot: dict[tuple[str, str], int] = {}
        self.context = np.zeros((64, dim))
        self.target = np.zeros((64, dim))
        self.count = np.zeros(64)
        #: Model items added (records minus their removals): the ``N`` of the idf weights.
        self.items = 0.0

    def add(self, features: Iterable[tuple[str, str]], context: np.ndarray, target: np.ndarray, sign: float) -> None:
        self.items += sign
        for feature in features:
            slot = self.slot.get(feature)
            if slot is None:
                slot = self.slot[feature] = len(self.slot)
                if slot == len(self.count):
                    self.context, self.target, self.count = (
                        np.concatenate([a, np.zeros_like(a)]) for a in (self.context, self.target, self.count))
            self.context[slot] += sign * context
            self.target[slot] += sign * target
            self.count[slot] += sign

    def prior(self, features: Sequence[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray] | None:
        """The weighted mean of the group means of ``features`` known from model items
        (for categories only the deepest known level counts), or None if none is known."""
        groups: dict[str, list[int]] = {}
        for group, name in features:
            slot = self.slot.get((group, name))
            if slot is not None and self.count[slot] > 0.5:
                groups.setdefault(group, []).append(slot)
        if "cat" in groups:
            groups["cat"] = groups["cat"][-1:]
        if not groups:
            return None
        context = np.zeros(self.context.shape[1])
        target = np.zeros(self.target.shape[1])
        total = 0.0
        for group, slots in groups.items():
            weight = FEATURE_GROUP_WEIGHTS[group]
            counts = self.count[slots]
            if PRIOR_WEIGHTING == "idf":
                idf = np.log1p(max(self.items, 1.0) / counts)
                share = idf / (idf.sum() * counts)  # per slot: its idf share of the group, per item
            else:
                share = np.full(len(slots), 1.0 / counts.sum())
            context += weight * share @ self.context[slots]
            target += weight * share @ self.target[slots]
            total += weight
        return context / total, target / total


def largest_norm(vectors: np.ndarray) -> float:
    """The largest Euclidean norm of the rows of ``vectors`` (0 for none), summed in float64."""
    if not len(vectors):
        return 0.0
    return float(np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64).max()))


@dataclass
class SearchView:
    """What one batch's search needs, taken when the batch is prepared, so the search thread
    never reads arrays the main thread is changing."""

    index: faiss.Index
    n_model: int
    new_target: np.ndarray  # (m, d): rows n_model .. n_model + m - 1
    new_ok: np.ndarray  # (m,) searchable and not blocked
    model_allowed: np.ndarray | None  # packed bitmap of allowed model rows; None: all allowed

    def search(self, queries: np.ndarray, k: int, exclude: Sequence[Collection[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` rows and scores per query over model and new items, skipping blocked rows
        and each query's ``exclude``d rows; -1 (score -inf) pads a short list. An all-zero
        query (a user whose events were all on items with no vector yet) gets no candidates:
        its list is backfilled from trending items."""
        n_model = self.n_model
        m = len(self.new_target)
        has_new = [bool(rows) and max(rows) >= n_model for rows in exclude] if m else [False] * len(exclude)
        model_exclude = [{r for r in rows if r < n_model} if new else rows for rows, new in zip(exclude, has_new)]
        rows, scores = search(self.index, queries, k, model_exclude, allowed=self.model_allowed)
        silent = ~queries.any(axis=1)  # a vector that says nothing (only unknown items so far)
        rows[silent], scores[silent] = -1, -np.inf
        if m == 0 or not self.new_ok.any() or len(queries) == 0:
            return rows, scores
        new_scores = queries @ self.new_target.T
        new_scores[:, ~self.new_ok] = -np.inf
        for q in (q for q, new in enumerate(has_new) if new):
            for row in exclude[q]:
                if row >= n_model:
                    new_scores[q, row - n_model] = -np.inf
        take = min(k, m)
        new_scores[silent] = -np.inf
        top = np.argpartition(-new_scores, take - 1, axis=1)[:, :take]
        top_scores = np.take_along_axis(new_scores, top, axis=1)
        all_rows = np.concatenate([rows, np.where(np.isfinite(top_scores), top + n_model, -1)], axis=1)
        all_scores = np.concatenate([scores, top_scores], axis=1)
        order = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(all_rows, order, axis=1), np.take_along_axis(all_scores, order, axis=1)


@dataclass
class _NewItems:
    """Growing per-row arrays of the items the model does not know (row - n_model)."""

    dim: int
    capacity: int = 0
    prior_context: np.ndarray = field(init=False)
    prior_target: np.ndarray = field(init=False)
    has_prior: np.ndarray = field(init=False)
    z_sum: np.ndarray = field(init=False)
    z_n: np.ndarray = field(init=False)
    c_sum: np.ndarray = field(init=False)
    c_n: np.ndarray = field(init=False)
    target: np.ndarray = field(init=False)
    searchable: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        d = self.dim
        self.prior_context, self.prior_target = np.zeros((0, d)), np.zeros((0, d))
        self.has_prior = np.zeros(0, bool)
        self.z_sum, self.z_n = np.zeros((0, d)), np.zeros(0)
        self.c_sum, self.c_n = np.zeros((0, d)), np.zeros(0)
        self.target = np.zeros((0, d), np.float32)
        self.searchable = np.zeros(0, bool)

    def grow(self, size: int) -> None:
        if size <= self.capacity:
            return
        new = max(size, 2 * self.capacity, 256)
        for name in ("prior_context", "prior_target", "has_prior", "z_sum", "z_n", "c_sum", "c_n", "target", "searchable"):
            old = getattr(self, name)
            grown = np.zeros((new, *old.shape[1:]), old.dtype)
            grown[: len(old)] = old
            setattr(self, name, grown)
        self.capacity = new


class LiveItems:
    """The live item side of one model version (see the module docstring)."""

    def __init__(self, model: ItemsModel, rules: ItemRules | None = None,
                 catalog: Mapping[str, CatalogItem] | None = None) -> None:
        self.model = model
        self.rules = rules or ItemRules()
        self.version = model.version
        self.index = model.index
        self.n_model = len(model.item_ids)
        self.dim = int(model.context.shape[1])
        self.item_ids: list[str] = list(model.item_ids)
        self.row_of: dict[str, int] = {item_id: row for row, item_id in enumerate(self.item_ids)}
        self._context = np.zeros((self.n_model + 256, self.dim), np.float32)
        self._context[: self.n_model] = model.context
        size = len(self._context)
        self._blocked = np.zeros(size, bool)
        self._repeatable = np.zeros(size, bool)
        self._category = np.full(size, -1, np.int64)
        self._trend = np.zeros(size)
        if model.popularity is not None:  # a tie-breaking prior: one live event outweighs it
            self._trend[: self.n_model] = 1e-3 * model.popularity / max(float(model.popularity.max()), 1.0)
        self._trend_ref: float | None = None  # event time the stored counts are scaled to
        self._trend_newest: float | None = None
        self.category_ids: dict[str, int] = {}
        self._members: list[list[int]] = []
        self._new = _NewItems(self.dim)
        self._features = _FeatureSums(self.dim)
        self._catalog: dict[str, CatalogItem] = {}
        self._removed: set[str] = set()
        self._list_cache: dict[int, np.ndarray] = {}
        if model.fold_in is not None:
            self._solve = np.asarray(model.fold_in, np.float64)
        else:  # models without the regression's matrix: an isotropic stand-in
            scale = float(np.mean(np.sum(np.square(model.context, dtype=np.float64), axis=1))) or 1.0
            self._solve = np.eye(self.dim) / scale
        # The model's items first: their records build the feature sums new items' priors come from.
        records = (catalog or {}).items()
        for item_id, item in sorted(records, key=lambda record: record[0] not in self.row_of):
            self.apply_catalog(item_id, item)

    # -- rows -----------------------------------------------------------------------------

    @property
    def n_rows(self) -> int:
        return len(self.item_ids)

    @property
    def context(self) -> np.ndarray:
        """Context vectors of every row (model rows first, then new items)."""
        return self._context[: self.n_rows]

    def is_new(self, row: int) -> bool:
        return row >= self.n_model

    def row(self, item_id: str, category: str | None = None) -> int:
        """The row of ``item_id``, registering an item the model has never seen. ``category``
        (an event's) names the item's category when the catalog gives none."""
        row = self.row_of.get(item_id)
        if row is None:
            row = self._register(item_id)
        if category is not None and self._category[row] < 0:
            self._set_category(row, (category,))
        return row

    def rows_for(self, events: Sequence) -> np.ndarray:  # Sequence[streamrec.contract.Event]
        """The rows of events' items (registering new ones); an event's ``category`` names
        its item's category while the catalog gives none."""
        rows = np.empty(len(events), np.int64)
        row_of, category = self.row_of, self._category
        for j, event in enumerate(events):
            row = row_of.get(event.item_id)
            if row is None:
                row = self._register(event.item_id)
                category = self._category
            if event.category is not None and category[row] < 0:
                self._set_category(row, (event.category,))
                if row < self.n_model and self.model.target is not None and event.item_id not in self._catalog:
                    # what events say of a model item's category also informs new items' priors
                    self._features.add([("cat", event.category.lower())], self._context[row], self.model.target[row], 1.0)
            rows[j] = row
        return rows

    def _register(self, item_id: str) -> int:
        row = len(self.item_ids)
        self.item_ids.append(item_id)
        self.row_of[item_id] = row
        if row >= len(self._context):
            new = 2 * len(self._context)
            context = np.zeros((new, self.dim), np.float32)
            context[:row] = self._context[:row]
            self._context = context
            self._blocked, self._repeatable, self._category, self._trend = (
                np.concatenate([a, np.full(new - len(a), -1 if a.dtype == np.int64 else 0, a.dtype)])
                for a in (self._blocked, self._repeatable, self._category, self._trend))
        self._new.grow(row - self.n_model + 1)
        return row

    def _set_category(self, row: int, path: tuple[str, ...]) -> None:
        old = int(self._category[row])
        key = "/".join(path).lower() if path else None
        cid = -1 if key is None else self.category_ids.setdefault(key, len(self.category_ids))
        if cid == old:
            return
        if old >= 0:
            self._members[old].remove(row)
        if cid >= 0:
            while len(self._members) <= cid:
                self._members.append([])
            self._members[cid].append(row)
        self._category[row] = cid
        self._list_cache.clear()

    # -- the catalog ------------------------------------------------------------------------

    def apply_catalog(self, item_id: str, item: CatalogItem | None) -> None:
        """Apply one catalog record (None: a tombstone, the item is removed)."""
        old = self._catalog.get(item_id)
        row = self.row_of.get(item_id)
        if item is None:
            self._catalog.pop(item_id, None)
            self._removed.add(item_id)
            if row is not None:
                self._blocked[row] = True
                if row < self.n_model and old is not None and self.model.target is not None:
                    self._features.add(item_features(old), self._context[row], self.model.target[row], -1.0)
            self._list_cache.clear()
            return
        self._removed.discard(item_id)
        self._catalog[item_id] = item
        if row is None:
            row = self._register(item_id)
        self._blocked[row] = not item.available
        repeat = self.rules.repeat_purchase_categories
        self._repeatable[row] = bool(repeat) and any(level in repeat for level in item.category)
        if item.category:
            self._set_category(row, item.category)
        if row < self.n_model:
            if self.model.target is not None:
                if old is not None:
                    self._features.add(item_features(old), self._context[row], self.model.target[row], -1.0)
                self._features.add(item_features(item), self._context[row], self.model.target[row], 1.0)
        else:
            prior = self._features.prior(item_features(item))
            slot = row - self.n_model
            self._new.has_prior[slot] = prior is not None
            if prior is not None:
                self._new.prior_context[slot], self._new.prior_target[slot] = prior
            self._refresh(slot)
        self._list_cache.clear()

    def catalog_item(self, item_id: str) -> CatalogItem | None:
        return self._catalog.get(item_id)

    def blocked(self, row: int) -> bool:
        return bool(self._blocked[row])

    def blocked_rows(self, rows: np.ndarray) -> np.ndarray:
        """Whether each of ``rows`` is blocked now (unavailable or removed)."""
        return self._blocked[rows]

    def repeatable(self, row: int) -> bool:
        return bool(self._repeatable[row])

    # -- events ----------------------------------------------------------------------------

    def observe(self, rows: np.ndarray, type_codes: np.ndarray, ts: np.ndarray) -> None:
        """Count fresh events in the trending counts."""
        if len(rows) == 0:
            return
        h = self.rules.trending_half_life_s
        newest = float(np.max(ts))
        self._trend_newest = newest if self._trend_newest is None else max(newest, self._trend_newest)
        if self._trend_ref is None:
            self._trend_ref = newest
        elif (newest - self._trend_ref) / h > _RESCALE_AT:
            self._trend[: self.n_rows] *= 2.0 ** (-(newest - self._trend_ref) / h)
            self._trend_ref = newest
        weights = np.asarray(self.rules.trending_weights)[type_codes]
        np.add.at(self._trend, rows, weights * np.exp2((np.asarray(ts) - self._trend_ref) / h))
        self._list_cache.clear()

    def fold_in(self, row: int, before: np.ndarray | None, neighbour: int | None) -> None:
        """Refine new item ``row`` from one user's event on it: ``before`` is the user's vector
        just before the event (None for the user's first event), ``neighbour`` the row of the
        item the user acted on just before (None if none)."""
        slot = row - self.n_model
        if before is not None:
            self._new.z_sum[slot] += before
            self._new.z_n[slot] += 1
        if neighbour is not None and neighbour != row:
            self.link(row, neighbour)
        self._refresh(slot)

    def link(self, new_row: int, other: int) -> None:
        """Record that ``new_row`` and ``other`` were adjacent in a user's sequence."""
        context = self._context[other]
        if context.any():
            slot = new_row - self.n_model
            self._new.c_sum[slot] += context
            self._new.c_n[slot] += 1
            self._refresh(slot)

    def _refresh(self, slot: int) -> None:
        new = self._new
        lam = self.rules.new_item_prior_events
        n = new.z_n[slot]
        fold = (new.z_sum[slot] @ self._solve) * n ** -self.model.popularity_beta if n > 0 else None
        if new.has_prior[slot]:
            w = lam / (lam + n)
            target = new.prior_target[slot] if fold is None else w * new.prior_target[slot] + (1 - w) * fold
        else:
            target = fold
        new.searchable[slot] = target is not None
        new.target[slot] = 0.0 if target is None else target
        c_n = new.c_n[slot]
        mean = new.c_sum[slot] / c_n if c_n > 0 else None
        if new.has_prior[slot]:
            w = lam / (lam + c_n)
            context = new.prior_context[slot] if mean is None else w * new.prior_context[slot] + (1 - w) * mean
        else:
            context = mean
        if context is not None:
            self._context[self.n_model + slot] = context

    # -- search and lists ------------------------------------------------------------------

    def view(self, only: np.ndarray | None = None) -> SearchView:
        """A snapshot for one batch's search; ``only`` (a bool mask over :attr:`n_rows`, e.g.
        :meth:`category_mask`) restricts it to those rows (serving's category filter)."""
        m = self.n_rows - self.n_model
        blocked = self._blocked[: self.n_model]
        if only is not None:
            blocked = blocked | ~only[: self.n_model]
        allowed = np.packbits(~blocked, bitorder="little") if blocked.any() else None
        new_ok = self._new.searchable[:m] & ~self._blocked[self.n_model : self.n_rows]
        if only is not None:
            new_ok &= only[self.n_model : self.n_rows]
        return SearchView(self.index, self.n_model, self._new.target[:m].copy(), new_ok, allowed)

    def category_mask(self, level: str) -> np.ndarray | None:
        """Rows (a bool mask over :attr:`n_rows`) whose category path holds ``level`` at any
        depth (case-insensitive); None when no item's path holds it.

        >>> import faiss
        >>> from streamrec.contract import CatalogItem
        >>> context = np.eye(3, dtype=np.float32); index = faiss.IndexFlatIP(3); index.add(context)
        >>> items = LiveItems(ItemsModel("v1", ["a", "b", "c"], context, context, index))
        >>> items.apply_catalog("a", CatalogItem("a", category=("Beauty", "Skin")))
        >>> items.apply_catalog("c", CatalogItem("c", category=("Skin",)))
        >>> items.category_mask("skin").tolist(), items.category_mask("Toys")
        ([True, False, True], None)
        """
        wanted = level.lower()
        cids = [cid for key, cid in self.category_ids.items() if wanted in key.split("/")]
        members = [row for cid in cids if cid < len(self._members) for row in self._members[cid]]
        if not members:
            return None
        mask = np.zeros(self.n_rows, bool)
        mask[members] = True
        return mask

    def trending(self, category: int | None = None) -> np.ndarray:
        """Rows by decayed count, most first (of one category, or of the whole shop), cached
        until the next event or catalog change."""
        key = -1 if category is None else category
        rows = self._list_cache.get(key)
        if rows is None:
            rows = np.arange(self.n_rows) if category is None else np.array(self._members[category], np.int64)
            rows = rows[~self._blocked[rows]]
            rows = rows[np.argsort(-self._trend[rows], kind="stable")]
            self._list_cache[key] = rows
        return rows

    def finish_list(self, rows: Sequence[int], scores: Sequence[float], k: int, excluded: Collection[int],
                    recent_items: Sequence[str]) -> tuple[ScoredItem, ...]:
        """The published list: the model's candidates that are still eligible, then trending
        items of the user's recent categories (newest first), then the shop's, up to ``k``."""
        item_ids, blocked = self.item_ids, self._blocked
        chosen: list[ScoredItem] = []
        taken: set[int] = set()
        for row, score in zip(rows, scores):
            if row < 0 or len(chosen) == k:
                break
            if not blocked[row] and row not in excluded:
                chosen.append(ScoredItem(item_ids[row], score))
                taken.add(row)
        if len(chosen) < k:
            categories: list[int] = []
            for row in (self.row_of.get(item_id, -1) for item_id in reversed(recent_items)):
                cid = int(self._category[row]) if 0 <= row < self.n_rows else -1
                if cid >= 0 and cid not in categories:
                    categories.append(cid)
            for source, pool in [*(("category_trending", self.trending(c)) for c in categories),
                                 ("trending", self.trending())]:
                for row in pool.tolist():
                    if len(chosen) == k:
                        break
                    if row not in taken and row not in excluded:
                        chosen.append(ScoredItem(item_ids[row], self.trend_score(row), source))
                        taken.add(row)
                if len(chosen) == k:
                    break
        return tuple(chosen)

    def trend_score(self, row: int) -> float:
        """The decayed count of ``row`` at the newest event time seen (its trending score)."""
        value = float(self._trend[row])
        if self._trend_ref is None or self._trend_newest is None:
            return value
        return value * 2.0 ** (-(self._trend_newest - self._trend_ref) / self.rules.trending_half_life_s)

    @property
    def has_repeat(self) -> bool:
        """Whether this version can re-rank with the repeat step (it has targets and propensities)."""
        return self.model.target is not None and self.model.repeat is not None and self.model.repeat_by_age is not None

    @property
    def has_neighbours(self) -> bool:
        """Whether this version can re-rank with the neighbour step (it has targets and neighbours)."""
        return self.model.target is not None and self.model.neighbours is not None and self.model.neighbour_sims is not None

    def targets(self, rows: np.ndarray, view: SearchView) -> np.ndarray:
        """Target vectors of ``rows`` as ``view`` searches them (new items from its snapshot)."""
        model_rows = rows < self.n_model
        if model_rows.all():  # the usual case: one gather
            return np.asarray(self.model.target[rows], np.float32)
        out = np.zeros((len(rows), self.dim), np.float32)
        out[model_rows] = self.model.target[rows[model_rows]]
        new_rows = rows[~model_rows] - self.n_model
        known = new_rows < len(view.new_target)
        out[np.flatnonzero(~model_rows)[known]] = view.new_target[new_rows[known]]
        return out

    def repeat_lift(self, rows: np.ndarray) -> np.ndarray:
        """Repeat lift of ``rows``; 1 (the shop's average) for new items."""
        out = np.ones(len(rows), np.float64)
        model_rows = rows < self.n_model
        if self.model.repeat is not None:
            out[model_rows] = self.model.repeat[rows[model_rows]]
        return out

    def exclusions(self, purchased: Iterable[str]) -> set[int]:
        """Rows a user must not be shown: purchased items, except repeat-purchase categories."""
        row_of, repeatable = self.row_of, self._repeatable
        return {row for item in purchased if (row := row_of.get(item)) is not None and not repeatable[row]}


def rules_from_settings(settings) -> ItemRules:  # noqa: ANN001 - streamrec.config.RulesSettings
    return ItemRules(frozenset(settings.repeat_purchase_categories), settings.trending_half_life_s,
                     settings.new_item_prior_events)

