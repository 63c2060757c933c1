"""The softmax refinement of the item vectors (indexing/refine.py)."""

from dataclasses import replace

import numpy as np
import pytest

import indexing.refine as refine_module
from indexing.refine import logit_gradient, refine
from indexing.train import TrainParams, interactions_from_arrays, next_item_samples, train_model
from streamrec.contract import EVENT_TYPES
from streamrec.core.interest import InterestParams, update_batch


def noisy_walks(n_users: int = 400, length: int = 12, n_items: int = 120, seed: int = 0):
    """Users walking item -> item + 1 (mod n) with a random jump one time in four; mixed types
    and irregular times, so the coefficients carry weights and time decay."""
    rng = np.random.default_rng(seed)
    users, items, types, ts = [], [], [], []
    for user in range(n_users):
        item, t = int(rng.integers(n_items)), float(rng.integers(10**6))
        for _ in range(length):
            users.append(f"u{user}")
            items.append(f"i{item:03d}")
            types.append(int(rng.integers(len(EVENT_TYPES))))
            ts.append(t)
            t += float(rng.exponential(3600 * 24))
            item = int(rng.integers(n_items)) if rng.random() < 0.25 else (item + 1) % n_items
    return interactions_from_arrays(np.array(users), np.array(items), np.array(types, np.int8), np.array(ts))


def replayed_queries(data, context, interest):
    """The worker's own user vectors just before every event (update_batch, event by event)."""
    users = data.user_of_event()
    vectors = np.zeros((len(data.user_ids), context.shape[1]), np.float32)
    last_ts = np.full(len(data.user_ids), np.nan)
    before = np.zeros((len(data.items), context.shape[1]), np.float32)
    for event in range(len(data.items)):
        before[event] = vectors[users[event]]
        update_batch(vectors, last_ts, users[event : event + 1], data.items[event : event + 1],
                     data.types[event : event + 1].astype(np.int64), data.ts[event : event + 1], context, interest)
    return before


def cross_entropy(samples, context, target) -> float:
    scores = samples.queries(context).astype(np.float64) @ target.T.astype(np.float64)
    scores *= 30.0 / max(np.abs(scores).max(), 1e-12)  # one fixed scale for before and after
    top = scores.max(axis=1)
    return float(np.mean(np.log(np.exp(scores - top[:, None]).sum(axis=1)) + top
                         - scores[np.arange(len(scores)), samples.answers]))


def hit_rate(samples, context, target, k: int = 5) -> float:
    scores = samples.queries(context) @ target.T
    top = np.argsort(-scores, axis=1)[:, :k]
    return float(np.mean((top == samples.answers[:, None]).any(axis=1)))


def test_sample_queries_are_the_workers_user_vectors_before_each_event():
    data = noisy_walks(n_users=30, length=8)
    interest = InterestParams(event_decay=0.6, half_life_s=2 * 24 * 3600)
    context = np.random.default_rng(1).standard_normal((data.n_items, 6)).astype(np.float32)
    samples = next_item_samples(data, interest, history=8)
    before = replayed_queries(data, context, interest)
    users = data.user_of_event()
    first = np.r_[True, users[1:] != users[:-1]]
    repeat = np.r_[False, (data.items[1:] == data.items[:-1]) & ~first[1:]]
    at = np.flatnonzero(~first & ~repeat)
    np.testing.assert_array_equal(samples.answers, data.items[at])
    np.testing.assert_allclose(samples.queries(context), before[at], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("candidates", "dropout"), [(10_000, 0.0), (30, 0.0), (10_000, 0.2)])  # whole, sampled
def test_refinement_lowers_the_cross_entropy_and_finds_more_next_items(candidates, dropout):
    train, held_out = noisy_walks(seed=0), noisy_walks(seed=1)
    base = train_model(train, TrainParams(dim=16, refine_epochs=0))
    interest = InterestParams()
    samples, check = next_item_samples(train, interest), next_item_samples(held_out, interest)
    context, target = base.context.copy(), base.target.copy()
    info = refine(context, target, samples, epochs=4, lr=0.02, candidates=candidates, keep_last=True, dropout=dropout)
    assert len(info["losses"]) == 4 and info["losses"][-1] < info["losses"][0]
    assert cross_entropy(check, context, target) < cross_entropy(check, base.context, base.target)
    assert hit_rate(check, context, target) > hit_rate(check, base.context, base.target)
    np.testing.assert_array_equal(context[:, -1], base.context[:, -1])  # the intercept dimension stays


