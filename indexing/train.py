"""Training item vectors from the event log.

The model ("co-occurrence embeddings") starts from a low-rank factorisation of a
*transition* matrix:

1. Per user, events are ordered by time and consecutive repeats of one item collapsed.
2. For every pair of events ``a`` before ``b`` at most ``window`` steps apart, the matrix
   gets ``gap_decay ** (gap - 1) * w(type_a) * w(type_b) / w_max**2`` at ``[a, b]`` (the
   user went from a to b) and ``backward_weight`` times that at ``[b, a]``.
3. Popularity is damped: ``M[i, j] / (count_i ** popularity_alpha * count_j ** popularity_beta)``.
4. A truncated SVD ``M ~ U S V^T`` gives ``context = U S^1/2`` and ``target = V S^1/2``.
5. With ``targets="regression"`` (the default) the targets are then refitted to what the
   worker computes (:func:`fit_targets`): a ridge regression of every event's item on the
   user's interest vector just before it; with ``item_bias`` the last context dimension is a
   constant, so each item also gets a learnt intercept (a popularity prior).

A user's interest vector is a decayed sum of context vectors of what they did
(:mod:`streamrec.core.interest`), so ``user . target[j]`` scores item ``j`` as the next item after
that history: an item-to-item recommender, smoothed by the low rank and served by FAISS.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from indexing.refine import Samples, feature_matrix, refine
from streamrec.contract import EVENT_TYPE_CODES, PURCHASE, Event
from streamrec.core.factors import fits_factors
from streamrec.core.interest import DEFAULT_EVENT_WEIGHTS, InterestParams, update_batch
from streamrec.core.items import FEATURE_GROUPS
from streamrec.core.neighbours import cooccurrence, top_neighbours
from streamrec.core.repeat import repeat_rates
from streamrec.core.taste import TasteStats, direction, fit_transform, ridge_inverse, update_taste

logger = logging.getLogger(__name__)

#: Catalogs up to this size are factorised with a dense SVD (exact, no ARPACK).
DENSE_SVD_UP_TO = 3000


@dataclass(frozen=True)
class TrainParams:
    """Hyper-parameters of item-vector training (defaults tuned in docs/quality.md)."""

    dim: int = 256
    window: int = 3
    gap_decay: float = 0.5
    backward_weight: float = 1.0
    popularity_alpha: float = 0.5
    popularity_beta: float = 0.3
    event_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    seed: int = 0
    #: SVD of the transition matrix: "arpack" (exact) or "randomized" (fast; see factorise).
    solver: str = "randomized"
    #: Target vectors: "svd" (``V S^1/2``) or "regression" (see fit_targets).
    targets: str = "regression"
    #: Ridge of the target regression, relative to the mean eigenvalue of its Gram matrix.
    ridge: float = 0.1
    #: With regression targets: the last dimension of every context vector is a constant,
    #: so the regression learns a per-item intercept (a learnt popularity prior).
    item_bias: bool = True
    #: Pseudo events shrinking each item's repeat lift towards 1
    #: (:func:`streamrec.core.repeat.repeat_rates`).
    repeat_prior: float = 10.0
    #: The taste map of :mod:`streamrec.core.taste` (with ``InterestParams.taste_decay > 0``):
    #: "full" (a learnt d x d ``W``) or "scalar" (``W = alpha I``, one learnt coefficient).
    taste_map: str = "full"
    #: Ridge of the taste map's fit, relative to the mean eigenvalues of its Gram matrices.
    taste_ridge: float = 0.1
    #: Neighbours kept per item for the neighbour step (:mod:`streamrec.core.neighbours`; 0: none).
    knn_neighbours: int = 30
    #: Scale of the neighbours' similarities: "row" (each item's sum to 1) or "global" (divided
    #: by the mean row sum; :func:`streamrec.core.neighbours.top_neighbours`).
    knn_norm: str = "row"
    #: Passes of the softmax refinement of the context and target vectors after the regression
    #: (:mod:`indexing.refine`; 0: none), its learning rate (times each side's RMS entry) and
    #: the catalog size up to which its softmax is over every item (above: a shared sample of
    #: that many per batch), and the samples per pass (a random subset of larger logs; bounds
    #: the time on large training windows).
    refine_epochs: int = 5
    refine_lr: float = 0.01
    refine_candidates: int = 16384
    refine_samples: int = 262_144
    #: The refinement's learning rate: "constant" or falling "linear"-ly to 0.
    refine_schedule: str = "constant"
    #: Dropout on the query's coordinates while refining (0: none).
    refine_dropout: float = 0.0
    #: The refined vectors are the mean of the iterates over this last share of its steps (0: the
    #: last iterate; :func:`indexing.refine.refine`'s ``average``).
    refine_average: float = 0.0
    #: Each refinement step moves the vectors ``refine_lr * refine_pull`` of the way back to the
    #: regression's (a weight decay towards them; 0: none).
    refine_pull: float = 0.0
    #: Each refinement sample's softmax leaves out the recent items the worker would not
    #: recommend then (bought before; :attr:`indexing.refine.Samples.excluded`).
    refine_mask: bool = False
    #: Label smoothing of the refinement's softmax: each sample's target puts this share evenly
    #: on every item of its softmax and the rest on its answer (0: none).
    refine_smoothing: float = 0.0
    #: Where the training data has the catalog's features (``Interactions.item_features``), the
    #: refinement gives each feature of ``refine_feature_groups`` shared by at least
    #: ``refine_feature_items`` items its own vectors, added to its items' and folded into them at
    #: the end (:func:`indexing.refine.refine`'s ``features``): a brand's items learn together.
    #: Without a catalog it changes nothing. The groups are those of
    #: :func:`streamrec.core.items.item_features`, comma-separated: ``cat`` (every level of the
    #: category path), ``brand``, ``attr`` (attributes) and ``word`` (title words; not a default:
    #: on Online Retail, whose catalog has titles only, they lowered validation HR@10, docs/quality.md).
    refine_features: bool = True
    refine_feature_groups: str = "cat,brand,attr"
    refine_feature_items: int = 2
    #: The factor step's item factors (:mod:`streamrec.core.factors`), fitted only when the
    #: serving ``InterestParams.factor_weight`` is > 0 or "auto" (the summary's ``factors.weight``
    #: is then the weight chosen for the version, 0 until a chooser sets it): implicit-feedback ALS with this many factors,
    #: its regularisation, the confidence of a seen item and the ALS sweeps.
    factors: int = 128
    factor_reg: float = 20.0
    factor_alpha: float = 40.0
    factor_iterations: int = 15

    def __post_init__(self) -> None:
        if self.factors < 1 or not self.factor_reg > 0 or not self.factor_alpha >= 1 or self.factor_iterations < 1:
            raise ValueError(f"factors must be >= 1, factor_reg > 0, factor_alpha >= 1 and factor_iterations >= 1, got "
                             f"{self.factors}, {self.factor_reg}, {self.factor_alpha} and {self.factor_iterations}")
        if self.refine_epochs < 0 or not self.refine_lr > 0 or min(self.refine_candidates, self.refine_samples) < 1:
            raise ValueError(f"refine_epochs must be >= 0, refine_lr > 0 and refine_candidates, refine_samples >= 1, "
                             f"got {self.refine_epochs}, {self.refine_lr}, {self.refine_candidates}, {self.refine_samples}")
        if self.knn_neighbours < 0 or self.knn_norm not in ("row", "global"):
            raise ValueError(f"knn_neighbours must be >= 0 and knn_norm 'row' or 'global', got "
                             f"{self.knn_neighbours} and {self.knn_norm!r}")
        if self.dim < 1 or self.window < 1:
            raise ValueError(f"dim and window must be >= 1, got {self.dim} and {self.window}")
        if self.solver not in ("arpack", "randomized"):
            raise ValueError(f"solver must be 'arpack' or 'randomized', got {self.solver!r}")
        if self.targets not in ("svd", "regression"):
            raise ValueError(f"targets must be 'svd' or 'regression', got {self.targets!r}")
        if not 0 <= self.refine_pull * self.refine_lr < 1:
            raise ValueError(f"refine_pull must be >= 0 and refine_lr * refine_pull < 1, got {self.refine_pull}")
        if not 0 <= self.refine_average <= 1:
            raise ValueError(f"refine_average must be in [0, 1], got {self.refine_average}")
        if self.refine_feature_items < 1:
            raise ValueError(f"refine_feature_items must be >= 1, got {self.refine_feature_items}")
        unknown = set(self.feature_groups()) - set(FEATURE_GROUPS)
        if unknown or not self.feature_groups():
            raise ValueError(f"refine_feature_groups must name some of {', '.join(FEATURE_GROUPS)} (comma-separated), "
                             f"got {self.refine_feature_groups!r}")
        if not 0 <= self.refine_smoothing < 1:
            raise ValueError(f"refine_smoothing must be in [0, 1), got {self.refine_smoothing}")
        if not 0 <= self.refine_dropout < 1:
            raise ValueError(f"refine_dropout must be in [0, 1), got {self.refine_dropout}")
        if self.refine_schedule not in ("constant", "linear"):
            raise ValueError(f"refine_schedule must be 'constant' or 'linear', got {self.refine_schedule!r}")
        if self.taste_map not in ("full", "scalar"):
            raise ValueError(f"taste_map must be 'full' or 'scalar', got {self.taste_map!r}")
        if not self.ridge > 0 or not self.taste_ridge >= 0:
            raise ValueError(f"ridge must be > 0 and taste_ridge >= 0, got {self.ridge} and {self.taste_ridge}")

    def feature_groups(self) -> tuple[str, ...]:
        """The catalog feature groups the refinement shares (``refine_feature_groups``, split)."""
        return tuple(group.strip() for group in self.refine_feature_groups.split(",") if group.strip())


@dataclass
class Interactions:
    """Events grouped by user and ordered by time, as integer arrays.

    Events of user ``u`` are ``items[user_ptr[u]:user_ptr[u + 1]]`` (rows into ``item_ids``),
    with the matching ``types`` (codes of ``EVENT_TYPES``) and ``ts``.
    """

    item_ids: list[str]
    user_ids: list[str]
    user_ptr: np.ndarray
    items: np.ndarray
    types: np.ndarray
    ts: np.ndarray
    #: The catalog's features of the items (item id -> ``(group, name)`` pairs,
    #: :func:`streamrec.core.items.catalog_features`; None: no catalog). With
    #: ``TrainParams.refine_features`` the refinement lets items that share a feature learn together.
    item_features: Mapping[str, tuple[Hashable, ...]] | None = None

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def user_of_event(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.user_ids)), np.diff(self.user_ptr))


def interactions_from_arrays(
    user_keys: np.ndarray, item_keys: np.ndarray, type_codes: np.ndarray, ts: np.ndarray,
    item_features: Mapping[str, tuple[Hashable, ...]] | None = None,
) -> Interactions:
    """Group parallel arrays of events (in arrival order) by user, stable-sorted by time."""
    item_ids, item_rows = np.unique(item_keys, return_inverse=True)
    user_ids, user_rows = np.unique(user_keys, return_inverse=True)
    order = np.lexsort((np.arange(len(ts)), ts, user_rows))
    counts = np.bincount(user_rows, minlength=len(user_ids))
    return Interactions(
        item_ids=[str(i) for i in item_ids],
        user_ids=[str(u) for u in user_ids],
        user_ptr=np.r_[0, np.cumsum(counts)].astype(np.int64),
        items=item_rows[order].astype(np.int64),
        types=np.asarray(type_codes, dtype=np.int8)[order],
        ts=np.asarray(ts, dtype=np.float64)[order],
        item_features=item_features,
    )


def interactions_from_events(events: Iterable[Event]) -> Interactions:
    users, items, types, ts = [], [], [], []
    for event in events:
        if event.type not in EVENT_TYPE_CODES:  # an impression: what a page showed, not an action
            continue
        users.append(event.user_id)
        items.append(event.item_id)
        types.append(EVENT_TYPE_CODES[event.type])
        ts.append(event.ts)
    if not users:
        raise ValueError("no events to train on")
    return interactions_from_arrays(np.array(users), np.array(items), np.array(types), np.array(ts))


def transition_matrix(data: Interactions, params: TrainParams) -> sp.csr_matrix:
    """The popularity-damped, decayed item-to-item transition matrix (see module doc)."""
    users = data.user_of_event()
    items, types = data.items, data.types
    keep = np.r_[True, (items[1:] != items[:-1]) | (users[1:] != users[:-1])]
    users, items, types = users[keep], items[keep], types[keep]
    weights = np.array([params.event_weights.get(t, 0.0) for t in EVENT_TYPE_CODES], dtype=np.float64)
    w = weights[types] / max(weights.max(), 1e-12)
    rows, cols, vals = [], [], []
    for gap in range(1, params.window + 1):
        same = users[gap:] == users[:-gap]
        a, b = items[:-gap][same], items[gap:][same]
        value = params.gap_decay ** (gap - 1) * w[:-gap][same] * w[gap:][same]
        rows += [a, b]
        cols += [b, a]
        vals += [value, params.backward_weight * value]
    n = data.n_items
    if rows:
        matrix = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    else:
        matrix = sp.csr_matrix((n, n))
    counts = np.maximum(np.bincount(items, minlength=n), 1).astype(np.float64)
    matrix = sp.diags(counts**-params.popularity_alpha) @ matrix @ sp.diags(counts**-params.popularity_beta)
    return matrix.tocsr()


def _orthonormal(block: np.ndarray) -> np.ndarray:
    """An orthonormal basis of ``block``'s columns (directions with no weight are dropped),
    from the eigen-decomposition of its Gram matrix: matrix products only, several times
    faster than a Householder QR of a tall block."""
    for _ in range(2):  # the second pass restores orthonormality to machine precision
        if block.shape[1] == 0:
            break
        values, vectors = np.linalg.eigh(block.T @ block)
        keep = values > max(values.max(), 0.0) * 1e-12
        block = block @ (vectors[:, keep] / np.sqrt(values[keep]))
    return block


def randomized_svd(
    matrix: sp.spmatrix, rank: int, *, seed: int = 0, oversample: int = 64, power_iterations: int = 4
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``rank`` singular triplets ``(U, S, V^T)`` by randomized subspace iteration
    (Halko, Martinsson and Tropp 2011), largest first; fewer where the matrix has lower rank."""
    rng = np.random.default_rng(seed)
    forward = sp.csr_matrix(matrix, dtype=np.float64)
    backward = forward.T.tocsr()
    width = min(rank + oversample, *forward.shape)
    basis = _orthonormal(forward @ rng.standard_normal((forward.shape[1], width)))
    for _ in range(power_iterations):
        basis = _orthonormal(forward @ _orthonormal(backward @ basis))
    if basis.shape[1] == 0:  # an all-zero matrix
        return np.zeros((forward.shape[0], 0)), np.zeros(0), np.zeros((0, forward.shape[1]))
    # matrix ~ basis @ small^T with small = matrix^T basis (n x width); an SVD of the tall
    # ``small`` through its orthonormal basis keeps every step a matrix product.
    small = backward @ basis
    small_basis = _orthonormal(small)
    left, s, right_t = np.linalg.svd(small.T @ small_basis, full_matrices=False)
    rank = min(rank, len(s))
    return (basis @ left)[:, :rank], s[:rank], (small_basis @ right_t.T).T[:rank]


