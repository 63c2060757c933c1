"""Two models' lists fused by reciprocal rank: a harness prototype, not served by the worker.

``served+als`` (docs/quality.md, the taste-only proxy) ranks the union of the served model's
and ALS's top ``depth`` by

    1 / (offset + rank_first) + weight / (offset + rank_second)

(ranks from 0; an item missing from a list gets nothing from it; equal totals keep the order in
which the items first appear, the first model's list before the second's). It measures what a
taste signal like ALS's would add to the served model on a shop; the worker does not run it.

The rule is the worker's factor step's (:func:`streamrec.core.factors.fuse`); here it fuses the
served model's finished lists with the ALS baseline's (``implicit``'s own fold-in).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamrec.core.factors import OFFSET, fuse
from streamrec.evaluation.base import Recommender
from streamrec.evaluation.data import EventLog


class RankFusion(Recommender):
    """``first`` and ``second`` fitted and fed alike, their lists fused by :func:`fuse`."""

    def __init__(self, first: Recommender, second: Recommender, *, weight: float = 0.5, depth: int = 50,
                 offset: float = OFFSET, name: str = "served+als") -> None:
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
                    weight=self.weight, offset=self.offset)[0]

    def describe(self) -> dict[str, object]:
        return {"weight": self.weight, "depth": self.depth, "offset": self.offset,
                self.first.name: self.first.describe(), self.second.name: self.second.describe()}
