"""The served model, through the worker's own code.

Nothing here re-implements the model: item vectors come from
:func:`indexing.train.train_model`, the FAISS index from
:func:`indexing.index.build_index`, user vectors from :func:`streamrec.core.interest.update_batch`
(new events) and :func:`streamrec.core.interest.fold_events` (rebuilding a user's vector from their
recent events when a new model version arrives, as :func:`streamrec.core.batch.rebuild_state`
does), and recommendations from :func:`streamrec.core.search.search` with the user's exclusions.
What the adapter adds is the bookkeeping the worker keeps in its RocksDB table: per user the
vector, the newest event time and the last ``history_size`` accepted events.

The adapter serves the trained catalog: an event whose item the current model does not know
is not applied, and such items are never recommended (the worker makes them new items, with a
catalog prior and fold-in; their quality is measured separately, docs/lifecycle.md).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import asdict, replace

import numpy as np

from indexing.index import build_served_index
from indexing.train import Interactions, TrainedModel, TrainParams, interactions_from_arrays, train_model
from streamrec.contract import EVENT_TYPES
from streamrec.core.batch import finishing_steps, search_depth, served_width, shown_width
from streamrec.core.diversity import mmr
from streamrec.core.factors import factor_batch, fits_factors, resolve_repeats, resolve_weight, solved
from streamrec.core.interest import InterestParams, fold_events, update_batch
from streamrec.core.neighbours import neighbour_batch, popular_items
from streamrec.core.repeat import REPEAT_EVENTS, recent_matrix, repeat_batch
from streamrec.core.search import search
from streamrec.core.taste import fold_taste, update_taste
from streamrec.core.taste import query as taste_query
from streamrec.evaluation.base import Recommender
from streamrec.evaluation.choose import choose_for
from streamrec.evaluation.data import EventLog


#: InterestParams fields only serving reads (training does not): the list's length, the state's
#: bounds and the settings of the steps after the search (:func:`streamrec.core.batch.finishing_steps`),
#: at their defaults. A grid over them (``--tune``) trains each model version once (:func:`trained_once`).
SERVING_ONLY = {name: getattr(InterestParams(), name)
                for name in ("k", "max_exclusions", "history_size", *finishing_steps(InterestParams()))}
_TRAINED: OrderedDict[tuple[str, str, str], TrainedModel] = OrderedDict()


def trained_once(data: Interactions, train: TrainParams, interest: InterestParams, keep: int = 8) -> TrainedModel:
    """:func:`indexing.train.train_model`, remembered for the last ``keep`` distinct (data,
    training settings) pairs: the model versions are read only, and a refined model (minutes on
    Amazon Beauty) is then trained once per grid of serving settings."""
    digest = hashlib.blake2b(digest_size=16)
    for array in (data.user_ptr, data.items, data.types, data.ts):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(" ".join(data.item_ids).encode())
    if data.item_features:  # the catalog's features of the items the version knows
        digest.update(repr([data.item_features.get(item_id) for item_id in data.item_ids]).encode())
    # The factor step's weight is a serving setting, but a version has factors only if it was on.
    key = (digest.hexdigest(), repr(train), repr(replace(interest, **SERVING_ONLY)), fits_factors(interest.factor_weight))
    if key in _TRAINED:
        _TRAINED.move_to_end(key)
    else:
        _TRAINED[key] = train_model(data, train, interest)
        while len(_TRAINED) > keep:
            _TRAINED.popitem(last=False)
    return _TRAINED[key]


class ServedModel(Recommender):
    """Transition-matrix item vectors, a decayed user vector per event, FAISS inner product."""

    name = "served"
    served = True

    def __init__(
        self,
        train_params: TrainParams | None = None,
        interest_params: InterestParams | None = None,
        factory: str = "Flat",
    ) -> None:
        self.train_params = train_params or TrainParams()
        self.interest_params = interest_params or InterestParams()
        self.factory = factory
        self.context = np.zeros((0, self.train_params.dim), np.float32)
        self.target = np.zeros((0, self.train_params.dim), np.float32)
        self.index = None
        self.model_item_ids: list[str] = []
        self.model_row = np.zeros(0, np.int64)  # log item row -> model row, -1 if unknown
        self.log_row = np.zeros(0, np.int64)  # model row -> log item row
        self.vectors = np.zeros((0, self.train_params.dim), np.float32)
        self.taste = np.zeros((0, self.train_params.dim), np.float32)
        self.last_ts = np.zeros(0)
        self.recent: list[deque[tuple[int, int, float]]] = []
        self.summary: dict[str, object] = {}

    # ------------------------------------------------------------------ learning

    def fit(self, log: EventLog) -> None:
        """Train a new model version on ``log`` and move every user's state to it.

        The first fit applies all of ``log``'s events to the users' (empty) states, as if
        the worker had processed them with this model; a later fit rebuilds every user's
        vector from their recent accepted events, as the worker does on a model swap.
        """
        item_names = np.asarray(log.item_ids)
        data = interactions_from_arrays(
            np.asarray(log.user_ids)[log.users], item_names[log.items], log.types, log.ts, log.item_features
        )
        trained = trained_once(data, self.train_params, self.interest_params)
        # As every training of the worker's versions: with "auto", the factor step's weight chosen
        # on the log's held-out events.
        self.factor_choice = choose_for(trained, log, self.train_params, self.interest_params, model=type(self),
                                        exclude_purchased=self.exclude_purchased)
        self.serve_version(trained, log)

    def serve_version(self, trained: TrainedModel, log: EventLog) -> None:
        """Serve ``trained`` from now on and move every user's state to it (:meth:`fit`'s second
        half: the first call applies all of ``log``'s events, a later one rebuilds each user's
        vector from their recent events). ``log``'s items the version does not know are never
        recommended; the version's items ``log`` lacks are listed as -1."""
        first = self.index is None
        self.trained = trained
        self.context, self.target, self.summary = trained.context, trained.target, trained.summary
        self.index, self.calibration = build_served_index(self.target, self.factory, context=self.context)
        self.model_item_ids = list(trained.item_ids)
        row_of = {item: row for row, item in enumerate(log.item_ids)}
        self.log_row = np.array([row_of.get(i, -1) for i in self.model_item_ids], dtype=np.int64)
        self.model_row = np.full(log.n_items, -1, dtype=np.int64)
        known = self.log_row >= 0
        self.model_row[self.log_row[known]] = np.flatnonzero(known)

        self.vectors = np.zeros((log.n_users, self.context.shape[1]), np.float32)
        self.taste = np.zeros_like(self.vectors)
        if first:
            self.last_ts = np.full(log.n_users, np.nan)
            self.recent = [deque(maxlen=self.interest_params.history_size) for _ in range(log.n_users)]
            self._apply(log)
        else:
            for user, recent in enumerate(self.recent):
                if recent:
                    self._rebuild(user)

    def _rebuild(self, user: int) -> None:
        known = [
            (int(self.model_row[item]), EVENT_TYPES[kind], ts)
            for item, kind, ts in self.recent[user]
            if self.model_row[item] >= 0
        ]
        vector, last_ts = fold_events(known, self.context, self.interest_params)
        self.vectors[user] = vector
        if self.interest_params.taste_decay > 0:
            self.taste[user] = fold_taste(known, self.context, self.interest_params)
        if known:  # as streamrec.core.batch.rebuild_state: no known event keeps the old time
            self.last_ts[user] = last_ts

    def observe(self, log: EventLog) -> None:
        if self.index is None:
            raise RuntimeError("fit the model first")
        self._apply(log)

    def _apply(self, log: EventLog) -> None:
        rows = self.model_row[log.items]
        accepted = np.flatnonzero(rows >= 0)
        if not len(accepted):
            return
        users = log.users[accepted]
        update_taste(self.taste, self.last_ts, users, rows[accepted], log.types[accepted].astype(np.int64),
                     log.ts[accepted], self.context, self.interest_params)
        update_batch(
            self.vectors, self.last_ts, users, rows[accepted], log.types[accepted].astype(np.int64),
            log.ts[accepted], self.context, self.interest_params,
        )
        for user, item, kind, ts in zip(
            users.tolist(), log.items[accepted].tolist(), log.types[accepted].tolist(), log.ts[accepted].tolist(),
            strict=True,
        ):
            self.recent[user].append((item, kind, ts))

    # ------------------------------------------------------------------ serving

    def recommend(self, users: np.ndarray, k: int, exclude: Sequence[np.ndarray]) -> np.ndarray:
        if self.index is None:
            raise RuntimeError("fit the model first")
        out = np.full((len(users), k), -1, dtype=np.int64)
        for start in range(0, len(users), 4096):
            block = users[start : start + 4096]
            banned = []
            for items in exclude[start : start + 4096]:
                rows = self.model_row[np.asarray(items, dtype=np.int64)]
                banned.append(set(rows[rows >= 0].tolist()))
            diversity = self.interest_params.diversity
            knn, listed = self._knn_on(), self._factor_depth()
            fetch = search_depth(k, diversity, knn, listed)  # as the worker searches and cuts
            shown = shown_width(k, diversity, fetch)
            served = served_width(shown, listed)
            rows, scores = search(self.index, self.queries(block), fetch, banned)
            rows, scores = self._repeats(block, rows, scores, fetch, banned, keep_all=knn)
            if knn:
                rows, scores = self._neighbours(block, rows, scores, served, banned)
            rows, scores = rows[:, :served], scores[:, :served]
            if listed:
                rows, scores = self._factors(block, rows, scores, shown, banned)
            if diversity > 0:  # as streamrec.core.batch.diversity_step
                picked = [mmr(r, s, k, self.target.__getitem__, diversity) for r, s in zip(rows, scores)]
                rows = np.array([r for r, _ in picked], np.int64).reshape(len(block), k)
            out[start : start + len(block)] = np.where(rows >= 0, self.log_row[np.maximum(rows, 0)], -1)
        return out

    def _factor_depth(self) -> int:
        """The factor step's depth when it runs (:func:`streamrec.core.batch.factors_on`), else 0."""
        p = self.interest_params
        return p.factor_depth if self._factor_weight() > 0 and getattr(self.trained, "factors", None) is not None else 0

    def _factor_weight(self) -> float:
        """The factor step's weight: the setting, or this version's chosen one for "auto"."""
        return resolve_weight(self.interest_params.factor_weight, self.summary.get("factors", {}).get("weight", 0.0))

    def _factors(self, users: np.ndarray, rows: np.ndarray, scores: np.ndarray, width: int,
                 banned: list[set[int]]) -> tuple[np.ndarray, np.ndarray]:
        """The worker's factor step (:func:`streamrec.core.batch.factor_step`) over the users'
        recent events, as model rows."""
        p, factors, settings = self.interest_params, self.trained.factors, self.summary["factors"]
        if getattr(self, "_solved_of", None) is not factors:
            self._solved_of, self._solved = factors, solved(factors, settings["reg"])
        histories = [[int(self.model_row[item]) for item, _, _ in self.recent[user]] for user in users.tolist()]
        return factor_batch(rows, scores, width, histories, factors, self._solved,
                            confidence=settings["confidence"], weight=self._factor_weight(), depth=p.factor_depth,
                            banned=lambda slot: np.fromiter(banned[slot], np.int64),
                            repeats=resolve_repeats(p.factor_repeats, settings.get("repeats", False)))

    def _knn_on(self) -> bool:
        p = self.interest_params
        return ((p.knn_weight > 0 and getattr(self.trained, "neighbours", None) is not None)
                or (p.pop_weight > 0 and p.pop_items > 0))

    def _neighbours(self, users: np.ndarray, rows: np.ndarray, scores: np.ndarray, k: int,
                    banned: list[set[int]]) -> tuple[np.ndarray, np.ndarray]:
        """The worker's neighbour step (:func:`streamrec.core.batch.neighbour_step`) over the users'
        last ``knn_events`` events, as model rows (-1: an item the model does not know)."""
        p = self.interest_params
        recent = np.full((len(users), p.knn_events), -1, np.int64)
        for slot, user in enumerate(users.tolist()):
            mine = [int(self.model_row[item]) for item, _, _ in list(self.recent[user])[-p.knn_events:]]
            if mine:
                recent[slot, -len(mine):] = mine
        pairs = np.asarray([slot * (len(self.target) + 1) + row for slot, rows_of in enumerate(banned) for row in rows_of],
                           np.int64)

        def is_banned(slots: np.ndarray, candidates: np.ndarray) -> np.ndarray:
            return np.isin(slots.astype(np.int64) * (len(self.target) + 1) + candidates, pairs)

        knn = self.trained.neighbours is not None
        if not hasattr(self, "_popular"):
            self._popular = {}
        if (key := (id(self.trained), p.pop_items, p.pop_weight)) not in self._popular:
            self._popular = {key: popular_items(self.trained.popularity, p.pop_items, p.pop_weight)}
        return neighbour_batch(rows, scores, k, self.queries(users), recent,
                               self.trained.neighbours if knn else np.zeros((0, 0), np.int32),
                               self.trained.neighbour_sims if knn else np.zeros((0, 0), np.float32),
                               self.target.__getitem__, weight=p.knn_weight if knn else 0.0,
                               decay=p.knn_decay, banned=is_banned, popular=self._popular[key])

    def _repeats(self, users: np.ndarray, rows: np.ndarray, scores: np.ndarray, k: int,
                 banned: list[set[int]], *, keep_all: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The worker's repeat step (:func:`streamrec.core.batch.repeat_step`) over the users' last
        events, as model rows (events on items the model does not know are not in ``recent``)."""
        p = self.interest_params
        repeat = getattr(self.trained, "repeat", None)
        if p.repeat_weight <= 0 or repeat is None:
            return rows, scores
        by_age = np.asarray(self.summary.get("repeat_by_age", []), np.float64)
        if not len(by_age):
            return rows, scores
        recent = []
        for slot, user in enumerate(users.tolist()):
            rows_of_user = [int(self.model_row[item]) for item, _, _ in list(self.recent[user])[-REPEAT_EVENTS:]]
            recent.append([row if row not in banned[slot] else -1 for row in rows_of_user if row >= 0])
        matrix = recent_matrix(recent, by_age)
        return repeat_batch(rows, scores, k + (matrix.shape[1] if keep_all else 0), self.queries(users), matrix,
                            self.target.__getitem__, repeat.__getitem__, p.repeat_weight, by_age)

    def queries(self, users: np.ndarray) -> np.ndarray:
        """The users' search queries: the interest vector plus the mapped taste
        (:func:`streamrec.core.taste.query`, as :func:`streamrec.core.batch.new_states`)."""
        transform = getattr(self.trained, "taste", None) if self.interest_params.taste_decay > 0 else None
        return taste_query(self.vectors[users], self.taste[users], transform)

    def user_vector(self, user: int) -> np.ndarray:
        return self.vectors[user]

    def describe(self) -> dict[str, object]:
        train = {k: v for k, v in asdict(self.train_params).items()}
        interest = {k: v for k, v in asdict(self.interest_params).items() if k not in ("k",)}
        choice = getattr(self, "factor_choice", None)
        features = self.summary.get("refine", {}).get("features")
        return {"train": train, "interest": interest, "factory": self.factory,
                **({"factor_choice": choice.summary()} if choice is not None else {}),
                **({"catalog_features": features} if features else {})}
