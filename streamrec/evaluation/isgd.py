"""ISGD: incremental SGD matrix factorisation for positive-only feedback.

After Vinagre, Jorge and Gama, "Fast incremental matrix factorization for recommendation
with positive-only feedback" (UMAP 2014): every event ``(u, i)`` is a target of 1; one SGD
step on the error ``1 - a_u . b_i`` updates the user's and the item's vectors (new users
and items start as small random vectors), and items are ranked by how close their
predicted value is to 1 (smallest ``|1 - a_u . b_i|`` first), as in the paper. Item vectors
change with every event, so recommendations are not user-local: the prequential protocol
runs it event by event.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamrec.evaluation.base import Recommender, scores_to_top_k
from streamrec.evaluation.data import EventLog


class ISGD(Recommender):
    name = "isgd"
    user_local = False
    retrains = False

    def __init__(
        self, factors: int = 64, learn_rate: float = 0.2, regularization: float = 0.01, epochs: int = 1,
        init_std: float = 0.1, seed: int = 0,
    ) -> None:
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        self.params = dict(factors=factors, learn_rate=learn_rate, regularization=regularization, epochs=epochs,
                           init_std=init_std, seed=seed)
        self.users = np.zeros((0, factors))
        self.items = np.zeros((0, factors))
        self.known_items = np.zeros(0, dtype=bool)

    def fit(self, log: EventLog) -> None:
        """Start from random vectors and make ``epochs`` passes over ``log`` in order."""
        p = self.params
        rng = np.random.default_rng(p["seed"])
        self.users = rng.normal(0.0, p["init_std"], (log.n_users, p["factors"])).astype(np.float32)
        self.items = rng.normal(0.0, p["init_std"], (log.n_items, p["factors"])).astype(np.float32)
        self.known_items = np.zeros(log.n_items, dtype=bool)
        for _ in range(p["epochs"]):
            self.observe(log)

    def observe(self, log: EventLog) -> None:
        rate, reg = self.params["learn_rate"], self.params["regularization"]
        users, items = self.users, self.items
        for user, item in zip(log.users.tolist(), log.items.tolist(), strict=True):
            a, b = users[user].copy(), items[item]
            error = 1.0 - a @ b
            users[user] = a + rate * (error * b - reg * a)
            items[item] = b + rate * (error * a - reg * b)
        self.known_items[log.items] = True

    def recommend(self, users: np.ndarray, k: int, exclude: Sequence[np.ndarray]) -> np.ndarray:
        out = []
        for start in range(0, len(users), 2048):
            block = users[start : start + 2048]
            scores = np.abs(1.0 - self.users[block] @ self.items.T, dtype=np.float64)
            np.negative(scores, out=scores)
            # Items never seen have only their random start: not part of the model yet.
            np.putmask(scores, np.broadcast_to(~self.known_items, scores.shape), -np.inf)
            out.append(scores_to_top_k(scores, k, exclude[start : start + 2048]))
        return np.concatenate(out) if out else np.zeros((0, k), np.int64)

    def describe(self) -> dict[str, object]:
        return dict(self.params)
