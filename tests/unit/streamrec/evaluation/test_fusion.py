"""The served+als prototype's rank fusion (streamrec/evaluation/fusion.py; the rule itself:
tests/unit/streamrec/core/test_factors.py)."""

import numpy as np
import pytest

from streamrec.evaluation.base import Recommender
from streamrec.evaluation.fusion import RankFusion
from streamrec.evaluation.models import build_models


class Fixed(Recommender):
    """The same ranking for everyone, minus each user's exclusions; records what it was fed."""

    def __init__(self, ranking):
        self.ranking, self.fed = ranking, []

    def fit(self, log):
        self.fed.append(("fit", log))

    def observe(self, log):
        self.fed.append(("observe", log))

    def recommend(self, users, k, exclude):
        out = np.full((len(users), k), -1)
        for n, banned in enumerate(exclude):
            kept = [i for i in self.ranking if i not in set(np.asarray(banned).tolist())][:k]
            out[n, : len(kept)] = kept
        return out


def test_both_models_are_fed_alike_and_exclusions_hold():
    a, b = Fixed([1, 2, 3, 4, 5]), Fixed([5, 4, 3, 2, 1])
    model = RankFusion(a, b, weight=1.0, depth=5)
    model.fit("train")
    model.observe("more")
    assert a.fed == b.fed == [("fit", "train"), ("observe", "more")]
    top = model.recommend(np.array([0, 1]), 3, [np.array([3]), np.array([1, 5])])
    assert 3 not in top[0] and not {1, 5} & set(top[1].tolist())
    assert top[1].tolist() == [2, 4, 3]  # 2 and 4 tie (1/10 + 1/12), above 3 (2/11); 2 appears first


def test_bad_settings_and_the_name():
    with pytest.raises(ValueError, match="weight"):
        RankFusion(Fixed([1]), Fixed([1]), weight=-1)
    (model,) = build_models(["served+als"], dim=8, fusion_weight=2.0)
    assert model.name == "served+als" and model.weight == 2.0 and model.describe()["weight"] == 2.0
