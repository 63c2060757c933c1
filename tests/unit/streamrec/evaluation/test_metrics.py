import math

import numpy as np
import pytest

from streamrec.evaluation.metrics import hit_positions, moving_average, summarise, top_k


def test_hit_positions_and_metrics_known_answer():
    top = np.array([[5, 6, 7, 8], [1, 2, 3, 4], [9, 9, 9, 9], [4, 3, 2, 1]])
    positions = hit_positions(top, np.array([5, 3, 0, 1]))
    assert positions.tolist() == [0, 2, 4, 3]
    metrics = summarise(positions, ks=(1, 3, 4), digits=6)
    assert metrics["HR@1"] == pytest.approx(1 / 4)
    assert metrics["HR@3"] == pytest.approx(2 / 4)
    assert metrics["HR@4"] == pytest.approx(3 / 4)
    assert metrics["NDCG@1"] == pytest.approx(1 / 4)
    assert metrics["NDCG@3"] == pytest.approx((1 + 1 / math.log2(4)) / 4, abs=1e-6)
    assert metrics["NDCG@4"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(5)) / 4, abs=1e-6)


def test_summarise_of_nothing_is_zero():
    assert summarise(np.zeros(0, int), ks=(10,)) == {"HR@10": 0.0, "NDCG@10": 0.0}


def test_top_k_masks_exclusions_and_breaks_ties_by_lower_row():
    scores = np.array([[0.5, 0.9, 0.9, 0.1, 0.9], [1.0, 2.0, 3.0, 4.0, 5.0]])
    top = top_k(scores.copy(), 3, [np.array([1]), np.array([4, 3, 2, 1])])
    assert top[0].tolist() == [2, 4, 0]
    assert top[1].tolist() == [0, -1, -1]  # only one item left to recommend


def test_top_k_ties_at_the_cut_take_the_lowest_rows():
    scores = np.zeros((1, 1000))
    scores[0, 700] = 1.0
    assert top_k(scores, 4)[0].tolist() == [700, 0, 1, 2]


def test_top_k_equals_a_full_stable_sort():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, size=(50, 40)).astype(float)
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(top_k(scores.copy(), 7), expected)


def test_moving_average_uses_the_last_window_values():
    hits = np.array([1, 1, 0, 0, 1, 0])
    np.testing.assert_allclose(moving_average(hits, 3), [1, 1, 2 / 3, 1 / 3, 1 / 3, 1 / 3])
    with pytest.raises(ValueError):
        moving_average(hits, 0)
