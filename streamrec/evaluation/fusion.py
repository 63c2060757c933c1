"""Two models' lists fused by reciprocal rank: a harness prototype, not served by the worker.

``served+als`` (docs/quality.md, the taste-only proxy) ranks the union of the served model's
and ALS's top ``depth`` by

    1 / (offset + rank_first) + weight / (offset + rank_second)

(ranks from 0; an item missing from a list gets nothing from it; equal totals keep the order in
which the items first appear, the first model's list before the second's). It measures what a
taste signal like ALS's would add to the served model on a shop; the worker does not run it.

>>> fuse(np.array([[3, 1, 2]]), np.array([[2, 5, -1]]), 3, weight=1.0, offset=10).tolist()
[[2, 3, 1]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamrec.evaluation.base import Recommender
from streamrec.evaluation.data import EventLog


def fuse(first: np.ndarray, second: np.ndarray, k: int, *, weight: float, offset: float = 10.0) -> np.ndarray:
    """The top ``k`` of each row's fused lists (item rows, ``-1`` pads) by the rule above."""
    out = np.full((len(first), k), -1, dtype=np.int64)
    for row, (a, b) in enumerate(zip(first.tolist(), second.tolist())):
        score: dict[int, float] = {}
        for share, items in ((1.0, a), (weight, b)):
            for rank, item in enumerate(items):
                if item >= 0:
                    score[item] = score.get(item, 0.0) + share / (offset + rank)
        top = sorted(score, key=lambda item: -score[item])[:k]  # stable: first appearance breaks ties
        out[row, : len(top)] = top
    return out


class RankFusion(Recommender):
    """``first`` and ``second`` fitted and fed alike, their lists fused by :func:`fuse`."""

    def __init__(self, first: Recommender, second: Recommender, *, weight: float = 0.5, depth: int = 50,
                 offset: float = 10.0, name: str = "served+als") -> None:
        if weight < 0 or depth < 1:
            raise ValueError(f"weight must be >= 0 and depth >= 1, got {weight} and {depth}")
        self.first, self.second = first, second
        self.weight, self.depth, self.offset, self.name = weight, depth, offset, name
        self.user_local = first.user_local and second.user_local

    def fit(self, log: EventLog) -> None:
        self.first.fit(log)
        self.second.fit(log)

    def observe(self, log: EventLog) -> None:
        self.first.observe(log)
        self.second.observe(log)

    def recommend(self, users: np.ndarray, k: int, exclude: Sequence[np.ndarray]) -> np.ndarray:
        depth = max(k, self.depth)
        return fuse(self.first.recommend(users, depth, exclude), self.second.recommend(users, depth, exclude), k,
                    weight=self.weight, offset=self.offset)

    def describe(self) -> dict[str, object]:
        return {"weight": self.weight, "depth": self.depth, "offset": self.offset,
                self.first.name: self.first.describe(), self.second.name: self.second.describe()}
