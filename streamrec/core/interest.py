"""How an event changes a user's interest vector: the pure numerical core of the worker.

A user's interest vector lives in the *context* space of the item vectors; recommendations
are the items whose *target* vectors have the largest inner product with it. One event
``(item, type, ts)`` updates it in O(d)::

    f = event_decay * 0.5 ** (max(0, ts - last_ts) / half_life_s)
    v <- f * v + weight[type] * context[item]
    last_ts <- max(last_ts, ts)

so the vector is an exponentially decayed, type-weighted sum of the context vectors of
what the user did, most recent first (see docs/model.md). The same functions serve the
Faust agent, the offline evaluation harness and the tests; nothing here knows about Kafka.

>>> import numpy as np
>>> p = InterestParams(event_decay=0.5, half_life_s=float("inf"))
>>> v, ts = update_vector(np.zeros(2, np.float32), None, np.array([1, 0], np.float32), "view", 10.0, p)
>>> v, ts = update_vector(v, ts, np.array([0, 1], np.float32), "purchase", 11.0, p)
>>> v.tolist()
[0.5, 3.0]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streamrec.contract import EVENT_TYPES
from streamrec.core.factors import AUTO

DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 1.0,
    "add_to_cart": 2.0,
    "favorite": 2.0,
    "purchase": 3.0,
}


@dataclass(frozen=True)
class InterestParams:
    """Hyper-parameters of the user-vector update (defaults tuned in docs/quality.md)."""

    #: Weight of each event type in the user's vector.
    event_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    #: Geometric decay applied to the old vector at every event (sequence recency).
    event_decay: float = 0.5
    #: Time decay: the old vector halves every ``half_life_s`` seconds of event time.
    half_life_s: float = 7 * 24 * 3600.0
    #: How many recommendations to publish.
    k: int = 10
    #: Most recent purchased items kept per user, never recommended again.
    max_exclusions: int = 256
    #: Most recent events kept per user, to rebuild the vector when item vectors change.
    history_size: int = 32
    #: Repeat step (:mod:`streamrec.core.repeat`): weight of ``lift * recency`` added to a recent
    #: item's score (0: off).
    repeat_weight: float = 0.3
    #: Diversity step (:mod:`streamrec.core.diversity`): MMR strength λ over the candidates (0: off).
    diversity: float = 0.0
    #: Long-term taste (:mod:`streamrec.core.taste`): per-event decay of the taste vector (0: off).
    taste_decay: float = 0.0
    #: Neighbour step (:mod:`streamrec.core.neighbours`): weight of the summed similarities of a
    #: candidate to the user's last ``knn_events`` items, each weighted ``knn_decay ** age`` (0: off).
    knn_weight: float = 0.03
    knn_decay: float = 0.7
    knn_events: int = 5
    #: With the neighbour step's candidates: the ``pop_items`` items with the most training events,
    #: each with a bonus ``pop_weight * count / the largest count`` (0: off).
    pop_weight: float = 0.001
    pop_items: int = 20
    #: Factor step (:mod:`streamrec.core.factors`): weight of the user's ALS list in the
    #: reciprocal-rank fusion with the served list, and both lists' length (weight 0: off).
    #: ``"auto"`` (the default): each model version's own weight, chosen at its training on the
    #: shop's held-out events (0 where the step does not clearly pay).
    factor_weight: float | str = AUTO
    factor_depth: int = 50
    #: Whether the factor list may hold the user's recent items (False: they are the repeat step's
    #: alone); ``"auto"``: each version's own answer, chosen with its weight.
    factor_repeats: bool | str = AUTO

    def __post_init__(self) -> None:
        if (self.factor_weight != AUTO and not (isinstance(self.factor_weight, (int, float)) and self.factor_weight >= 0)) \
                or self.factor_depth < 1:
            raise ValueError(f"factor_weight must be 'auto' or a number >= 0 and factor_depth >= 1, got "
                             f"{self.factor_weight!r} and {self.factor_depth}")
        if self.factor_repeats not in (True, False, AUTO):
            raise ValueError(f"factor_repeats must be true, false or 'auto', got {self.factor_repeats!r}")
        unknown = set(self.event_weights) - set(EVENT_TYPES)
        if unknown:
            raise ValueError(f"event_weights has unknown event types: {sorted(unknown)}")
        if not 0.0 < self.event_decay <= 1.0:
            raise ValueError(f"event_decay must be in (0, 1], got {self.event_decay}")
        if not self.half_life_s > 0:
            raise ValueError(f"half_life_s must be > 0, got {self.half_life_s}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if not 0.0 <= self.diversity <= 1.0:
            raise ValueError(f"diversity must be in [0, 1], got {self.diversity}")
        if not 0.0 <= self.taste_decay < 1.0:
            raise ValueError(f"taste_decay must be in [0, 1), got {self.taste_decay}")
        if not self.repeat_weight >= 0:
            raise ValueError(f"repeat_weight must be >= 0, got {self.repeat_weight}")
        if not self.pop_weight >= 0 or self.pop_items < 0:
            raise ValueError(f"pop_weight and pop_items must be >= 0, got {self.pop_weight} and {self.pop_items}")
        if not self.knn_weight >= 0 or not 0.0 < self.knn_decay <= 1.0 or self.knn_events < 1:
            raise ValueError(f"knn_weight must be >= 0, knn_decay in (0, 1] and knn_events >= 1, got "
                             f"{self.knn_weight}, {self.knn_decay} and {self.knn_events}")

    def weight_table(self) -> np.ndarray:
        """Weights indexed by event-type code (the order of ``EVENT_TYPES``)."""
        return np.array([self.event_weights.get(t, 0.0) for t in EVENT_TYPES], dtype=np.float32)


def decay_factor(last_ts: float | None, ts: float, params: InterestParams) -> float:
    """Factor applied to the old vector when an event at ``ts`` arrives."""
    if last_ts is None:
        return 0.0
    dt = max(0.0, ts - last_ts)
    return params.event_decay * 0.5 ** (dt / params.half_life_s)


def update_vector(
    user_vector: np.ndarray,
    last_ts: float | None,
    item_context: np.ndarray,
    event_type: str,
    ts: float,
    params: InterestParams,
) -> tuple[np.ndarray, float]:
    """Apply one event to a user's vector; return ``(new_vector, new_last_ts)`` (float32)."""
    factor = np.float32(decay_factor(last_ts, ts, params))
    weight = np.float32(params.event_weights.get(event_type, 0.0))
    new_vector = factor * user_vector.astype(np.float32, copy=False) + weight * item_context.astype(np.float32, copy=False)
    new_ts = ts if last_ts is None else max(last_ts, ts)
    return new_vector.astype(np.float32, copy=False), new_ts