def factorise(
    matrix: sp.csr_matrix, dim: int, seed: int = 0, *, solver: str = "arpack"
) -> tuple[np.ndarray, np.ndarray]:
    """Rank-``dim`` SVD split symmetrically: ``(U S^1/2, V S^1/2)``, float32, zero-padded
    when the catalog is smaller than ``dim`` (or the matrix has lower rank).

    ``solver="randomized"``: :func:`randomized_svd`, exact when the catalog is no larger than
    ``dim`` plus its oversampling, and much faster than ARPACK on large, very sparse
    matrices. ``solver="arpack"``: an exact dense SVD up to :data:`DENSE_SVD_UP_TO` items,
    scipy's ``svds`` above.
    """
    if solver not in ("arpack", "randomized"):
        raise ValueError(f"solver must be 'arpack' or 'randomized', got {solver!r}")
    n = matrix.shape[0]
    rank = min(dim, n)
    if solver == "randomized":
        u, s, vt = randomized_svd(matrix, rank, seed=seed)
        rank = len(s)
    elif n <= DENSE_SVD_UP_TO:
        u, s, vt = np.linalg.svd(matrix.toarray(), full_matrices=False)
        u, s, vt = u[:, :rank], s[:rank], vt[:rank]
    else:
        rank = min(rank, n - 2)
        v0 = np.random.default_rng(seed).standard_normal(n)
        u, s, vt = svds(matrix.astype(np.float64), k=rank, v0=v0)
        order = np.argsort(-s)
        u, s, vt = u[:, order], s[order], vt[order]
    root = np.sqrt(np.maximum(s, 0.0))
    context = np.zeros((n, dim), dtype=np.float32)
    target = np.zeros((n, dim), dtype=np.float32)
    context[:, :rank] = u * root
    target[:, :rank] = vt.T * root
    return context, target


