"""The pipeline reproduces the harness: leave-one-out through a real broker and worker.

A synthetic shop always runs; a 1,500-user sample of Amazon Beauty runs where the shared
datasets are present. Both check, user by user, that the list the worker published after
the user's history holds the held-out item exactly when the in-process harness says so.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from indexing.train import TrainParams
from streamrec.core.interest import InterestParams
from producers.catalog import catalog_for
from producers.synthetic import SyntheticShop
from streamrec.core.items import catalog_features
from streamrec.evaluation.data import EventLog, leave_one_out, load_log, sample_users
from streamrec.evaluation.protocols import run_leave_one_out
from streamrec.evaluation.served import ServedModel
from streamrec.evaluation.through_kafka import run_through_kafka

pytestmark = pytest.mark.integration

BEAUTY_USERS = 1_500


def check_agreement(outcome, tolerance: float = 0.002) -> None:
    assert outcome.users > 0
    kafka, local = outcome.metrics, outcome.in_process_metrics
    assert abs(kafka["HR@10"] - local["HR@10"]) <= tolerance, (kafka, local)
    assert abs(kafka["NDCG@10"] - local["NDCG@10"]) <= tolerance, (kafka, local)
    # Stronger: the same users are hits, at the same positions but for exact score ties.
    assert outcome.hit_disagreements <= max(1, outcome.users // 500), outcome
    assert outcome.same_lists >= 0.98 * outcome.users, outcome


@pytest.mark.parametrize(("taste_decay", "factor_weight"), [(0.0, 0.0), (0.9, 0.0), (0.0, 2.0)],
                         ids=["default", "long-term-taste", "factor-step"])
def test_synthetic_shop_through_kafka_matches_in_process(bootstrap, tmp_path, taste_decay, factor_weight):
    shop = SyntheticShop(items=600, users=250, seed=5)
    events = list(shop.events(9_000, start_ts=1_700_000_000.0))
    # with the shop's catalog: the version the worker serves was trained with its categories and brands
    log = replace(EventLog.from_events(events),
                  item_features=catalog_features({item.item_id: item for item in shop.catalog()}))
    outcome = run_through_kafka(log, bootstrap=bootstrap, train_params=replace(TrainParams(), dim=32, factors=16),
                                partitions=2, workdir=tmp_path, taste_decay=taste_decay, factor_weight=factor_weight)
    check_agreement(outcome)
    if taste_decay or factor_weight:  # the worker ran with the taste or the factor step: its hits are not those without
        plain = run_leave_one_out(ServedModel(replace(TrainParams(), dim=32)), log, split=leave_one_out(log))
        assert (np.minimum(plain.positions, 10) != outcome.positions).sum() >= 10
    else:  # the worker ran with the default neighbour step: its hits are not those without it
        plain = run_leave_one_out(ServedModel(replace(TrainParams(), dim=32), InterestParams(knn_weight=0.0, pop_weight=0.0)),
                                  log, split=leave_one_out(log))
        assert (np.minimum(plain.positions, 10) != outcome.positions).sum() >= 10
    assert outcome.metrics["HR@10"] > 0.05  # the shop is learnable: far above random (10 / 600)


@pytest.mark.datasets
def test_beauty_sample_through_kafka_equals_the_harness(bootstrap, tmp_path, shared_dataset):
    path = shared_dataset("amazon-beauty", "Beauty.txt")
    log = sample_users(load_log(path, "amazon-seq"), BEAUTY_USERS, seed=0)
    log = replace(log, item_features=catalog_features(catalog_for(path, "amazon-seq")))  # its attributes, as evaluate
    outcome = run_through_kafka(log, bootstrap=bootstrap, partitions=2, workdir=tmp_path)
    check_agreement(outcome)
    # The in-process side of the comparison is the harness itself: leave-one-out with the
    # default served model (Beauty's events are all purchases, so the worker's exclusions
    # are the masked history).
    harness = run_leave_one_out(ServedModel(), log, split=leave_one_out(log))
    np.testing.assert_array_equal(np.minimum(harness.positions, 10), outcome.in_process_positions)
    assert abs(harness.metrics["HR@10"] - outcome.metrics["HR@10"]) <= 0.002