def fold_events(
    events: list[tuple[int, str, float]],
    item_contexts: np.ndarray,
    params: InterestParams,
    *,
    start: tuple[np.ndarray, float | None] | None = None,
) -> tuple[np.ndarray, float | None]:
    """Apply ``(item_row, event_type, ts)`` events in order, from an empty vector or ``start``."""
    vector, last_ts = start if start is not None else (np.zeros(item_contexts.shape[1], np.float32), None)
    for row, event_type, ts in events:
        vector, last_ts = update_vector(vector, last_ts, item_contexts[row], event_type, ts, params)
    return vector, last_ts


def rank_within_groups(keys: np.ndarray) -> np.ndarray:
    """For each position, how many earlier positions have the same key.

    >>> rank_within_groups(np.array([7, 7, 3, 7, 3])).tolist()
    [0, 1, 0, 2, 1]
    """
    order = np.argsort(keys, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(keys[order])) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - run_start
    return rank


def update_batch(
    user_vectors: np.ndarray,
    last_ts: np.ndarray,
    user_index: np.ndarray,
    item_rows: np.ndarray,
    type_codes: np.ndarray,
    ts: np.ndarray,
    item_contexts: np.ndarray,
    params: InterestParams,
    *,
    capture: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Vectorised :func:`update_vector` over a micro-batch, in place.

    ``user_vectors`` is ``(users, d)`` float32 and ``last_ts`` ``(users,)`` float64 with NaN
    meaning "no event yet". Event ``j`` belongs to user ``user_index[j]``; events of one user
    are applied in batch order, so the result equals calling :func:`update_vector` per event.

    ``capture``: positions of events whose user vector *before* the event is wanted (new
    items learn from them); returns those vectors and whether the user had any event before.
    """
    captured = None
    if capture is not None:
        captured = (np.zeros((len(capture), user_vectors.shape[1]), np.float32), np.zeros(len(capture), bool))
        slot_of = np.full(len(user_index), -1, np.int64)
        slot_of[capture] = np.arange(len(capture))
    if len(user_index) == 0:
        return captured
    weights = params.weight_table()[type_codes]
    # Events with the same rank among their user's events touch distinct users, so each
    # rank is one vectorised step.
    rank = rank_within_groups(user_index)
    for step in range(int(rank.max()) + 1):
        sel = np.flatnonzero(rank == step)
        users = user_index[sel]
        prev = last_ts[users]
        if captured is not None:
            wanted = slot_of[sel] >= 0
            if wanted.any():
                captured[0][slot_of[sel][wanted]] = user_vectors[users[wanted]]
                captured[1][slot_of[sel][wanted]] = ~np.isnan(prev[wanted])
        dt = np.maximum(0.0, ts[sel] - np.nan_to_num(prev, nan=0.0))
        factor = params.event_decay * np.power(0.5, dt / params.half_life_s)
        factor = np.where(np.isnan(prev), 0.0, factor).astype(np.float32)
        user_vectors[users] = factor[:, None] * user_vectors[users] + weights[sel][:, None] * item_contexts[item_rows[sel]]
        last_ts[users] = np.where(np.isnan(prev), ts[sel], np.fmax(prev, ts[sel]))
    return captured
