"""The optional diversity step: MMR over POOL * k candidates, off by default."""

import numpy as np
import pytest

from indexing.artifact import load_artifact, save_artifact
from streamrec.contract import Event, encode_event
from streamrec.core.batch import Message, process_batch
from streamrec.core.diversity import POOL, mmr
from streamrec.core.interest import InterestParams


def test_strength_zero_is_the_plain_ranking_and_one_spreads_the_list():
    rng = np.random.default_rng(1)
    target = rng.standard_normal((30, 4))
    rows = np.arange(30)
    scores = np.sort(rng.uniform(0, 1, 30))[::-1]
    plain, _ = mmr(rows, scores, 5, target.__getitem__, 0.0)
    assert plain.tolist() == [0, 1, 2, 3, 4]
    spread, spread_scores = mmr(rows, scores, 3, target.__getitem__, 1.0)
    unit = target / np.linalg.norm(target, axis=1, keepdims=True)
    # λ = 1: the best item first, then each next one the least similar to those chosen.
    assert spread[0] == 0
    second = min((r for r in rows if r != 0), key=lambda r: unit[r] @ unit[0])
    assert spread[1] == second
    assert spread_scores.tolist() == pytest.approx(scores[spread].tolist())


def test_a_short_candidate_list_is_padded():
    rows, scores = mmr(np.array([2, -1, -1]), np.array([0.3, -np.inf, -np.inf]), 2, np.eye(3).__getitem__, 0.5)
    assert rows.tolist() == [2, -1] and scores[1] == -np.inf


@pytest.fixture
def model(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"sku-{i}" for i in range(60)]
    save_artifact(tmp_path / "m", ids, rng.standard_normal((60, 6)), rng.standard_normal((60, 6)))
    return load_artifact(tmp_path / "m", use_gpu=False)


def test_the_worker_lists_more_diverse_items_from_its_candidates(model):
    events = [Event(f"e{u}", f"u{u}", f"sku-{u}", "view", 100.0) for u in range(20)]
    messages = [Message(e.user_id.encode(), encode_event(e), 0, n) for n, e in enumerate(events)]
    target = model.extras["target"]
    unit = target / np.linalg.norm(target, axis=1, keepdims=True)

    def lists(diversity):
        result = process_batch(messages, lambda u, p: None, model, InterestParams(k=5, diversity=diversity), now=1e9)
        return {r.user_id: [model.row_of[i.item_id] for i in r.items] for r in result.recommendations}

    plain, diverse = lists(0.0), lists(0.7)
    similarity = lambda rows: np.mean([unit[a] @ unit[b] for a in rows for b in rows if a < b])  # noqa: E731
    assert np.mean([similarity(r) for r in diverse.values()]) < np.mean([similarity(r) for r in plain.values()])
    for n, e in enumerate(events):  # every listed item is among the user's POOL * k best by score
        vector = model.context[model.row_of[e.item_id]]
        best = set(np.argsort(-(target @ vector), kind="stable")[: POOL * 5].tolist())
        assert set(diverse[e.user_id]) <= best and len(diverse[e.user_id]) == 5
