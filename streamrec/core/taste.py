"""Long-term taste: a second, slowly decaying user vector, mapped into the search's query.

The interest vector (:mod:`streamrec.core.interest`, event decay 0.5) remembers the last two
or three events. The *taste* vector is the same update rule with a decay near 1 and no time
decay, in the same context space::

    s <- taste_decay * s + weight[type] * context[item]

so it sums the user's whole history, recent events counting a little more. The search's query
adds it, through a learnt ``d x d`` map ``W``, to the interest vector::

    q = v + W (s / |s|)

so one FAISS search (the same index, the same dimension) scores ``q . target_j``. The direction
``s / |s|`` keeps a long history from outweighing a short one. ``W`` is fitted at training with
the target vectors (:func:`fit_transform`), by the regression that fits them: every training
event's item regressed on the query just before it. Cost per event: O(d) for the update,
O(d^2) for the query; the state holds a second ``d``-vector.

``taste_decay = 0`` (``InterestParams``) or a model version without ``W`` turns it off: the
query is the interest vector.

>>> import numpy as np
>>> v = np.array([[1.0, 0.0]], np.float32)
>>> s = np.array([[0.0, 3.0]], np.float32)
>>> query(v, s, np.array([[0.0, 0.5], [0.0, 0.0]], np.float32)).tolist()
[[1.5, 0.0]]
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from streamrec.core.interest import InterestParams, fold_events, update_batch


def taste_rule(params: InterestParams) -> InterestParams:
    """The interest update with the taste vector's decay and no time decay."""
    return replace(params, event_decay=params.taste_decay, half_life_s=math.inf)


def update_taste(
    taste: np.ndarray,
    last_ts: np.ndarray,
    user_index: np.ndarray,
    item_rows: np.ndarray,
    type_codes: np.ndarray,
    ts: np.ndarray,
    item_contexts: np.ndarray,
    params: InterestParams,
) -> None:
    """:func:`streamrec.core.interest.update_batch` of the taste vectors, in place, for the
    same events; ``last_ts`` (NaN: no event yet) is the users' *before* the batch and is not
    changed."""
    if params.taste_decay <= 0 or len(user_index) == 0:
        return
    update_batch(taste, last_ts.copy(), user_index, item_rows, type_codes, ts, item_contexts, taste_rule(params))


def fold_taste(events: list[tuple[int, str, float]], item_contexts: np.ndarray, params: InterestParams) -> np.ndarray:
    """A taste vector from ``(item_row, event_type, ts)`` events in order (a rebuild after a
    model swap, from the user's recent events)."""
    vector, _ = fold_events(events, item_contexts, taste_rule(params))
    return vector


def direction(taste: np.ndarray) -> np.ndarray:
    """Rows of ``taste`` scaled to unit length (zero rows stay zero), float32."""
    taste = np.asarray(taste, np.float32)
    norm = np.linalg.norm(taste, axis=-1, keepdims=True)
    return np.divide(taste, norm, out=np.zeros_like(taste), where=norm > 0)


def query(vectors: np.ndarray, taste: np.ndarray | None, transform: np.ndarray | None) -> np.ndarray:
    """The search's query ``v + W (s / |s|)`` per row (float32); ``vectors`` itself when there is
    no taste or no map."""
    if taste is None or transform is None:
        return vectors
    return (np.asarray(vectors, np.float32) + direction(taste) @ np.asarray(transform, np.float32).T).astype(np.float32)


class TasteStats:
    """What :func:`fit_transform` needs from the replay of the training events: second moments
    of the samples' interest vectors ``z`` and taste directions ``t``, and their sums per answer."""

    def __init__(self, n_items: int, dim: int) -> None:
        self.zt = np.zeros((dim, dim))
        self.tt = np.zeros((dim, dim))
        self.answers = np.zeros((n_items, dim))

    def add(self, z: np.ndarray, t: np.ndarray, answer_matrix) -> None:  # noqa: ANN001 - scipy sparse (items x samples)
        """``z``, ``t``: ``(samples, d)``; ``answer_matrix``: the samples' items, one-hot, ``(items, samples)``."""
        self.zt += z.T @ t
        self.tt += t.T @ t
        self.answers += answer_matrix @ t


def ridge_inverse(gram: np.ndarray, ridge: float) -> np.ndarray:
    """``(G + r I)^-1``, symmetric, with ``r`` = ``ridge`` times the mean eigenvalue of ``G``: the
    solve of every target regression (:func:`indexing.train.fit_targets_and_solve`, :func:`fit_transform`).

    >>> ridge_inverse(np.diag([1.0, 3.0]), 0.5).round(3).tolist()
    [[0.5, 0.0], [0.0, 0.25]]
    """
    dim = len(gram)
    solve = np.linalg.inv(gram + ridge * max(np.trace(gram) / dim, 1e-12) * np.eye(dim))
    return (solve + solve.T) / 2


def fit_transform(
    stats: TasteStats, gram: np.ndarray, answers: np.ndarray, target_scale: np.ndarray, ridge: float,
    *, rounds: int = 2, kind: str = "full", map_ridge: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(W, target, solve)``: the taste map and the targets refitted on the queries, by
    alternating least squares of the one-hot next item on ``T q`` (``q = z + W t``).

    ``gram``, ``answers``: ``sum z z^T`` and the per-item sums of ``z`` (the interest-only
    regression's statistics); ``target_scale``: each item's factor (``count ** -beta``);
    ``ridge``: relative to the mean eigenvalue of each Gram matrix. Given targets ``T``,
    ``W = (T^T T + a I)^-1 (T^T A_t - T^T T C)(G_t + b I)^-1``; given ``W``, the targets are the
    ridge regression on ``q``, whose moments follow from the same sums. ``solve`` is
    ``(G_q + r I)^-1`` (new items' fold-in). ``kind="scalar"``: ``W = alpha I``, one least-squares
    coefficient (shrunk by ``1 + map_ridge``); ``map_ridge``: the map's ridge (default ``ridge``).
    """
    if kind not in ("full", "scalar"):
        raise ValueError(f"the taste map is 'full' or 'scalar', got {kind!r}")
    map_ridge = ridge if map_ridge is None else map_ridge
    dim = gram.shape[0]
    eye = np.eye(dim)
    scale = target_scale[:, None]

    transform = np.zeros((dim, dim))
    gram_q, answers_q = gram, answers
    for _ in range(rounds):
        solve = ridge_inverse(gram_q, ridge)
        target = (answers_q @ solve) * scale
        tt_target = target.T @ target
        if kind == "scalar":  # W = alpha I: one least-squares coefficient
            alpha = (np.sum(target * stats.answers) - np.trace(tt_target @ stats.zt)) / max(
                np.trace(tt_target @ stats.tt) * (1 + map_ridge), 1e-12)
            transform = alpha * eye
        else:
            right = target.T @ stats.answers - tt_target @ stats.zt
            left_ridge = map_ridge * max(np.trace(tt_target) / dim, 1e-12)
            right_ridge = map_ridge * max(np.trace(stats.tt) / dim, 1e-12)
            transform = np.linalg.solve(tt_target + left_ridge * eye, right) @ np.linalg.inv(stats.tt + right_ridge * eye)
        cross = stats.zt @ transform.T
        gram_q = gram + cross + cross.T + transform @ stats.tt @ transform.T
        answers_q = answers + stats.answers @ transform.T
    solve = ridge_inverse(gram_q, ridge)
    target = (answers_q @ solve) * scale
    return transform.astype(np.float32), target.astype(np.float32), solve
