"""The interface every evaluated model implements, and per-user histories.

A model learns from an :class:`~streamrec.evaluation.data.EventLog` in two ways: :meth:`Recommender.fit`
(train from scratch on a log: the batch part) and :meth:`Recommender.observe` (events that
happen afterwards, in order: the incremental part, e.g. the worker updating a user's
vector). :meth:`Recommender.recommend` answers for many users at once with their
exclusions. Both protocols drive every model only through these three calls.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from streamrec.evaluation.data import EventLog


class Recommender(ABC):
    """A model under evaluation."""

    #: Short name used in reports.
    name: str = "model"
    #: True only for the model the worker runs.
    served: bool = False
    #: Recommendations depend only on what :meth:`fit` learnt and on the user's own events
    #: observed since: the prequential protocol may then score many users at once, exactly.
    user_local: bool = True
    #: Batch models are refitted every N events in the prequential protocol; incremental
    #: ones only ever observe events after the first fit.
    retrains: bool = True
    #: Whether the lists asked of the model leave out what each user purchased (the protocol sets
    #: it; a model that chooses its settings on held-out events, as the served model's factor
    #: step does, chooses under the same rule).
    exclude_purchased: bool = True

    @abstractmethod
    def fit(self, log: EventLog) -> None:
        """Learn from all events of ``log`` (replacing what was learnt before, except that a
        model may keep per-user state, as the worker does across model versions)."""

    @abstractmethod
    def observe(self, log: EventLog) -> None:
        """Learn from new events, in the order given."""

    @abstractmethod
    def recommend(self, users: np.ndarray, k: int, exclude: Sequence[np.ndarray]) -> np.ndarray:
        """Top-``k`` item rows per user, best first, never an item of ``exclude[n]`` for
        ``users[n]``; ``-1`` pads rows where fewer items can be recommended."""

    def describe(self) -> dict[str, object]:
        """Hyper-parameters, for reports."""
        return {}


class Histories:
    """Every user's events so far (item rows and event times), appended in order."""

    def __init__(self, n_users: int) -> None:
        self.items: list[list[int]] = [[] for _ in range(n_users)]
        self.types: list[list[int]] = [[] for _ in range(n_users)]

    def add(self, log: EventLog) -> None:
        for user, item, kind in zip(log.users.tolist(), log.items.tolist(), log.types.tolist(), strict=True):
            self.items[user].append(item)
            self.types[user].append(kind)

    def rows(
        self, users: np.ndarray, n_items: int, *, decay: float = 1.0, weights: np.ndarray | None = None,
        last: int | None = None,
    ):  # noqa: ANN201 - scipy.sparse.csr_matrix
        """A sparse ``(len(users), n_items)`` matrix: per user, the sum over their last
        ``last`` events of ``weights[type] * decay ** age`` at the event's item (age 0 = newest)."""
        import scipy.sparse as sp

        indptr = [0]
        indices: list[int] = []
        values: list[float] = []
        for user in users.tolist():
            items = self.items[user][-last:] if last else self.items[user]
            types = self.types[user][-len(items):] if items else []
            ages = np.arange(len(items) - 1, -1, -1, dtype=np.float64)
            value = decay**ages
            if weights is not None:
                value = value * weights[np.asarray(types, dtype=np.int64)]
            indices += items
            values += value.tolist()
            indptr.append(len(indices))
        matrix = sp.csr_matrix(
            (np.asarray(values, dtype=np.float64), np.asarray(indices, dtype=np.int64), np.asarray(indptr)),
            shape=(len(users), n_items),
        )
        matrix.sum_duplicates()
        return matrix


def scores_to_top_k(
    scores: np.ndarray, k: int, exclude: Sequence[np.ndarray]
) -> np.ndarray:
    """:func:`streamrec.evaluation.metrics.top_k` on a dense block of scores (float64 copy)."""
    from streamrec.evaluation.metrics import top_k

    return top_k(np.array(scores, dtype=np.float64), k, exclude)


def global_top_k(scores: np.ndarray, n_users: int, k: int, exclude: Sequence[np.ndarray]) -> np.ndarray:
    """The same ``scores`` for every user (popularity): each user's top ``k`` not excluded.

    Candidates are the best ``k + len(exclusions)`` items in one partial sort, so this is
    cheap for one user and for many.
    """
    longest = max((len(e) for e in exclude), default=0)
    width = min(k + longest, len(scores))
    from streamrec.evaluation.metrics import top_k

    candidates = top_k(np.array(scores, dtype=np.float64)[None, :], width)[0]
    out = np.full((n_users, k), -1, dtype=np.int64)
    for row, banned in enumerate(exclude):
        keep = candidates[~np.isin(candidates, banned)] if len(banned) else candidates
        keep = keep[keep >= 0][:k]
        out[row, : len(keep)] = keep
    return out
