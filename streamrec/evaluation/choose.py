"""The factor step's weight chosen on each shop's own held-out events (``factor_weight = "auto"``).

A shop cannot know in advance whether the order of its shoppers' events says much (the served
model's interest vector is then best) or little (a factor model of the whole user x item matrix
then is: docs/quality.md, the taste-only proxy). So every training chooses the factor step's
weight (:mod:`streamrec.core.factors`) on its own data:

1. Each user's last event is held out; the served model (with its item factors) is trained on
   the rest, exactly as it will be served.
2. Up to ``sample`` users whose held-out item that model knows are recommended ``k`` items with
   the step off and with every weight of ``grid``, each with the factor list leaving out the
   user's recent items and with it allowed to hold them (``factor_repeats``), excluding what
   they bought (the worker's rule).
3. The setting with the most hits wins if it beats the step switched off by more than ``z``
   standard errors of the paired difference (per user: hit with it minus hit without); else the
   step stays off. A shop where it does not clearly pay keeps the served model as it was.

It costs a second training of the model (on the held-out split) and ``1 + 2 len(grid)`` lists
per sampled user.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from indexing.train import Interactions, TrainedModel, TrainParams
from streamrec.contract import EVENT_TYPES
from streamrec.core.factors import AUTO
from streamrec.core.interest import InterestParams
from streamrec.evaluation.data import EventLog, user_sequences
from streamrec.evaluation.protocols import Exclusions

#: The weights tried (the step off is always the baseline).
GRID = (0.5, 1.0, 2.0, 4.0)
#: The most held-out users scored (a random sample of larger shops).
SAMPLE = 10_000
#: How many standard errors a weight must win by.
Z = 2.0

#: The served model's class: built from (TrainParams, InterestParams), then fit, recommend, and
#: the ``model_row``, ``recent`` and ``interest_params`` of :class:`streamrec.evaluation.served.ServedModel`.
ModelClass = Callable[[TrainParams, InterestParams], Any]


@dataclass
class FactorChoice:
    #: The chosen weight (0: the step stays off).
    weight: float
    #: Per setting tried (weight 0 first): the weight, whether the factor list held recent items,
    #: its hit rate at ``k`` on the held-out events and the paired difference's standard error against 0.
    rows: list[dict[str, float]]
    #: Held-out users scored.
    users: int
    #: Whether the chosen factor list may hold the user's recent items.
    repeats: bool = False

    def summary(self) -> dict[str, object]:
        return {"weight": self.weight, "repeats": self.repeats, "users": self.users, "grid": self.rows}

    def chosen(self) -> str:
        """The choice in words.

        >>> FactorChoice(2.0, [], 10, repeats=True).chosen()
        'weight 2, its list holding recent items too'
        >>> FactorChoice(0.0, [], 10).chosen()
        'weight 0'
        """
        return f"weight {self.weight:g}" + (", its list holding recent items too" if self.weight and self.repeats else "")

    def table(self) -> str:
        """HR@k per setting tried, as one line.

        >>> FactorChoice(1.0, [{"weight": 0.0, "repeats": False, "HR": 0.1}, {"weight": 1.0, "repeats": False, "HR": 0.2},
        ...                    {"weight": 1.0, "repeats": True, "HR": 0.15}], 10).table()
        'off 0.1000; weight 1: 0.2000; with recent items, weight 1: 0.1500'
        """
        off = [f"off {row['HR']:.4f}" for row in self.rows if not row["weight"]]
        plain = [f"{row['weight']:g}: {row['HR']:.4f}" for row in self.rows if row["weight"] and not row.get("repeats")]
        again = [f"{row['weight']:g}: {row['HR']:.4f}" for row in self.rows if row["weight"] and row.get("repeats")]
        return "; ".join(off + (["weight " + ", ".join(plain)] if plain else [])
                         + (["with recent items, weight " + ", ".join(again)] if again else []))


def held_out(log: EventLog) -> tuple[EventLog, np.ndarray, np.ndarray]:
    """``log`` without each user's last event, the users with at least two events and their
    last events' items."""
    sequences = user_sequences(log)
    users = np.array([u for u, index in enumerate(sequences) if len(index) >= 2], np.int64)
    last = np.array([sequences[u][-1] for u in users], np.int64)
    keep = np.setdiff1d(np.arange(len(log)), last)
    return log.take(keep), users, log.items[last]


