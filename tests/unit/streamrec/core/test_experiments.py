import numpy as np
import pytest
from scipy import stats

from indexing.artifact import load_artifact, save_artifact
from streamrec.contract import Event, encode_event, list_id_for
from streamrec.core.batch import Message, process_batch
from streamrec.core.experiments import Experiment, Variant, assign, experiment_from_dict, unit_hash
from streamrec.core.interest import InterestParams, fold_events

NOW = 1_800_000_000.0


@pytest.fixture
def model(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"sku-{i}" for i in range(40)]
    target = rng.standard_normal((40, 6))
    save_artifact(tmp_path / "m", ids, rng.standard_normal((40, 6)), target)
    loaded = load_artifact(tmp_path / "m", use_gpu=False)
    loaded.test_target = target.astype(np.float32)
    return loaded


def test_assignment_is_stable_and_follows_the_weights():
    e = Experiment("e", "salt", (Variant("a", 1.0), Variant("b", 3.0)))
    users = [f"u-{n}" for n in range(20_000)]
    counts = [sum(assign(e, u).name == name for u in users) for name in ("a", "b")]
    # The split is the configured 1:3: a chi-square test against it does not reject.
    assert stats.chisquare(counts, [5_000, 15_000]).pvalue > 0.001
    assert [assign(e, u).name for u in users[:50]] == [assign(e, u).name for u in users[:50]]


def test_a_new_salt_reshuffles_users_independently():
    first = Experiment("e", "s1", (Variant("a", 1.0), Variant("b", 1.0)))
    second = Experiment("e", "s2", (Variant("a", 1.0), Variant("b", 1.0)))
    users = [f"u-{n}" for n in range(10_000)]
    table = np.zeros((2, 2))
    for u in users:
        table[assign(first, u).name == "b", assign(second, u).name == "b"] += 1
    assert stats.chi2_contingency(table).pvalue > 0.001  # independent of the old split
    assert unit_hash("s1", "u-1") != unit_hash("s2", "u-1")


def test_bad_experiments_are_refused_with_a_sentence():
    with pytest.raises(ValueError, match="at least two variants"):
        Experiment("e", "s", (Variant("a", 1.0),))
    with pytest.raises(ValueError, match="same name"):
        Experiment("e", "s", (Variant("a", 1.0), Variant("a", 1.0)))
    with pytest.raises(ValueError, match="weight must be > 0"):
        Variant("a", 0.0)
    with pytest.raises(ValueError, match="needs its interest parameters"):
        Variant("a", 1.0, "params")


def test_every_list_is_stamped_and_each_variant_builds_its_own_list(model):
    experiment = experiment_from_dict({"name": "ab", "salt": "x", "variants": [
        {"name": "control", "kind": "trending"},
        {"name": "model", "kind": "model"},
        {"name": "buyers", "kind": "params", "event_weights": {"view": 0.1, "purchase": 9.0}, "event_decay": 0.9},
    ]})
    params = InterestParams(k=5)
    events = [Event(f"e{n}", f"u{n % 30}", f"sku-{(7 * n) % 40}", "purchase" if n % 5 == 0 else "view", 100.0 + n)
              for n in range(120)]
    messages = [Message(e.user_id.encode(), encode_event(e), 0, n) for n, e in enumerate(events)]
    result = process_batch(messages, lambda u, p: None, model, params, now=NOW, experiment=experiment)
    plain = {r.user_id: r for r in process_batch(messages, lambda u, p: None, model, params, now=NOW).recommendations}
    seen = set()
    for rec in result.recommendations:
        variant = assign(experiment, rec.user_id)
        seen.add(variant.name)
        assert rec.experiment == "ab" and rec.variant == variant.name
        assert rec.list_id == list_id_for(rec.user_id, rec.event_id, rec.model_version)
        mine = [e for e in events if e.user_id == rec.user_id]
        if variant.kind == "trending":
            assert {i.source for i in rec.items} == {"trending"}
        elif variant.kind == "model":
            assert rec.items == plain[rec.user_id].items
        else:  # the query is the history folded with the variant's parameters, searched by brute force here
            query, _ = fold_events([(model.row_of[e.item_id], e.type, e.ts) for e in mine], model.context, variant.params)
            bought = {model.row_of[e.item_id] for e in mine if e.type == "purchase"}
            scores = model.test_target @ query
            expected = [model.item_ids[r] for r in np.argsort(-scores) if r not in bought][:5]
            assert [i.item_id for i in rec.items] == expected
    assert seen == {"control", "model", "buyers"}
    assert plain[result.recommendations[0].user_id].experiment is None


def test_impressions_are_accepted_and_change_nothing(model):
    params = InterestParams(k=5)
    view = Event("e1", "u1", "sku-3", "view", 100.0)
    shown = Event("e2", "u1", "sku-9", "impression", 101.0, list_id="abc")
    with_impression = process_batch([Message(b"u1", encode_event(view), 0, 0), Message(b"u1", encode_event(shown), 0, 1)],
                                    lambda u, p: None, model, params, now=NOW)
    alone = process_batch([Message(b"u1", encode_event(view), 0, 0)], lambda u, p: None, model, params, now=NOW)
    assert not with_impression.rejected
    np.testing.assert_array_equal(with_impression.states["u1"][0].vector, alone.states["u1"][0].vector)
    assert [r.event_id for r in with_impression.recommendations] == ["e1"]
    only = process_batch([Message(b"u1", encode_event(shown), 0, 1)], lambda u, p: None, model, params, now=NOW)
    assert not only.recommendations and not only.states and not only.rejected