def test_trained_model_with_refinement():
    data = noisy_walks(n_users=100)
    plain = train_model(data, TrainParams(dim=8, refine_epochs=0))
    refined = train_model(data, TrainParams(dim=8, refine_epochs=2))
    assert "refine" not in plain.summary and len(refined.summary["refine"]["losses"]) == 2
    assert not np.allclose(refined.target, plain.target)
    # New items fold in through the refined contexts, (Q^T Q + r I)^-1 of the refined queries, mapped
    # onto the refined targets: the least-squares map from what that rule gives each model item
    # (from its own samples) to its refined target, written out here.
    samples = next_item_samples(data, InterestParams())
    queries = samples.queries(refined.context).astype(np.float64)
    gram = queries.T @ queries
    solve = np.linalg.inv(gram + 0.1 * np.trace(gram) / 8 * np.eye(8))
    items = np.unique(samples.answers)
    folded = np.array([queries[samples.answers == j].sum(axis=0) @ solve * (samples.answers == j).sum() ** -0.3
                       for j in items])
    outer = folded.T @ folded
    mapping = np.linalg.solve(outer + 1e-3 * np.trace(outer) / 8 * np.eye(8), folded.T @ refined.target[items])
    np.testing.assert_allclose(refined.fold_in, solve @ mapping, rtol=1e-5, atol=1e-7 * np.abs(solve @ mapping).max())
    # and so an item folded in from its samples lands near its refined target, where the plain rule did not
    plain_error = np.linalg.norm(folded - refined.target[items])
    mapped_error = np.linalg.norm(folded @ mapping - refined.target[items])
    assert mapped_error < 0.9 * plain_error, (mapped_error, plain_error)


@pytest.mark.parametrize("match_scale", [True, False])
def test_the_scores_keep_the_regressions_spread(match_scale):
    """The repeat and neighbour steps' weights are set for the regression's score scale."""
    data = noisy_walks(n_users=100)
    base = train_model(data, TrainParams(dim=8, refine_epochs=0))
    samples = next_item_samples(data, InterestParams())

    def spread(context, target) -> float:
        scores = samples.queries(context) @ target.T
        return float(np.sqrt(np.mean((scores - scores.mean(axis=1, keepdims=True)) ** 2)))

    context, target = base.context.copy(), base.target.copy()
    refine(context, target, samples, epochs=4, lr=0.05, candidates=10_000, keep_last=True, match_scale=match_scale)
    ratio = spread(context, target) / spread(base.context, base.target)
    assert (abs(ratio - 1) < 0.02) if match_scale else (ratio > 1.2)