def fit_targets(
    data: Interactions, context: np.ndarray, params: TrainParams, interest: InterestParams | None = None
) -> np.ndarray:
    """Target vectors fitted to what the worker computes (see :func:`fit_targets_and_solve`)."""
    return fit_targets_and_solve(data, context, params, interest)[1]


def fit_targets_and_solve(
    data: Interactions, context: np.ndarray, params: TrainParams, interest: InterestParams | None = None
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Target vectors fitted to what the worker computes: ridge regression of each event's
    item on the user's vector just before it.

    Every user's events are replayed through :func:`streamrec.core.interest.update_batch` with the
    serving ``interest`` parameters; for every event ``t`` that has a predecessor and is not
    a repeat of it, the user vector ``z_t`` before the event is a sample whose answer is the
    event's item. ``target[j] = (sum of z_t over samples answered j) @ (Z^T Z + r I)^-1``
    (``r`` = ``ridge`` times the mean eigenvalue of ``Z^T Z``), divided by
    ``count_j ** popularity_beta`` as in the transition matrix. Cost: O(events * d^2);
    memory O((items + d) * d), whatever the number of events.

    With ``interest.taste_decay > 0`` the users' taste vectors are replayed too and the
    targets are fitted with the taste map on the query (:func:`streamrec.core.taste.fit_transform`).

    Returns the taste map ``W`` (None without taste), the targets and ``(Z^T Z + r I)^-1``, with
    which a new item's target is folded in from its own samples later (:mod:`streamrec.core.items`).
    """
    interest = interest or InterestParams()
    users, position, is_sample = next_item_events(data)
    n_items, dim = context.shape
    vectors = np.zeros((len(data.user_ids), dim), np.float32)
    last_ts = np.full(len(data.user_ids), np.nan)
    gram = np.zeros((dim, dim))
    answers = np.zeros((n_items, dim))
    tasting = interest.taste_decay > 0
    taste = np.zeros_like(vectors) if tasting else None
    stats = TasteStats(n_items, dim) if tasting else None
    # Step s applies every user's s-th event: one vectorised update per step.
    by_position = np.argsort(position, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(position))] if len(position) else np.zeros(1, np.int64)
    for step in range(len(bounds) - 1):
        events = by_position[bounds[step] : bounds[step + 1]]
        samples = events[is_sample[events]]
        if len(samples):
            before = vectors[users[samples]].astype(np.float64)
            gram += before.T @ before
            answer_matrix = sp.csr_matrix(
                (np.ones(len(samples)), (data.items[samples], np.arange(len(samples)))), shape=(n_items, len(samples))
            )
            answers += answer_matrix @ before
            if stats is not None:
                stats.add(before, direction(taste[users[samples]]).astype(np.float64), answer_matrix)
        if taste is not None:
            update_taste(taste, last_ts, users[events], data.items[events], data.types[events].astype(np.int64),
                         data.ts[events], context, interest)
        update_batch(vectors, last_ts, users[events], data.items[events], data.types[events].astype(np.int64),
                     data.ts[events], context, interest)
    counts = np.maximum(np.bincount(data.items, minlength=n_items), 1).astype(np.float64)
    if stats is not None:
        return fit_transform(stats, gram, answers, counts**-params.popularity_beta, params.ridge,
                             kind=params.taste_map, map_ridge=params.taste_ridge)
    solve = ridge_inverse(gram, params.ridge)
    target = answers @ solve
    return None, (target * counts[:, None] ** -params.popularity_beta).astype(np.float32), solve


def next_item_events(data: Interactions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per event: its user, its position among the user's events, and whether it is a training
    sample of the next item (it follows another event of the user and is not a repeat of it).

    >>> data = interactions_from_arrays(np.array(["u", "u", "u", "v"]), np.array(["a", "a", "b", "c"]),
    ...                                 np.zeros(4, np.int8), np.arange(4.0))
    >>> [part.tolist() for part in next_item_events(data)]
    [[0, 0, 0, 1], [0, 1, 2, 0], [False, False, True, False]]
    """
    users = data.user_of_event()
    position = np.arange(len(data.items)) - data.user_ptr[:-1][users]
    repeat = np.r_[False, (data.items[1:] == data.items[:-1]) & (users[1:] == users[:-1])]
    return users, position, (position > 0) & ~repeat


def next_item_samples(data: Interactions, interest: InterestParams, history: int = 12) -> Samples:
    """The samples of :func:`fit_targets_and_solve` (:func:`next_item_events`), each with the
    coefficients its query has on the user's last ``history`` events under ``interest``'s decays
    and weights, and which of those events' items the worker would not show then (purchases of
    another item than the answer).

    >>> data = interactions_from_arrays(np.array(["u"] * 3), np.array(["a", "b", "c"]),
    ...                                 np.array([PURCHASE, 0, 0], np.int8), np.zeros(3))
    >>> s = next_item_samples(data, InterestParams(event_decay=0.5), history=2)
    >>> s.items.tolist(), s.coef.tolist(), s.answers.tolist(), s.excluded.tolist()
    ([[0, 0], [1, 0]], [[3.0, 0.0], [1.0, 1.5]], [1, 2], [[True, False], [False, True]])
    """
    users, position, is_sample = next_item_events(data)
    starts = data.user_ptr[:-1][users]
    weight = interest.weight_table()[data.types.astype(np.int64)].astype(np.float64)
    gap = np.r_[0.0, np.maximum(0.0, np.diff(data.ts))]
    log_factor = np.log(interest.event_decay) + np.log(0.5) * gap / interest.half_life_s
    log_factor[position == 0] = 0.0
    cumulative = np.cumsum(log_factor)  # coef of event a in the query after event b: exp(cum[b] - cum[a])
    at = np.flatnonzero(is_sample)
    items = np.zeros((len(at), history), np.int64)
    coef = np.zeros((len(at), history), np.float32)
    excluded = np.zeros((len(at), history), bool)
    answers = data.items[at].astype(np.int64)
    for age in range(history):
        source = at - 1 - age
        ok = source >= starts[at]
        items[ok, age] = data.items[source[ok]]
        coef[ok, age] = weight[source[ok]] * np.exp(cumulative[at - 1][ok] - cumulative[source[ok]])
        excluded[ok, age] = (data.types[source[ok]] == PURCHASE) & (data.items[source[ok]] != answers[ok])
    return Samples(items, coef, answers, excluded)


@dataclass
class TrainedModel:
    """Item vectors and what the live item side needs besides (:mod:`streamrec.core.items`)."""

    item_ids: list[str]
    context: np.ndarray
    target: np.ndarray
    summary: dict[str, Any]
    #: ``(Z^T Z + r I)^-1`` of the target regression (None with ``targets="svd"``).
    fold_in: np.ndarray | None
    #: Training events per item.
    popularity: np.ndarray
    #: Per item, its repeat lift (:func:`streamrec.core.repeat.repeat_rates`); the re-visit share
    #: by age is ``summary["repeat_by_age"]``.
    repeat: np.ndarray | None = None
    #: The taste map ``W`` (d x d) of :mod:`streamrec.core.taste` (None: no taste).
    taste: np.ndarray | None = None
    #: Each item's best neighbours and their similarities (:func:`streamrec.core.neighbours.top_neighbours`;
    #: None: no neighbour step).
    neighbours: np.ndarray | None = None
    neighbour_sims: np.ndarray | None = None
    #: ALS item factors of the factor step (:mod:`streamrec.core.factors`; None: no step).
    factors: np.ndarray | None = None

    @classmethod
    def from_artifact(cls, model: Any) -> TrainedModel:
        """A saved version loaded back (an :class:`indexing.artifact.ModelArtifact`): its vectors,
        training summary and extras, as the training left them. Raises ValueError for a version
        saved without its target vectors."""
        extras, n = model.extras, len(model.item_ids)
        if extras.get("target") is None:
            raise ValueError(f"model {model.version} has no target vectors (target.npy)")
        return cls(list(model.item_ids), model.context, extras["target"], dict(model.meta.get("training", {})),
                   extras.get("fold_in"), extras.get("popularity", np.zeros(n)), extras.get("repeat"),
                   extras.get("taste"), extras.get("neighbours"), extras.get("neighbour_sims"), extras.get("factors"))

    def extras(self) -> dict[str, np.ndarray]:
        """The arrays saved beside the vectors (:data:`indexing.artifact.EXTRAS`), those it has
        (the target vectors are saved by :func:`indexing.artifact.save_artifact` itself)."""
        extras = {"popularity": self.popularity}
        if self.repeat is not None:
            extras["repeat"] = self.repeat
        if self.fold_in is not None:
            extras["fold_in"] = self.fold_in
        if self.taste is not None:
            extras["taste"] = self.taste
        if self.neighbours is not None and self.neighbour_sims is not None:
            extras["neighbours"], extras["neighbour_sims"] = self.neighbours, self.neighbour_sims
        if self.factors is not None:
            extras["factors"] = self.factors
        return extras

    def save(self, models_dir: Path, *, factory: str = "Flat", source: str | None = None, number: int | None = None,
             extra_meta: dict[str, Any] | None = None, target_recall: float | None = None,
             queries: np.ndarray | None = None) -> Path:
        """Save as a new model version (:func:`indexing.artifact.save_artifact`; an approximate
        index is calibrated to ``target_recall``, default 0.95, on ``queries``: user vectors
        where the caller has them); the folder."""
        from indexing.artifact import save_artifact

        summary = self.summary if source is None else {**self.summary, "source": source}
        return save_artifact(models_dir, self.item_ids, self.context, self.target, factory=factory,
                             training=summary, extras=self.extras(), number=number, extra_meta=extra_meta,
                             queries=queries if queries is not None and len(queries) else None,
                             **({} if target_recall is None else {"target_recall": target_recall}))


def train_item_vectors(
    data: Interactions, params: TrainParams, interest: InterestParams | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Train ``(context, target, summary)`` from grouped interactions (:func:`train_model`)."""
    model = train_model(data, params, interest)
    return model.context, model.target, model.summary


def features_of(data: Interactions, params: TrainParams) -> sp.csr_matrix | None:
    """The refinement's items x features matrix (:func:`indexing.refine.feature_matrix`) of
    ``data``'s catalog features, or None without them or with ``refine_features`` off."""
    if not params.refine_features or not data.item_features:
        return None
    groups = set(params.feature_groups())
    chosen = {item_id: [feature for feature in features if feature[0] in groups]
              for item_id, features in data.item_features.items()}
    return feature_matrix(data.item_ids, chosen, params.refine_feature_items)


def train_model(data: Interactions, params: TrainParams, interest: InterestParams | None = None) -> TrainedModel:
    """Train item vectors from grouped interactions.

    ``interest``: the serving parameters the regression targets are fitted for (default
    ``InterestParams()``, what the worker uses); unused with ``targets="svd"``.
    """
    started = time.perf_counter()
    matrix = transition_matrix(data, params)
    context, target = factorise(matrix, params.dim, params.seed, solver=params.solver)
    if params.targets == "regression" and params.item_bias:
        scale = float(np.sqrt(np.mean(np.sum(context[:, :-1] ** 2, axis=1)))) or 1.0
        context[:, -1] = scale
    solve = taste = None
    if params.targets == "regression":
        taste, target, solve = fit_targets_and_solve(data, context, params, interest)
    refined = None
    if params.refine_epochs > 0 and taste is None:  # the taste map is fitted for the regression's vectors
        samples = next_item_samples(data, interest or InterestParams())
        refined = refine(context, target, samples, epochs=params.refine_epochs, lr=params.refine_lr,
                         candidates=params.refine_candidates, per_epoch=params.refine_samples,
                         schedule=params.refine_schedule, dropout=params.refine_dropout,
                         average=params.refine_average, pull=params.refine_pull, mask=params.refine_mask,
                         smoothing=params.refine_smoothing, features=features_of(data, params),
                         keep_last=params.item_bias and params.targets == "regression", seed=params.seed)
        if solve is not None:  # new items fold in through the refined contexts, mapped onto the refined targets
            solve = refined_fold_in(samples, context, target, params)
    users = data.user_of_event()
    repeat, repeat_by_age = repeat_rates(users, data.items, data.n_items, prior=params.repeat_prior)
    neighbours = sims = None
    if params.knn_neighbours > 0:
        neighbours, sims = top_neighbours(cooccurrence(users, data.items, data.n_items),
                                          params.knn_neighbours, params.knn_norm)
    factors = None
    if fits_factors((interest or InterestParams()).factor_weight):
        factors = fit_factors(users, data.items, len(data.user_ids), data.n_items, params)
    summary = {
        "users": len(data.user_ids),
        "items": data.n_items,
        "events": int(len(data.items)),
        "events_by_type": {t: int(n) for t, n in zip(EVENT_TYPE_CODES, np.bincount(data.types, minlength=len(EVENT_TYPE_CODES)))},
        "ts_range": [float(data.ts.min()), float(data.ts.max())] if len(data.ts) else None,
        "nonzeros": int(matrix.nnz),
        "params": {k: v for k, v in params.__dict__.items()},
        "repeat_by_age": [round(float(x), 8) for x in repeat_by_age],
        "taste_decay": (interest or InterestParams()).taste_decay if taste is not None else 0.0,
        **({"refine": refined} if refined is not None else {}),
        **({"factors": {"reg": params.factor_reg, "confidence": params.factor_alpha, "weight": 0.0}}
           if factors is not None else {}),
        "seconds": round(time.perf_counter() - started, 3),
    }
    logger.info("trained %d item vectors (d=%d) in %.1f s", data.n_items, params.dim, summary["seconds"])
    popularity = np.bincount(data.items, minlength=data.n_items).astype(np.float32)
    return TrainedModel(data.item_ids, context, target, summary, solve, popularity, repeat, taste, neighbours, sims,
                        factors)


#: Ridge of :func:`refined_fold_in`'s map, relative to the mean eigenvalue of its Gram matrix.
FOLD_IN_MAP_RIDGE = 1e-3


def refined_fold_in(samples: Samples, context: np.ndarray, target: np.ndarray, params: TrainParams) -> np.ndarray:
    """The matrix a new item's target is folded in with after the refinement
    (:meth:`streamrec.core.items.LiveItems.fold_in`: ``(sum of z) @ solve / n ** popularity_beta``
    over the item's ``n`` samples).

    The regression's ``(Z^T Z + r I)^-1`` over the refined contexts' queries gives targets on the
    regression's scale, but the refinement sharpens the model items' targets (their scores spread
    about three times wider), so folded-in items never reached a list (docs/lifecycle.md, ninth
    session). The rule is applied to every model item's own samples, ``F``, and the least-squares
    map ``M`` from ``F`` to the refined targets (ridge :data:`FOLD_IN_MAP_RIDGE` times the mean
    eigenvalue of ``F^T F``) is folded into the matrix: ``solve = (Z^T Z + r I)^-1 M``, the same
    shape, read by the live side as before."""
    n_items, dim = target.shape
    gram, sums = np.zeros((dim, dim)), np.zeros((n_items, dim))
    for start in range(0, len(samples), 8192):
        chosen = slice(start, start + 8192)
        queries = samples.queries(context, chosen).astype(np.float64)
        gram += queries.T @ queries
        answers = samples.answers[chosen]
        sums += sp.csr_matrix((np.ones(len(answers)), (answers, np.arange(len(answers)))),
                              shape=(n_items, len(answers))) @ queries
    solve = ridge_inverse(gram, params.ridge)
    counts = np.bincount(samples.answers, minlength=n_items)
    seen = counts > 0
    folded = (sums[seen] @ solve) * counts[seen, None].astype(np.float64) ** -params.popularity_beta
    outer = folded.T @ folded
    ridge = FOLD_IN_MAP_RIDGE * max(np.trace(outer) / dim, 1e-300)
    mapping = np.linalg.solve(outer + ridge * np.eye(dim), folded.T @ target[seen].astype(np.float64))
    return solve @ mapping


def fit_factors(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int, params: TrainParams) -> np.ndarray:
    """The factor step's item factors (float32, ``n_items x params.factors``): implicit-feedback
    ALS (:func:`fit_als`) of the binary user x item matrix, confidence ``params.factor_alpha`` for
    a seen item (the fold-in of :func:`streamrec.core.factors.fold_in` solves the same least
    squares for one user)."""
    matrix = sp.csr_matrix((np.ones(len(items), np.float32), (users, items)), shape=(n_users, n_items))
    matrix.data[:] = 1.0  # seen or not
    model = fit_als(matrix, factors=params.factors, regularization=params.factor_reg, alpha=params.factor_alpha,
                    iterations=params.factor_iterations, seed=params.seed)
    return np.ascontiguousarray(model.item_factors, dtype=np.float32)


def fit_als(user_items: sp.csr_matrix, *, factors: int, regularization: float, alpha: float, iterations: int,
            seed: int):  # noqa: ANN201 - implicit.cpu.als.AlternatingLeastSquares
    """``implicit``'s CPU ALS fitted on ``user_items`` (users x items, float32 confidences), with
    BLAS held to one thread (implicit runs its own): the factor step's items and the ALS baseline's."""
    import warnings

    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"), warnings.catch_warnings():
        # implicit runs its own threads and warns about BLAS threads even inside the limit.
        warnings.filterwarnings("ignore", message=".*threadpool.*", category=RuntimeWarning)
        model = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                        iterations=iterations, random_state=seed)
        model.fit(user_items, show_progress=False)
    return model
