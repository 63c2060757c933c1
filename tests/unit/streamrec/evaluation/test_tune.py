"""Settings chosen on the validation split; repeat purchases under the prequential protocol."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from indexing.train import TrainParams
from streamrec.cli.evaluate import evaluate
from streamrec.core.interest import InterestParams
from streamrec.evaluation.data import EventLog, load_log, user_sequences
from streamrec.evaluation.protocols import run_prequential
from streamrec.evaluation.served import ServedModel
from streamrec.evaluation.tune import GRID, tune, validation_log, without_last_events


def test_the_validation_split_never_holds_a_test_event(toy_log):
    validation = without_last_events(toy_log)
    assert len(validation) == len(toy_log) - toy_log.n_users
    for full, kept in zip(user_sequences(toy_log), user_sequences(validation)):
        assert toy_log.items[full[:-1]].tolist() == validation.items[kept].tolist()
    assert len(validation_log(toy_log, "prequential", 0.25)) == len(toy_log) // 4
    with pytest.raises(ValueError, match="between 0 and 1"):
        validation_log(toy_log, "prequential", 1.0)


def test_tune_takes_the_best_hr_and_the_earlier_point_on_ties():
    scores = {("0", "5"): 0.1, ("1", "5"): 0.3, ("1", "9"): 0.3, ("3", "5"): 0.2}  # (weight, prior), as text
    seen = []

    def run(point):
        seen.append(point)
        hr = scores.get((point["repeat_weight"], point["repeat_prior"]), 0.0)
        return {"HR@10": hr, "NDCG@10": hr / 2}

    result = tune(run, {"repeat_weight": (0.0, 1.0, 3.0), "repeat_prior": (5.0, 9.0)})
    assert result.chosen == {"repeat_weight": 1.0, "repeat_prior": 5.0}
    assert len(seen) == 5  # with the step off its prior is not searched twice
    taste = {("0", "0"): 0.1, ("0", "0.9"): 0.4, ("1", "0"): 0.2, ("1", "0.9"): 0.3}
    result = tune(lambda p: {"HR@10": taste[p["repeat_weight"], p["taste_decay"]], "NDCG@10": 0.0},
                  {"repeat_weight": (0.0, 1.0), "taste_decay": (0.0, 0.9)})
    assert len(result.rows) == 4  # the taste decay matters with the step off
    assert result.chosen == {"repeat_weight": 0.0, "taste_decay": 0.9}
    # Any other setting (here the refinement's) changes the lists with the step off too.
    result = tune(lambda p: {"HR@10": 0.1, "NDCG@10": 0.0}, {"repeat_weight": (0.0, 1.0), "refine_epochs": (0.0, 5.0)})
    assert len(result.rows) == 4


@pytest.fixture
def beauty_like(tmp_path, toy_log):
    path = tmp_path / "Toy.txt"
    lines = [" ".join([toy_log.user_ids[u]] + [toy_log.item_ids[toy_log.items[n]] for n in seq])
             for u, seq in enumerate(user_sequences(toy_log))]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_tune_prints_the_grid_and_the_choice(beauty_like):
    result = CliRunner().invoke(evaluate, ["--dataset", str(beauty_like), "--format", "amazon-seq", "--dim", "8",
                                           "--tune", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    points = len(GRID["repeat_weight"]) * len(GRID["knn_weight"])
    log = load_log(beauty_like, "amazon-seq")
    assert len(report["grid"]) == points and report["validation_events"] == len(log) - log.n_users
    # Leave-one-out masks the whole history: recent items can never be listed, so every repeat
    # weight scores the same for a given neighbour weight, and the repeat step is chosen off.
    for weight in GRID["knn_weight"]:
        assert len({row["HR@10"] for row in report["grid"] if row["knn_weight"] == weight}) == 1
    assert report["chosen"]["repeat_weight"] == 0.0


def test_cli_tune_grid_replaces_or_adds_settings_and_refuses_bad_ones(beauty_like):
    args = ["--dataset", str(beauty_like), "--format", "amazon-seq", "--dim", "8", "--tune", "--json"]
    result = CliRunner().invoke(evaluate, [*args, "--tune-grid", "repeat_weight=0", "--tune-grid", "knn_events=2,5",
                                           "--tune-grid", "knn_weight=0.3"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [(row["knn_events"], row["knn_weight"]) for row in report["grid"]] == [(2.0, 0.3), (5.0, 0.3)]
    # Whole numbers reach the settings as "1", not "1.0": a true/false setting takes them too.
    result = CliRunner().invoke(evaluate, [*args, "--tune-grid", "repeat_weight=0", "--tune-grid", "knn_weight=0.03",
                                           "--tune-grid", "refine_mask=0,1", "--tune-grid", "refine_epochs=1"])
    assert result.exit_code == 0, result.output
    assert [row["refine_mask"] for row in json.loads(result.stdout)["grid"]] == [0.0, 1.0]
    for bad in ("knn_weight=-1", "nonsense=1", "knn_weight=a,b", "knn_weight", "refine_mask=2"):
        result = CliRunner().invoke(evaluate, [*args, "--tune-grid", bad])
        assert result.exit_code == 2 and "--tune-grid" in result.output


def rebuyers() -> EventLog:
    """60 shoppers who each buy one favourite item again and again, with one other item between."""
    users, items = [], []
    for u in range(60):
        favourite = f"fav-{u}"
        for n in range(8):
            users += [f"u{u}", f"u{u}"]
            items += [favourite, f"other-{(u + n) % 7}"]
    order = np.argsort([n % 16 for n in range(len(users))], kind="stable")  # interleave the shoppers in time
    return EventLog.from_arrays([users[i] for i in order], [items[i] for i in order], ["purchase"] * len(users),
                                np.arange(len(users), dtype=float))


def test_repeat_purchases_are_predicted_only_when_the_protocol_allows_them():
    log = rebuyers()
    def hr(exclude, weight):
        model = ServedModel(TrainParams(dim=8), InterestParams(repeat_weight=weight))
        outcome = run_prequential(model, log, pretrain=len(log) // 4, retrain_every=10_000, exclude_purchased=exclude)
        return outcome.metrics["HR@10"]
    excluded, allowed_off, allowed_on = hr(True, 1.0), hr(False, 0.0), hr(False, 1.0)
    assert excluded < 0.5  # half the events re-buy the favourite, excluded once bought: never a hit
    # Allowed, the repeat step lists the favourite (bought every second event): nearly all of
    # those events become hits, far more than the inner product alone finds.
    assert allowed_on > excluded + 0.45 and allowed_on > allowed_off + 0.3
