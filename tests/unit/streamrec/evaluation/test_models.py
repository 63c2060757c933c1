"""One contract suite over every model the harness evaluates (served and baselines)."""

import warnings

import numpy as np
import pytest

from streamrec.evaluation.data import leave_one_out
from streamrec.evaluation.models import MODEL_NAMES, build_models
from streamrec.evaluation.protocols import run_leave_one_out, run_prequential

PERSONAL = {"served", "item-knn", "als", "isgd"}


def model(name):
    return build_models([name], dim=16)[0]


@pytest.fixture(scope="module")
def outcomes(toy_log):
    split = leave_one_out(toy_log)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # implicit's BLAS-threads advice
        return {name: run_leave_one_out(model(name), toy_log, split=split) for name in MODEL_NAMES}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_beats_random_on_a_learnable_shop(name, outcomes, toy_log):
    random_hr10 = 10 / toy_log.n_items
    assert outcomes[name].metrics["HR@10"] > 1.8 * random_hr10, outcomes[name].metrics
    if name in PERSONAL:
        assert outcomes[name].metrics["HR@10"] > 2 * outcomes["popularity"].metrics["HR@10"]
    assert outcomes[name].served == (name == "served")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_lists_are_distinct_items_never_excluded(name, toy_log):
    split = leave_one_out(toy_log)
    subject = model(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        subject.fit(toy_log.take(split.train))
    subject.observe(toy_log.take(split.validation))
    top = subject.recommend(split.users, 20, split.histories)
    assert top.shape == (len(split.users), 20)
    for row, history in zip(top, split.histories):
        shown = row[row >= 0]
        assert len(set(shown.tolist())) == len(shown)
        assert not set(shown.tolist()) & set(history.tolist())
        assert np.all(shown < toy_log.n_items)


@pytest.mark.parametrize("name", [n for n in MODEL_NAMES if model(n).user_local])
def test_user_local_models_score_the_same_in_waves_and_event_by_event(name, make_log):
    log = make_log(n_users=80, seed=9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batched = run_prequential(model(name), log, pretrain=300, retrain_every=250)
        one_by_one = model(name)
        one_by_one.user_local = False
        sequential = run_prequential(one_by_one, log, pretrain=300, retrain_every=250)
    np.testing.assert_array_equal(batched.positions, sequential.positions)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_prequential_beats_random(name, toy_log):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome = run_prequential(model(name), toy_log, pretrain=800, retrain_every=700)
    assert outcome.metrics["HR@10"] > 1.8 * 10 / toy_log.n_items, outcome.metrics


def test_the_factor_weight_reads_a_number_or_auto():
    from streamrec.evaluation.models import served_params

    assert served_params({"factor_weight": "auto"})[1].factor_weight == "auto"
    assert served_params({"factor_weight": "2"})[1].factor_weight == 2.0
    assert served_params({"factor_weight": "0"})[1].factor_weight == 0.0
    with pytest.raises(ValueError, match="factor_weight must be a float or 'auto'"):
        served_params({"factor_weight": "sometimes"})
    with pytest.raises(ValueError, match="factor_weight must be 'auto' or a number >= 0"):
        served_params({"factor_weight": "-1"})


def test_the_factor_repeats_read_true_false_or_auto():
    from streamrec.evaluation.models import served_params

    assert served_params({})[1].factor_repeats == "auto"
    assert served_params({"factor_repeats": "auto"})[1].factor_repeats == "auto"
    assert served_params({"factor_repeats": "true"})[1].factor_repeats is True
    assert served_params({"factor_repeats": "0"})[1].factor_repeats is False
    with pytest.raises(ValueError, match="factor_repeats must be true or false or 'auto'"):
        served_params({"factor_repeats": "sometimes"})
