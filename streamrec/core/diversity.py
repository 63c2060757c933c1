"""An optional diversity step: maximal marginal relevance over the search's candidates.

With ``InterestParams.diversity = λ > 0`` the search fetches :data:`POOL` times k candidates and
the list is chosen greedily (Carbonell and Goldstein 1998): each next item maximises

    (1 - λ) * relevance_j - λ * max over the items already chosen of cos(target_j, target_i)

where ``relevance_j`` is the candidate's score scaled to [0, 1] within the candidates. λ = 0
(the default) is the plain ranking. Items keep their own scores; the list is in the order
chosen. O(POOL k^2 d) per list.

>>> target = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0]])
>>> mmr(np.array([0, 1, 2]), np.array([1.0, 0.95, 0.5]), 2, target.__getitem__, 0.5)[0].tolist()
[0, 2]
"""

from __future__ import annotations

import numpy as np

#: Candidates fetched per list item when the step is on.
POOL = 3


def mmr(rows: np.ndarray, scores: np.ndarray, k: int, target_of, strength: float  # noqa: ANN001
        ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` of the candidate ``rows`` (best first, -1 pads) chosen by maximal marginal
    relevance with ``strength`` λ (see the module doc); -1 / -inf pad a short list."""
    valid = rows >= 0
    candidates, values = rows[valid], np.asarray(scores, np.float64)[valid]
    out_rows = np.full(k, -1, np.int64)
    out_scores = np.full(k, -np.inf)
    if not len(candidates):
        return out_rows, out_scores.astype(np.asarray(scores).dtype, copy=False)
    span = values.max() - values.min()
    relevance = (values - values.min()) / span if span > 0 else np.ones(len(values))
    vectors = np.asarray(target_of(candidates), np.float64)
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    closest = np.full(len(candidates), -np.inf)  # max cosine to the chosen items
    free = np.ones(len(candidates), bool)
    for n in range(min(k, len(candidates))):
        penalty = np.where(np.isfinite(closest), closest, 0.0)
        objective = np.where(free, (1 - strength) * relevance - strength * penalty, -np.inf)
        best = int(np.argmax(objective))
        free[best] = False
        out_rows[n], out_scores[n] = candidates[best], values[best]
        closest = np.maximum(closest, vectors @ vectors[best])
    return out_rows, out_scores.astype(np.asarray(scores).dtype, copy=False)
