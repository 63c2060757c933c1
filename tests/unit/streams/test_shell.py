"""The worker's InterestParams come from the rules settings (repeat and diversity steps)."""

import pytest
from pydantic import ValidationError

from streamrec.config import Settings
from streams.shell import interest_params


def test_defaults_are_the_repeat_step_on_and_the_diversity_step_off():
    params = interest_params(Settings())
    assert (params.repeat_weight, params.diversity) == (0.3, 0.0)


def test_environment_variables_set_both_steps(monkeypatch):
    monkeypatch.setenv("STREAMREC_RULES__REPEAT_WEIGHT", "0")
    monkeypatch.setenv("STREAMREC_RULES__DIVERSITY", "0.2")
    params = interest_params(Settings())
    assert (params.repeat_weight, params.diversity) == (0.0, 0.2)


def test_a_diversity_outside_0_to_1_is_refused(monkeypatch):
    monkeypatch.setenv("STREAMREC_RULES__DIVERSITY", "1.5")
    with pytest.raises(ValidationError, match="diversity"):
        Settings()


def test_the_neighbour_settings_default_to_the_core_defaults_and_are_read_from_the_environment(monkeypatch):
    from streamrec.core.interest import InterestParams

    params = interest_params(Settings())
    assert (params.knn_weight, params.pop_weight) == (InterestParams().knn_weight, InterestParams().pop_weight)
    monkeypatch.setenv("STREAMREC_RULES__KNN_WEIGHT", "0.25")
    monkeypatch.setenv("STREAMREC_RULES__POP_WEIGHT", "0")
    params = interest_params(Settings())
    assert (params.knn_weight, params.pop_weight) == (0.25, 0.0)
    monkeypatch.setenv("STREAMREC_RULES__KNN_WEIGHT", "-1")
    with pytest.raises(ValidationError, match="knn_weight"):
        Settings()
