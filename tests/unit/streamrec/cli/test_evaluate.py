import json

import numpy as np
import pytest
from click.testing import CliRunner

from streamrec.cli.evaluate import evaluate
from streamrec.evaluation.data import user_sequences
from streamrec.evaluation.models import MODEL_NAMES, served_params


@pytest.fixture
def beauty_like(tmp_path, toy_log):
    """The toy shop written as an Amazon sequence file (``user item item ...``)."""
    path = tmp_path / "Toy.txt"
    lines = [" ".join([toy_log.user_ids[u]] + [toy_log.item_ids[toy_log.items[n]] for n in seq])
             for u, seq in enumerate(user_sequences(toy_log))]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_json_lists_every_model_with_the_named_keys(beauty_like):
    result = CliRunner().invoke(evaluate, ["--dataset", str(beauty_like), "--format", "amazon-seq", "--dim", "16", "--json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [r["name"] for r in records] == list(MODEL_NAMES)
    for record in records:
        for key in ("name", "served", "dataset", "protocol", "HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20",
                    "users", "seconds", "coverage@10", "ILD@10", "novelty@10"):
            assert key in record
        assert 0 < record["coverage@10"] <= 1 and 0 <= record["ILD@10"] <= 1 and record["novelty@10"] > 0
        assert record["served"] == (record["name"] == "served")
        assert record["dataset"] == "Toy" and record["protocol"] == "leave-one-out" and record["users"] == 300
    # Popularity lists the same items to everyone but for masked histories: the least coverage.
    coverage = {r["name"]: r["coverage@10"] for r in records}
    assert coverage["popularity"] == min(coverage.values())


def test_prequential_writes_the_moving_window_csv_and_plot(beauty_like, tmp_path):
    csv_path, png = tmp_path / "hr.csv", tmp_path / "hr.png"
    result = CliRunner().invoke(evaluate, [
        "--dataset", str(beauty_like), "--format", "amazon-seq", "--protocol", "prequential", "--models",
        "served,popularity", "--dim", "8", "--retrain-every", "500", "--window", "200", "--csv", str(csv_path),
        "--plot", str(png), "--json",
    ])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert {r["name"] for r in records} == {"served", "popularity"}
    assert all(r["protocol"] == "prequential" and r["scored_events"] > 0 for r in records)
    header, *rows = csv_path.read_text().splitlines()
    assert header == "model,scored_events,stream_position,ts,hr10_window,hr10_cumulative"
    final = {r.split(",")[0]: float(r.split(",")[-1]) for r in rows}
    assert final == pytest.approx({r["name"]: r["HR@10"] for r in records}, abs=1e-4)
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize("args, message", [
    (["--served-param", "targets=magic"], "targets must be"),
    (["--served-param", "colour=blue"], "unknown served-model parameter"),
    (["--served-param", "dim"], "NAME=VALUE"),
    (["--models", "served,oracle"], "unknown model"),
    (["--protocol", "prequential", "--through-kafka"], "leave-one-out protocol only"),
    (["--protocol", "new-items", "--shuffle-within-users"], "leave-one-out and prequential"),
])
def test_bad_options_are_explained(beauty_like, args, message):
    result = CliRunner().invoke(evaluate, ["--dataset", str(beauty_like), "--format", "amazon-seq", *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_missing_dataset_is_explained(tmp_path):
    result = CliRunner().invoke(evaluate, ["--dataset", str(tmp_path / "nope.txt"), "--format", "amazon-seq"])
    assert result.exit_code == 2 and "shared datasets" in result.output


def test_served_params_overrides_both_parameter_sets():
    train, interest = served_params({"ridge": "0.5", "item_bias": "off", "event_decay": "0.7", "dim": "64"})
    assert (train.ridge, train.item_bias, train.dim, interest.event_decay) == (0.5, False, 64, 0.7)
    assert np.isclose(interest.half_life_s, 7 * 24 * 3600)


def test_the_taste_only_proxy_runs_and_says_so(beauty_like):
    """``--shuffle-within-users`` runs on the same users, and the records are named for the
    shuffled log."""
    runs = {}
    for extra in ([], ["--shuffle-within-users"]):
        result = CliRunner().invoke(evaluate, ["--dataset", str(beauty_like), "--format", "amazon-seq", "--models",
                                               "popularity", "--json", *extra])
        assert result.exit_code == 0, result.output
        runs[bool(extra)] = json.loads(result.stdout)[0]
    assert runs[True]["dataset"] == runs[False]["dataset"] + "-shuffled"
    assert runs[True]["users"] == runs[False]["users"]


def test_the_catalog_beside_the_dataset_reaches_the_served_models_training(beauty_like, toy_log):
    # every item's brand: its id's first character (Amazon's item2attributes: attribute ids per item)
    brands = sorted({item_id[:1] for item_id in toy_log.item_ids})
    (beauty_like.parent / "Toy_item2attributes.json").write_text(
        json.dumps({item_id: [brands.index(item_id[:1])] for item_id in toy_log.item_ids}))
    args = ["--dataset", str(beauty_like), "--format", "amazon-seq", "--models", "served", "--dim", "16", "--json"]
    shared = sum(sum(item_id[:1] == b for item_id in toy_log.item_ids) >= 2 for b in brands)
    result = CliRunner().invoke(evaluate, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["params"]["catalog_features"] == shared > 0
    result = CliRunner().invoke(evaluate, [*args, "--served-param", "refine_features=false"])
    assert result.exit_code == 0, result.output
    assert "catalog_features" not in json.loads(result.stdout)[0]["params"]
