"""Refining the item vectors by softmax cross-entropy on the next item (issue #12.4).

The served model's query is linear in the context vectors: after a user's events
``i_1 .. i_t`` it is ``q_t = sum_a coef(t, a) * context[i_a]`` with the worker's own decays
and event weights (:func:`streamrec.core.interest.update_batch`; ``coef`` is a product of
``event_decay * 0.5 ** (dt / half_life)`` factors and the event's weight). So both sides can
be trained by gradient descent on what the worker serves: for every training event that has
a predecessor (and is not a repeat of it) the logits are ``tau * q . target_j`` and the loss
is the cross-entropy of the event's item. This is the objective the published sequential
models (SASRec, BSARec) are trained with; the regression of :func:`indexing.train.fit_targets`
is its least-squares stand-in, and is where the refinement starts.

* ``tau`` makes the regression's scores (probability-like, tiny) into logits: the value on a
  grid of powers of ~3 with the lowest cross-entropy on a probe of the samples. The targets are
  divided by it again at the end. Training sharpens the scores, so they then spread wider than
  the regression's (``spread_ratio`` in the summary) and the repeat and neighbour steps'
  absolute bonuses weigh less; ``match_scale`` would scale them back, but on Amazon Beauty's
  validation split that lowered HR@10 from 0.1145 to 0.1031 (docs/quality.md), so it is off.
* Adam (Kingma and Ba 2015), learning rate ``lr`` times each side's RMS entry; the rows of
  ``context`` are updated only where the batch has them (lazy Adam), and the constant
  intercept dimension (``TrainParams.item_bias``) stays.
* Up to ``candidates`` items the softmax is over the whole catalog; above, each batch shares
  ``candidates`` items drawn uniformly (the answers' own logits always included), a sampled
  softmax whose uniform proposal needs no correction.
* ``history`` events per sample (``event_decay ** history`` is negligible at the defaults).

Cost per epoch: ``min(samples, per_epoch) * min(items, candidates) * d`` multiply-adds, three
times; on Amazon Beauty (153k samples, 12k items, d = 256) about 40-60 s on two cores
(docs/quality.md). ``per_epoch`` bounds it on large training windows.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

#: With ``average``: every this many steps an iterate joins the running mean.
AVERAGE_EVERY = 4

#: The temperatures tried on the probe (the regression's scores times tau are the logits).
TEMPERATURES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)


@dataclass(frozen=True)
class Samples:
    """Every training event with a predecessor: its last ``history`` events' rows and query
    coefficients (newest first; row 0 with coefficient 0 pads) and its item
    (:func:`indexing.train.next_item_samples`)."""

    items: np.ndarray  # (n, history) int64
    coef: np.ndarray  # (n, history) float32
    answers: np.ndarray  # (n,) int64
    #: (n, history) bool: the history items the worker would not recommend at this point (bought
    #: before, and not the answer); ``refine(mask=True)`` leaves them out of the sample's softmax.
    excluded: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.answers)

    def queries(self, context: np.ndarray, which: np.ndarray | slice = slice(None)) -> np.ndarray:
        """The users' query vectors before the chosen samples."""
        return np.einsum("bl,bld->bd", self.coef[which], context[self.items[which]])


def temperature(samples: Samples, context: np.ndarray, target: np.ndarray, rng: np.random.Generator,
                probe: int = 4096, rows: int = 16) -> float:
    """The ``tau`` of :data:`TEMPERATURES` whose logits ``tau * q . target`` give the lowest
    cross-entropy on ``probe`` random samples. The cross-entropy is convex in ``tau`` (a
    log-sum-exp less a linear term), so the ascending grid stops at the first rise. The scores
    are kept in blocks of ``rows`` samples and each temperature sweeps one block at a time, in
    cache, not the whole probe at once (over Taobao's 84,793 items the blocks still hold 2.8 GB of
    float64 together; sweeping them nine times whole was most of a fit's time)."""
    chosen = rng.permutation(len(samples))[:probe]
    queries, items = samples.queries(context, chosen).astype(np.float64), target.T.astype(np.float64)
    starts, answers = range(0, len(chosen), rows), samples.answers[chosen]
    blocks = [queries[start : start + rows] @ items for start in starts]
    truth = np.concatenate([block[np.arange(len(block)), answers[start : start + rows]]
                            for start, block in zip(starts, blocks)])
    best = (np.inf, 1.0)
    for tau in TEMPERATURES:
        per_sample = []
        for block in blocks:
            logits = tau * block
            top = logits.max(axis=1)
            logits -= top[:, None]
            per_sample.append(np.log(np.exp(logits, out=logits).sum(axis=1)) + top)
        loss = float(np.mean(np.concatenate(per_sample) - tau * truth))
        if loss > best[0]:
            break
        best = min(best, (loss, tau))
    return best[1]


