"""Baselines over numpy/scipy: popularity (all-time and a recent window) and item-kNN.

Each is a :class:`~streamrec.evaluation.base.Recommender`; ALS and ISGD are in :mod:`streamrec.evaluation.als`
and :mod:`streamrec.evaluation.isgd`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from streamrec.core.neighbours import cooccurrence, keep_best
from streamrec.evaluation.base import Histories, Recommender, global_top_k, scores_to_top_k
from streamrec.evaluation.data import EventLog, user_sequences


class Popularity(Recommender):
    """Items by how many events they had so far (every event counts once)."""

    name = "popularity"
    user_local = False
    retrains = False

    def __init__(self) -> None:
        self.counts = np.zeros(0)

    def fit(self, log: EventLog) -> None:
        self.counts = np.bincount(log.items, minlength=log.n_items).astype(np.float64)

    def observe(self, log: EventLog) -> None:
        np.add.at(self.counts, log.items, 1.0)

    def recommend(self, users: np.ndarray, k: int, exclude: Sequence[np.ndarray]) -> np.ndarray:
        return global_top_k(self.counts, len(users), k, exclude)


class RecentPopularity(Popularity):
    """Items by how many of the last ``window`` events (of everyone) they had."""

    name = "popularity-recent"

    def __init__(self, window: int = 10_000) -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.recent: deque[int] = deque()

    def fit(self, log: EventLog) -> None:
        self.recent = deque(log.items[-self.window :].tolist())
        self.counts = np.bincount(np.asarray(self.recent, dtype=np.int64), minlength=log.n_items).astype(np.float64)

    def observe(self, log: EventLog) -> None:
        for item in log.items.tolist():
            self.recent.append(item)
            self.counts[item] += 1.0
            if len(self.recent) > self.window:
                self.counts[self.recent.popleft()] -= 1.0

    def describe(self) -> dict[str, object]:
        return {"window_events": self.window}


class ItemKNN(Recommender):
    """Item-to-item co-occurrence with recency decay.

    Similarity: for every two events of a user at most ``window`` steps apart (``a`` first),
    ``C[a, b] += gap_decay ** (gap - 1)`` and ``C[b, a] += backward * gap_decay ** (gap - 1)``;
    ``sim = C / (count_a ** alpha * count_b ** beta)``, keeping each item's ``neighbours``
    best. A user's score for ``j``: ``sum over their events h, newest first, of
    user_decay ** age(h) * sim[h, j]`` over the last ``history`` events.
    """

    name = "item-knn"

    def __init__(
        self,
        window: int = 5,
        gap_decay: float = 0.75,
        backward: float = 0.5,
        alpha: float = 0.5,
        beta: float = 0.3,
        user_decay: float = 0.7,
        neighbours: int = 200,
        history: int = 32,
    ) -> None:
        self.params = dict(window=window, gap_decay=gap_decay, backward=backward, alpha=alpha, beta=beta,
                           user_decay=user_decay, neighbours=neighbours, history=history)
        self.similarity = sp.csr_matrix((0, 0))
        self.histories: Histories | None = None

    def fit(self, log: EventLog) -> None:
        p = self.params
        n = log.n_items
        sequences = user_sequences(log)
        order = np.concatenate([s for s in sequences if len(s)]) if len(log) else np.zeros(0, np.int64)
        sim = cooccurrence(log.users[order], log.items[order], n, window=p["window"], gap_decay=p["gap_decay"],
                           backward=p["backward"], alpha=p["alpha"], beta=p["beta"])
        self.similarity = keep_best(sim, p["neighbours"])
        self.histories = Histories(log.n_users)
        self.histories.add(log.take(order))

    def observe(self, log: EventLog) -> None:
        if self.histories is None:
            raise RuntimeError("fit the model first")
        self.histories.add(log)

    def recommend(self, users: np.ndarray, k: int, exclude: Sequence[np.ndarray]) -> np.ndarray:
        if self.histories is None:
            raise RuntimeError("fit the model first")
        p = self.params
        out = []
        for start in range(0, len(users), 2048):
            block = users[start : start + 2048]
            rows = self.histories.rows(block, self.similarity.shape[0], decay=p["user_decay"], last=p["history"])
            scores = (rows @ self.similarity).toarray()
            out.append(scores_to_top_k(scores, k, exclude[start : start + 2048]))
        return np.concatenate(out) if out else np.zeros((0, k), np.int64)

    def describe(self) -> dict[str, object]:
        return dict(self.params)

