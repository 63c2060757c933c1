"""Implicit-feedback ALS (Hu, Koren and Volinsky 2008) from the ``implicit`` library, with fold-in.

Item factors come from :meth:`fit`; a user's factors are recomputed from their whole history
at every recommendation (``recalculate_user``: one least-squares solve against the fixed
item factors, the "fold-in"), so events observed after the fit count immediately.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from streamrec.evaluation.base import Histories, Recommender, scores_to_top_k
from streamrec.evaluation.data import EventLog


class ALS(Recommender):
    name = "als"

    def __init__(
        self, factors: int = 128, regularization: float = 20.0, alpha: float = 40.0, iterations: int = 15, seed: int = 0
    ) -> None:
        self.params = dict(factors=factors, regularization=regularization, alpha=alpha, iterations=iterations, seed=seed)
        self.model = None
        self.histories: Histories | None = None
        self.n_items = 0

    def _matrix(self, users: np.ndarray) -> sp.csr_matrix:
        if self.histories is None:
            raise RuntimeError("fit the model first")
        rows = self.histories.rows(users, self.n_items)
        rows.data = np.ones_like(rows.data)  # seen or not: confidence 1 + alpha
        return rows.astype(np.float32)

    def fit(self, log: EventLog) -> None:
        from indexing.train import fit_als

        self.n_items = log.n_items
        self.histories = Histories(log.n_users)
        self.histories.add(log)
        self.model = fit_als(self._matrix(np.arange(log.n_users)), **self.params)

    def observe(self, log: EventLog) -> None:
        if self.histories is None:
            raise RuntimeError("fit the model first")
        self.histories.add(log)

    def recommend(self, users: np.ndarray, k: int, exclude: Sequence[np.ndarray]) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("fit the model first")
        from threadpoolctl import threadpool_limits

        # float64 scores: a list must not depend on how many users are scored at once
        # (float32 matrix products of different shapes round differently).
        items = np.asarray(self.model.item_factors, dtype=np.float64)
        out = []
        for start in range(0, len(users), 2048):
            block = users[start : start + 2048]
            with threadpool_limits(1, "blas"):
                factors = np.asarray(self.model.recalculate_user(block, self._matrix(block)))
            factors = factors.reshape(len(block), -1).astype(np.float64)
            out.append(scores_to_top_k(factors @ items.T, k, exclude[start : start + 2048]))
        return np.concatenate(out) if out else np.zeros((0, k), np.int64)

    def describe(self) -> dict[str, object]:
        return dict(self.params)
