import json

import pytest
from pydantic import ValidationError

from streamrec.config import Settings
from streamrec.core.experiments import experiment_from_dict

AB = {"name": "ab", "salt": "s", "variants": [{"name": "control", "kind": "trending"},
                                              {"name": "buyers", "weight": 2, "kind": "params", "event_decay": 0.9}]}


def test_an_experiment_reads_from_the_environment_as_json(monkeypatch):
    monkeypatch.setenv("STREAMREC_EXPERIMENTS", json.dumps([AB]))
    monkeypatch.setenv("STREAMREC_ATTRIBUTION__WINDOW_S", "3600")
    settings = Settings()
    experiment = experiment_from_dict(settings.experiments[0].model_dump())
    assert experiment.control.name == "control" and experiment.shares() == {"control": 1 / 3, "buyers": 2 / 3}
    assert experiment.variants[1].params.event_decay == 0.9
    assert settings.attribution.window_s == 3600


@pytest.mark.parametrize("experiments, message", [
    ([AB, {**AB, "name": "other"}], "at most one experiment"),
    ([{**AB, "variants": AB["variants"][:1]}], "at least 2"),
    ([{**AB, "variants": [AB["variants"][0], AB["variants"][0]]}], "same name"),
    ([{**AB, "variants": [AB["variants"][0], {"name": "p", "kind": "params"}]}], "sets none of"),
    ([{**AB, "variants": [AB["variants"][0], {"name": "x", "kind": "magic"}]}], "kind"),
])
def test_bad_experiments_are_refused_when_the_settings_load(experiments, message):
    with pytest.raises(ValidationError, match=message):
        Settings(experiments=experiments)