def test_bad_refinement_settings_are_refused():
    with pytest.raises(ValueError, match="refine_epochs"):
        TrainParams(refine_epochs=-1)
    with pytest.raises(ValueError, match="refine_lr"):
        TrainParams(refine_lr=0)
    with pytest.raises(ValueError, match="refine_dropout"):
        TrainParams(refine_dropout=1.0)
    with pytest.raises(ValueError, match="refine_schedule"):
        TrainParams(refine_schedule="cosine")
    with pytest.raises(ValueError, match="refine_average"):
        TrainParams(refine_average=1.5)
    with pytest.raises(ValueError, match="refine_pull"):
        TrainParams(refine_pull=-1)
    with pytest.raises(ValueError, match="refine_smoothing"):
        TrainParams(refine_smoothing=1.0)


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_the_logit_gradient_is_the_smoothed_cross_entropys(smoothing):
    """Against central differences of the smoothed loss written out here: ``-(1 - e) log p_truth
    - e * mean log p`` over each row's finite columns (-inf columns are outside its softmax)."""
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(4, 7))
    logits[1, [0, 5]] = -np.inf
    truth = np.array([2, 3, 0, 6])

    def smoothed(x):
        total = 0.0
        for row, answer in zip(x, truth):
            finite = np.isfinite(row)
            log_p = row[finite] - np.log(np.exp(row[finite]).sum())
            total -= (1 - smoothing) * (row[answer] - np.log(np.exp(row[finite]).sum())) + smoothing * log_p.mean()
        return total

    loss, grad = logit_gradient(logits.copy(), truth, smoothing)
    plain = sum(-(row[a] - np.log(np.exp(row[np.isfinite(row)]).sum())) for row, a in zip(logits, truth))
    assert loss == pytest.approx(plain, rel=1e-9)
    numeric = np.zeros_like(logits)
    for i, j in zip(*np.nonzero(np.isfinite(logits))):
        up, down = logits.copy(), logits.copy()
        up[i, j] += 1e-6
        down[i, j] -= 1e-6
        numeric[i, j] = (smoothed(up) - smoothed(down)) / 2e-6
    assert np.allclose(grad[np.isfinite(logits)], numeric[np.isfinite(logits)], atol=1e-6)
    assert (grad[~np.isfinite(logits)] == 0).all()


def test_a_linear_schedule_moves_less_than_a_constant_one():
    data = noisy_walks(n_users=100)
    base = train_model(data, TrainParams(dim=8, refine_epochs=0))
    samples = next_item_samples(data, InterestParams())
    moved = {}
    for schedule in ("constant", "linear"):
        context, target = base.context.copy(), base.target.copy()
        info = refine(context, target, samples, epochs=3, lr=0.02, candidates=10_000, keep_last=True, schedule=schedule)
        assert info["losses"][-1] < info["losses"][0]
        moved[schedule] = float(np.abs(context - base.context).sum())
    assert 0 < moved["linear"] < moved["constant"]