def choose_factor_weight(log: EventLog, train: TrainParams, interest: InterestParams, *, model: ModelClass,
                         grid: tuple[float, ...] = GRID, sample: int = SAMPLE, z: float = Z, k: int = 10,
                         seed: int = 0, exclude_purchased: bool = True) -> FactorChoice:
    """The rule of the module doc on ``log`` (a shop's training events); ``model``: the served
    model's class (:class:`streamrec.evaluation.served.ServedModel`, which serves as the worker does);
    ``exclude_purchased=False``: nothing is left out of the lists (a shop whose every category is a
    repeat-purchase one, as ``evaluate --repeat-purchases``)."""
    rest, users, items = held_out(log)
    model = model(train, replace(interest, factor_weight=max(grid)))
    if not len(users) or not len(rest):
        return FactorChoice(0.0, [], 0)
    model.fit(rest)
    known = model.model_row[items] >= 0
    known &= np.array([bool(model.recent[u]) for u in users.tolist()], bool)
    users, items = users[known], items[known]
    if len(users) > sample:
        pick = np.sort(np.random.default_rng(seed).choice(len(users), sample, replace=False))
        users, items = users[pick], items[pick]
    if not len(users):
        return FactorChoice(0.0, [], 0)
    bought = Exclusions(rest.n_users, enabled=exclude_purchased)  # the protocols' own rule
    bought.add(rest)
    exclude = bought.of(users)

    def hits(weight: float, repeats: bool) -> np.ndarray:
        model.interest_params = replace(interest, factor_weight=weight, factor_repeats=repeats)
        lists = model.recommend(users, k, exclude)
        return (lists == items[:, None]).any(axis=1).astype(np.float64)

    base = hits(0.0, False)
    rows = [{"weight": 0.0, "repeats": False, "HR": float(base.mean()), "se": 0.0}]
    best, best_gain = (0.0, False), 0.0
    for repeats in (False, True):
        for weight in grid:
            difference = hits(weight, repeats) - base
            se = float(difference.std(ddof=1) / math.sqrt(len(difference))) if len(difference) > 1 else math.inf
            gain = float(difference.mean())
            rows.append({"weight": float(weight), "repeats": repeats, "HR": float(base.mean() + gain), "se": se})
            if gain > z * se and gain > best_gain:
                best, best_gain = (float(weight), repeats), gain
    return FactorChoice(best[0], rows, int(len(users)), repeats=best[1])


def log_of(data: Interactions) -> EventLog:
    """The events of ``data`` as an :class:`EventLog` (for the trainers, which hold interactions)."""
    users = data.user_of_event()
    return EventLog.from_arrays(np.asarray(data.user_ids, dtype=object)[users],
                                np.asarray(data.item_ids, dtype=object)[data.items],
                                np.asarray(EVENT_TYPES, dtype=object)[data.types.astype(np.int64)], data.ts,
                                item_features=data.item_features)


def choose_for(trained: TrainedModel, log: EventLog | Interactions, train: TrainParams,
               interest: InterestParams, *, model: ModelClass, exclude_purchased: bool = True) -> FactorChoice | None:
    """With ``factor_weight = "auto"`` and a version with factors: the weight chosen on ``log``
    (the version's training events) by :func:`choose_factor_weight`, written into its summary
    (``factors.weight`` and ``factors.repeats``, which the worker reads, and ``factors.choice``);
    else None and nothing changes."""
    if interest.factor_weight != AUTO or trained.factors is None:
        return None
    choice = choose_factor_weight(log if isinstance(log, EventLog) else log_of(log), train, interest, model=model,
                                  exclude_purchased=exclude_purchased)
    trained.summary["factors"] = {**trained.summary["factors"], "weight": choice.weight, "repeats": choice.repeats,
                                  "choice": choice.summary()}
    return choice