def score_spread(samples: Samples, context: np.ndarray, target: np.ndarray, chosen: np.ndarray) -> float:
    """The RMS deviation of the chosen samples' scores over the catalog from each one's mean."""
    scores = samples.queries(context, chosen).astype(np.float64) @ target.T.astype(np.float64)
    return float(np.sqrt(np.mean((scores - scores.mean(axis=1, keepdims=True)) ** 2)))


def _sum_rows(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Row ``g`` of the result: the sum of the rows of ``values`` in group ``g``, added in their
    order (so the same floats as ``np.add.at`` into zeros): a 0/1 sparse matrix's product,
    several times faster than ``np.add.at`` on wide rows."""
    order = np.argsort(groups, kind="stable")
    indptr = np.r_[0, np.cumsum(np.bincount(groups, minlength=n_groups))]
    ones = sparse.csr_matrix((np.ones(len(groups), values.dtype), order, indptr), shape=(n_groups, len(groups)))
    return np.asarray(ones @ values)


class _Adam:
    """Adam over the rows of one matrix; ``step(rows, grad)`` updates only ``rows``; with
    ``pull > 0`` each step also moves the rows that share of the way back to where they started
    (decoupled weight decay towards the start, as AdamW's is towards 0)."""

    def __init__(self, param: np.ndarray, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 pull: float = 0.0):
        self.param, self.lr, (self.b1, self.b2), self.eps = param, lr, betas, eps
        self.m, self.v = np.zeros_like(param), np.zeros_like(param)
        self.t = 0
        self.pull, self.start = pull, (param.copy() if pull > 0 else None)

    def step(self, rows: np.ndarray | slice, grad: np.ndarray, scale: float = 1.0) -> None:
        """``scale``: this step's share of the learning rate (a schedule)."""
        self.t += 1
        m = self.m[rows] = self.b1 * self.m[rows] + (1 - self.b1) * grad
        v = self.v[rows] = self.b2 * self.v[rows] + (1 - self.b2) * grad * grad
        correction = np.sqrt(1 - self.b2 ** self.t) / (1 - self.b1 ** self.t)
        if self.pull > 0:
            self.param[rows] -= np.float32(scale * self.pull) * (self.param[rows] - self.start[rows])
        self.param[rows] -= (scale * self.lr * correction) * m / (np.sqrt(v) + self.eps)


def logit_gradient(logits: np.ndarray, truth: np.ndarray, smoothing: float = 0.0) -> tuple[float, np.ndarray]:
    """The summed cross-entropy of each row's ``truth`` column under the softmax of ``logits``
    (rows, columns; -inf: not in the row's softmax), and the gradient with respect to the logits
    of the rows' summed loss with its target smoothed: ``1 - smoothing`` on the truth and
    ``smoothing`` spread evenly over the row's finite columns. ``logits`` is overwritten."""
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    every = np.arange(len(truth))
    loss = -float(np.log(probs[every, truth] + 1e-12).sum())
    if smoothing > 0:
        support = np.isfinite(logits)
        probs -= (smoothing * support / support.sum(axis=1, keepdims=True)).astype(probs.dtype)
    probs[every, truth] -= 1.0 - smoothing
    return loss, probs


def refine(context: np.ndarray, target: np.ndarray, samples: Samples, *, epochs: int, lr: float,
           candidates: int, keep_last: bool, per_epoch: int | None = None, batch: int = 512,
           seed: int = 0, match_scale: bool = False, schedule: str = "constant",
           dropout: float = 0.0, average: float = 0.0, pull: float = 0.0, mask: bool = False,
           smoothing: float = 0.0, features: sparse.csr_matrix | None = None) -> dict[str, object]:
    """Train ``context`` and ``target`` (float32, in place) for ``epochs`` passes over
    ``samples`` (see the module doc); ``keep_last``: the context's last dimension stays;
    ``per_epoch``: each pass over at most this many samples (a fresh random subset each time);
    ``schedule``: the learning rate is ``"constant"`` or falls ``"linear"``-ly to 0 over the run;
    ``dropout``: the share of the query's coordinates zeroed in training (the rest scaled up);
    ``average``: the result is the mean of the iterates over this last share of the steps (every
    :data:`AVERAGE_EVERY`-th step; 0: the last iterate alone), a tail average of stochastic
    gradient descent (Polyak and Juditsky 1992); ``pull``: each step moves the updated rows
    ``lr * pull`` of the way back to the regression's vectors (a weight decay towards the start);
    ``mask``: each sample's softmax leaves out its ``samples.excluded`` items (the full softmax
    only; the sampled one ignores it); ``smoothing``: label smoothing, the share of each
    sample's target spread evenly over the items of its softmax (Szegedy et al. 2016);
    ``features``: an items x features matrix (each row the item's share of each catalog feature,
    :func:`feature_matrix`): every feature then has a context and a target vector of its own,
    trained with the items' and added to each item's by its row (a brand's items learn together),
    and folded into the items' vectors at the end, so what is served keeps its form.
    Returns what happened: the temperature, each epoch's mean loss (nats), the seconds."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    n_items, dim = target.shape
    info: dict[str, object] = {"epochs": epochs, "samples": len(samples), "losses": []}
    if epochs <= 0 or not len(samples) or not n_items:
        return info
    tau = temperature(samples, context, target, rng)
    probe = rng.permutation(len(samples))[:1024]
    spread = score_spread(samples, context, target, probe)
    target *= np.float32(tau)
    rms = [float(np.sqrt(np.mean(context**2))) or 1.0, float(np.sqrt(np.mean(target**2))) or 1.0]
    on_context, on_target = _Adam(context, lr * rms[0], pull=lr * pull), _Adam(target, lr * rms[1], pull=lr * pull)
    sampled = n_items > candidates
    shared = features is not None and features.shape[1] > 0
    if shared:
        if features.shape[0] != n_items:
            raise ValueError(f"features has {features.shape[0]} rows for {n_items} items")
        features = sparse.csr_matrix(features, dtype=np.float32)
        by_feature = features.T.tocsr()
        shared_context, shared_target = (np.zeros((features.shape[1], dim), np.float32) for _ in range(2))
        on_shared = (_Adam(shared_context, lr * rms[0], pull=lr * pull), _Adam(shared_target, lr * rms[1], pull=lr * pull))
        info["features"] = int(features.shape[1])
    if schedule not in ("constant", "linear"):
        raise ValueError(f"schedule must be 'constant' or 'linear', got {schedule!r}")
    if not 0 <= average <= 1:
        raise ValueError(f"average must be in [0, 1], got {average}")
    steps = epochs * -(-min(len(samples), per_epoch or len(samples)) // batch)
    done = 0
    averaged, first_averaged = 0, steps - int(round(average * steps))
    mean_context = mean_target = None
    for _ in range(epochs):
        order = rng.permutation(len(samples))[:per_epoch]
        total = 0.0
        for start in range(0, len(order), batch):
            chosen = order[start : start + batch]
            rows, coef, answers = samples.items[chosen], samples.coef[chosen], samples.answers[chosen]
            used = coef.ravel() != 0  # padding has no gradient (and no Adam step)
            touched, where = np.unique(rows.ravel()[used], return_inverse=True)
            if shared:  # each touched item's context with its features' added (padding reads row 0: coefficient 0)
                own = context[touched] + features[touched] @ shared_context
                slot = np.zeros(rows.size, np.int64)
                slot[used] = where
                query = np.einsum("bl,bld->bd", coef, own[slot.reshape(rows.shape)])
            else:
                query = np.einsum("bl,bld->bd", coef, context[rows])
            if dropout > 0:  # inverted dropout on the query's coordinates
                keep = (rng.random(query.shape) >= dropout).astype(np.float32) / np.float32(1 - dropout)
                query = query * keep
            if sampled:  # the answers first, then the shared uniform draw
                pool = rng.choice(n_items, candidates, replace=False)
                columns = np.concatenate([answers, pool])
                scored = target[columns]
                if shared:
                    scored = scored + features[columns] @ shared_target
                logits = query @ scored.T
                # Row i's softmax: its own answer and the pool, not the other answers, and an
                # answer drawn into the pool again counts once (the pool has no repeats).
                own = np.arange(len(chosen))
                answers_first = logits[own, own]
                logits[:, : len(chosen)] = -np.inf
                logits[own, own] = answers_first
                sorter = np.argsort(pool)
                at = sorter[np.minimum(np.searchsorted(pool, answers, sorter=sorter), len(pool) - 1)]
                again = np.flatnonzero(pool[at] == answers)
                logits[again, len(chosen) + at[again]] = -np.inf
                truth = own  # each row's own answer is its column
            else:
                columns, scored = None, (target + features @ shared_target if shared else target)
                logits = query @ scored.T
                truth = answers
                if mask and samples.excluded is not None:  # the worker would not show them
                    row, age = np.nonzero(samples.excluded[chosen])
                    logits[row, rows[row, age]] = -np.inf
            loss, probs = logit_gradient(logits, truth, smoothing)
            total += loss
            probs /= len(chosen)
            grad_query = probs @ scored
            if dropout > 0:
                grad_query *= keep
            grad_target = probs.T @ query
            grad_context = _sum_rows((coef[:, :, None] * grad_query[:, None, :]).reshape(-1, dim)[used], where,
                                     len(touched))
            if keep_last:
                grad_context[:, -1] = 0.0
            scale = 1.0 - done / steps if schedule == "linear" else 1.0
            done += 1
            if columns is None:
                on_target.step(slice(None), grad_target, scale)
            else:  # a row drawn twice (an answer also in the pool) sums its gradients
                unique, back = np.unique(columns, return_inverse=True)
                on_target.step(unique, _sum_rows(grad_target, back, len(unique)), scale)
            on_context.step(touched, grad_context, scale)
            if shared:
                on_shared[0].step(slice(None), features[touched].T @ grad_context, scale)
                on_shared[1].step(slice(None), (by_feature if columns is None else features[columns].T) @ grad_target,
                                  scale)
            if done > first_averaged and (steps - done) % AVERAGE_EVERY == 0:
                averaged += 1
                now_context, now_target = ((context + features @ shared_context, target + features @ shared_target)
                                           if shared else (context, target))
                if mean_context is None:
                    mean_context, mean_target = now_context.copy(), now_target.copy()
                else:  # the running mean of the iterates so far
                    mean_context += (now_context - mean_context) / np.float32(averaged)
                    mean_target += (now_target - mean_target) / np.float32(averaged)
        info["losses"].append(round(total / len(order), 4))
    if mean_context is not None:
        context[:], target[:] = mean_context, mean_target
        info["averaged"] = averaged
    elif shared:  # the features' vectors folded into their items'
        context += features @ shared_context
        target += features @ shared_target
    target /= np.float32(tau)
    # How much wider the scores spread than the regression's (the repeat and neighbour bonuses are
    # absolute, so they weigh that much less); match_scale brings them back to the regression's.
    widened = score_spread(samples, context, target, probe) / max(spread, 1e-30)
    if match_scale:
        target /= np.float32(widened)
    info["spread_ratio"] = round(widened, 3)
    info.update(tau=tau, seconds=round(time.perf_counter() - started, 1))
    return info


def feature_matrix(item_ids: Sequence[str], features: Mapping[str, Iterable[object]], min_items: int = 2
                   ) -> sparse.csr_matrix:
    """The items x features matrix of :func:`refine`'s ``features``: row ``i`` spreads 1 evenly
    over the features of ``item_ids[i]`` (``features[item_id]``: any hashable names, such as
    :func:`streamrec.core.items.item_features`' pairs) that at least ``min_items`` of the items
    share (a feature of one item would only be a second vector of that item); an item without
    any has a zero row. Columns in order of first appearance.

    >>> m = feature_matrix(["a", "b", "c"], {"a": ["red", "big"], "b": ["red"], "c": ["big", "odd"]})
    >>> m.toarray().tolist()
    [[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]]
    """
    counts: dict[object, int] = {}
    for item_id in item_ids:
        for name in set(features.get(item_id, ())):
            counts[name] = counts.get(name, 0) + 1
    column: dict[object, int] = {}
    rows, columns = [], []
    for row, item_id in enumerate(item_ids):
        for name in dict.fromkeys(features.get(item_id, ())):
            if counts[name] >= min_items:
                rows.append(row)
                columns.append(column.setdefault(name, len(column)))
    per_row = np.bincount(np.asarray(rows, np.int64), minlength=len(item_ids))
    values = 1.0 / per_row[rows] if rows else np.zeros(0)
    return sparse.csr_matrix((values.astype(np.float32), (rows, columns)), shape=(len(item_ids), len(column)))