def test_the_tail_average_is_the_mean_of_the_last_iterates(monkeypatch):
    """``average=0.5``: the vectors are the mean of the iterates of the last half of the steps,
    every fourth step counted back from the last; the iterates are recorded as Adam makes them."""
    data = noisy_walks(n_users=100)
    base = train_model(data, TrainParams(dim=8, refine_epochs=0))
    samples = next_item_samples(data, InterestParams())
    iterates = []
    original = refine_module._Adam.step

    def recording(self, rows, grad, scale=1.0):
        original(self, rows, grad, scale)
        if self.param is recorded["context"]:  # the context's step is each step's last
            iterates.append((recorded["context"].copy(), recorded["target"].copy()))

    monkeypatch.setattr(refine_module._Adam, "step", recording)
    context, target = base.context.copy(), base.target.copy()
    recorded = {"context": context, "target": target}
    info = refine(context, target, samples, epochs=4, lr=0.02, candidates=10_000, keep_last=True, average=0.5)
    steps = len(iterates)
    assert steps == 4 * -(-len(samples) // 512) and steps >= 8
    chosen = [s for s in range(steps - round(steps / 2) + 1, steps + 1) if (steps - s) % 4 == 0]  # 1-based
    assert info["averaged"] == len(chosen) >= 2
    tau = info["tau"]
    expected_context = np.mean([iterates[s - 1][0] for s in chosen], axis=0)
    expected_target = np.mean([iterates[s - 1][1] for s in chosen], axis=0) / tau
    np.testing.assert_allclose(context, expected_context, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(target, expected_target, rtol=1e-4, atol=1e-6 * np.abs(expected_target).max())
    assert not np.allclose(context, iterates[-1][0], rtol=1e-4, atol=1e-6)  # not the last iterate


def test_a_pull_back_to_the_regression_keeps_the_vectors_nearer_to_it():
    data = noisy_walks(n_users=100)
    base = train_model(data, TrainParams(dim=8, refine_epochs=0))
    samples = next_item_samples(data, InterestParams())
    moved = []
    for pull in (0.0, 1.0, 10.0):
        context, target = base.context.copy(), base.target.copy()
        info = refine(context, target, samples, epochs=3, lr=0.02, candidates=10_000, keep_last=True, pull=pull)
        assert info["losses"][-1] < info["losses"][0]
        moved.append(float(np.abs(context - base.context).sum() + np.abs(target - base.target).sum() * info["tau"]))
    assert moved[0] > moved[1] > moved[2] > 0


def test_the_row_sums_are_np_add_ats_floats():
    """The gradients' scatter (``_sum_rows``) adds each group's rows in their order: bitwise the
    floats of ``np.add.at`` into zeros, so the faster scatter changed no refined vector."""
    rng = np.random.default_rng(3)
    values = (rng.standard_normal((3000, 40)) * 1e3 ** rng.integers(-2, 3, (3000, 1))).astype(np.float32)
    groups = np.unique(rng.integers(0, 700, 3000), return_inverse=True)[1]
    expected = np.zeros((groups.max() + 1, 40), np.float32)
    np.add.at(expected, groups, values)
    summed = refine_module._sum_rows(values, groups, groups.max() + 1)
    assert summed.dtype == np.float32
    np.testing.assert_array_equal(summed, expected)


def test_the_mask_leaves_the_items_the_worker_would_not_show_out_of_the_softmax():
    """Every user first buys the same item ``x`` and then walks on, all purchases: ``x`` is in
    every sample's history, never an answer, and the worker would never show it again. Masked,
    it is in no sample's softmax, so its target vector gets no gradient; unmasked, it is pushed
    down as a negative everywhere."""
    walks = noisy_walks(n_users=60, length=10)
    users = walks.user_of_event()
    first = np.r_[True, users[1:] != users[:-1]]
    user_ids = np.concatenate([[walks.user_ids[u], walks.user_ids[u]] if f else [walks.user_ids[u]]
                               for u, f in zip(users, first)])
    item_ids = np.concatenate([["x", walks.item_ids[i]] if f else [walks.item_ids[i]]
                               for i, f in zip(walks.items, first)])
    ts = np.arange(len(item_ids), dtype=np.float64)
    data = interactions_from_arrays(user_ids, item_ids, np.full(len(item_ids), EVENT_TYPES.index("purchase"), np.int8), ts)
    x = data.item_ids.index("x")
    samples = next_item_samples(data, InterestParams())
    assert (samples.excluded & (samples.items == x)).any(axis=1).all() and not (samples.answers == x).any()
    base = train_model(data, TrainParams(dim=8, refine_epochs=0))
    moved = {}
    for mask in (False, True):
        context, target = base.context.copy(), base.target.copy()
        info = refine(context, target, samples, epochs=2, lr=0.02, candidates=10_000, keep_last=True, mask=mask)
        assert info["losses"][-1] < info["losses"][0]
        moved[mask] = float(np.abs(target[x] - base.target[x]).max() / np.abs(base.target).max())
    assert moved[True] < 1e-6 < 1e-3 < moved[False]


def brand_walks(n_users: int = 60, length: int = 6, per_brand: int = 6, seed: int = 0):
    """Two brands of ``per_brand`` items; every user browses one brand, item after item at random
    within it; the catalog names each item's brand."""
    rng = np.random.default_rng(seed)
    users, items, ts = [], [], []
    for user in range(n_users):
        for n in range(length):
            users.append(f"u{user}")
            items.append(f"{'ab'[user % 2]}{int(rng.integers(per_brand))}")
            ts.append(float(user * 100 + n))
    features = {f"{b}{i}": (("brand", b), ("attr", f"size={i % 2}")) for b in "ab" for i in range(per_brand)}
    return interactions_from_arrays(np.array(users), np.array(items), np.zeros(len(items), np.int8), np.array(ts),
                                    features)


def test_the_shared_vectors_gradients_are_the_cross_entropys(monkeypatch):
    """Two full-batch steps; at the second (the features' vectors no longer zero) the gradients
    the refinement gives the items' targets and the features' own context and target vectors,
    against central differences of the mean cross-entropy written out here, with each item's
    vectors its own plus its row of the feature matrix times the features'."""
    from indexing.train import features_of

    data = brand_walks(n_users=16, length=4)
    base = train_model(data, TrainParams(dim=5, refine_epochs=0, knn_neighbours=0))
    samples = next_item_samples(data, InterestParams())
    shares = features_of(data, TrainParams())
    assert shares.shape == (12, 4)  # two brands, two sizes
    assert features_of(data, TrainParams(refine_feature_groups="brand")).shape == (12, 2)
    steps = []
    step = refine_module._Adam.step

    def record(self, rows, grad, scale=1.0):
        steps.append((self.param.astype(np.float64), grad.astype(np.float64)))  # the point, then its gradient
        return step(self, rows, grad, scale)

    monkeypatch.setattr(refine_module._Adam, "step", record)
    info = refine(base.context.copy(), base.target.copy(), samples, epochs=2, lr=0.05, candidates=10_000,
                  keep_last=True, batch=len(samples), features=shares)
    assert info["features"] == 4 and len(steps) == 8  # per step: the items' target and context, the features'
    (target, target_grad), (context, _), (shared_context, shared_context_grad), (shared_target, shared_target_grad) = (
        steps[4:])
    assert np.abs(shared_target).max() > 0 and np.abs(shared_context).max() > 0
    dense = shares.toarray().astype(np.float64)

    def loss(d_target, d_shared_context, d_shared_target):
        queries = samples.queries(context + dense @ (shared_context + d_shared_context))
        logits = queries @ (target + d_target + dense @ (shared_target + d_shared_target)).T
        top = logits.max(axis=1)
        return float(np.mean(np.log(np.exp(logits - top[:, None]).sum(axis=1)) + top
                             - logits[np.arange(len(logits)), samples.answers]))

    rng, eps = np.random.default_rng(3), 1e-5
    for n, grad in enumerate((target_grad, shared_context_grad, shared_target_grad)):
        direction = rng.standard_normal(grad.shape)
        if n == 1:
            direction[:, -1] = 0.0  # the intercept dimension of the contexts stays
        moves = [np.zeros_like(target), np.zeros_like(shared_context), np.zeros_like(shared_target)]
        moves[n] = eps * direction
        plus = loss(*moves)
        moves[n] = -eps * direction
        assert np.sum(grad * direction) == pytest.approx((plus - loss(*moves)) / (2 * eps), rel=2e-3), n


def test_no_shared_features_change_nothing():
    data = brand_walks(n_users=60)
    params = TrainParams(dim=8, refine_epochs=2, knn_neighbours=0)
    plain = train_model(replace(data, item_features=None), params)
    off = train_model(data, replace(params, refine_features=False))
    lone = train_model(replace(data, item_features={"a0": (("brand", "only-mine"),)}), params)  # shared by no other item
    words = train_model(data, replace(params, refine_feature_groups="word"))  # the log's features are brands and sizes
    for model in (off, lone, words):
        np.testing.assert_array_equal(model.context, plain.context)
        np.testing.assert_array_equal(model.target, plain.target)


def test_the_feature_matrix_spreads_each_item_over_its_shared_features():
    from indexing.refine import feature_matrix

    ids = ["a", "b", "c", "d"]
    features = {"a": ["red", "big", "red"], "b": ["red"], "c": ["big", "odd"], "x": ["red"]}
    np.testing.assert_array_equal(feature_matrix(ids, features).toarray(),
                                  [[0.5, 0.5], [1, 0], [0, 1], [0, 0]])  # "odd" and "x" are nobody's to share
    assert feature_matrix(ids, features, min_items=1).shape == (4, 3)
    assert feature_matrix(ids, {}).shape == (4, 0)


def test_unknown_feature_groups_are_refused():
    with pytest.raises(ValueError, match="refine_feature_groups must name some of cat, brand, attr, word"):
        TrainParams(refine_feature_groups="brand,colour")
    with pytest.raises(ValueError, match="refine_feature_groups"):
        TrainParams(refine_feature_groups=" , ")
