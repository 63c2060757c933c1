"""A model swap under a steady load: no event lost, no list mixing versions, no hiccup.

Two real workers (one consumer group, separate data and models folders, both bootstrapped
from the models topic) serve v000001 while events arrive at a steady 2,000/s (the Faust agent: 1,000/s) for 30 s. A few
seconds in, a new version (v000002, trained in another process on a different cut of the
shop's history) is published and promoted on the models topic; both workers adopt it while
the events keep coming. Then every recommendation is read back and every user's stored state
audited (docs/lifecycle.md has the numbers of a run):

* nothing lost: every user's last event is answered, each stored state counts exactly the
  user's published events;
* no mixed lists: every list names its version, its items belong to that version (or are
  items the stream brought, which every version may serve); after both workers adopted,
  every list names v000002; none named it before it was published; a user never goes back;
* vectors rebuilt: states in v000002 equal the pure function of the user's events with
  v000002's context vectors;
* latency: p99 event-to-recommendation before, during (publish → last adoption + 2 s) and
  after the swap, printed and recorded (``helpers.record``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import datetime

import numpy as np
import pytest

from indexing.artifact import load_artifact
from streamrec.benchmarks.load import produce
from streamrec.contract import encode_event
from streamrec.core.interest import InterestParams, fold_events
from streamrec.kafka.admin import ensure_topics
from streams.tables import read_user_states

from .helpers import record, trained_shop, wait_for_recommendations
from .test_model_lifecycle import publish_and_promote, start_workers, wait_for_log

pytestmark = [pytest.mark.integration, pytest.mark.lifecycle]

RATE = 2000.0
SECONDS = 30.0
PUBLISH_AT_S = 6.0
ITEMS, USERS, SEED, HISTORY = 500, 6000, 31, 20_000
SWAP_LOG = "swapping model v000001 -> v000002"
#: Loose p99 bounds (s) for a shared machine. The Faust agent's p99 was 2-13 s at 1,000/s here,
#: before the swap as much as after it (docs/lifecycle.md), so its bound is wider. The swap
#: itself may add at most SWAP_COST_S to the p99 of the phases around it.
P99_BOUND_S = {"batch": 5.0, "faust": 20.0}
SWAP_COST_S = 3.0
_STAMP = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")


def logged_at(log: str, text: str) -> float:
    """Wall time (Unix seconds) of the first log line holding ``text``."""
    for line in log.splitlines():
        if text in line:
            found = _STAMP.search(line)
            assert found, f"no time stamp in {line!r}"
            return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    raise AssertionError(f"{text!r} not logged")


def p99(values: list[float]) -> float:
    return float(np.percentile(values, 99)) if values else float("nan")


#: The Faust agent does not keep up with 2,000 events/s on this 2-core machine even without a
#: swap (its p99 climbs from the start: docs/lifecycle.md), so it is driven at 1,000/s,
#: where a latency bound measures the swap rather than a backlog.
@pytest.mark.parametrize(("engine", "rate"), [("batch", RATE), ("faust", RATE / 2)])
def test_a_swap_under_load_loses_nothing_and_mixes_nothing(engine, rate, bootstrap, topics, start_worker, tmp_path):
    models_topic = f"models-{topics.app_id}"
    shop = trained_shop(tmp_path / "trainer", items=ITEMS, users=USERS, history=HISTORY,
                        live=int(rate * SECONDS * 1.1), seed=SEED)
    events = shop.live[: int(rate * SECONDS)]
    keys = [e.user_id.encode() for e in events]
    values = [encode_event(e) for e in events]
    ensure_topics(bootstrap, {topics.events: 2})
    publish_and_promote(bootstrap, models_topic, shop.models_dir / "v000001")
    workers = start_workers(start_worker, tmp_path, models_topic, engine, 2)
    wait_for_log(workers, "serving model v000001 from topic")

    produced: dict[str, np.ndarray] = {}
    sender = threading.Thread(
        target=lambda: produced.setdefault("at", produce(bootstrap, topics.events, keys, values, rate=rate)))
    load_started = time.time()
    sender.start()
    # The new version: trained in its own process (as the trainer would) on a longer cut of the
    # same shop's history, while the events flow; then published and promoted. Without the factor
    # step's choice (it trains the model twice): the swap must land while the load runs.
    trained = subprocess.run(
        [sys.executable, "-m", "streamrec.cli", "train", "--synthetic", "--items", str(ITEMS), "--users", str(USERS),
         "--events", str(2 * HISTORY), "--seed", str(SEED), "--dim", "32", "--models-dir", str(shop.models_dir)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "STREAMREC_RULES__FACTOR_WEIGHT": "0"})
    assert trained.returncode == 0, trained.stderr
    time.sleep(max(0.0, load_started + PUBLISH_AT_S - time.time()))
    published_at = time.time()
    publish_and_promote(bootstrap, models_topic, shop.models_dir / "v000002")
    wait_for_log(workers, SWAP_LOG, timeout=60)
    sender.join(SECONDS + 60)
    assert not sender.is_alive() and "at" in produced
    produced_at = produced["at"]
    adopted = [logged_at(w.log_file.read_text(errors="replace"), SWAP_LOG) for w in workers]
    all_adopted = max(adopted)
    assert all_adopted < produced_at[-1] - 5, "the swap must happen while the events still flow"

    recs = [rec for rec, _ in wait_for_recommendations(bootstrap, topics.recommendations, events, timeout=180)]
    for worker in workers:
        assert worker.alive(), worker.log_tail()
        assert worker.stop() == 0, worker.log_tail()
    # Each worker's local copy of every user it ever held. A worker that lost a partition in a
    # rebalance keeps a stale copy; the copies with the most events are the user's final state.
    # Two copies can tie (the new owner replayed the last event the old one had applied but not
    # committed, possibly under the other model version): each is a state the user really had
    # after all their events, so a list is checked against the tied copy of its own version.
    finals: dict[str, list] = defaultdict(list)
    for worker in workers:
        for user_id, state in read_user_states(worker.config.data_dir).items():
            if not finals[user_id] or state.n_events > finals[user_id][0].n_events:
                finals[user_id] = [state]
            elif state.n_events == finals[user_id][0].n_events:
                finals[user_id].append(state)
    states = {user_id: copies[0] for user_id, copies in finals.items()}
    tied = sum(len({c.model_version for c in copies}) > 1 for copies in finals.values())

    v1, v2 = (load_artifact(shop.models_dir / v, use_gpu=False) for v in ("v000001", "v000002"))
    models = {"v000001": v1, "v000002": v2}
    streamed_items = {e.item_id for e in events}
    position = {e.event_id: n for n, e in enumerate(events)}
    per_user: dict[str, list] = defaultdict(list)
    for event in events:
        per_user[event.user_id].append(event)

    # -- nothing lost ---------------------------------------------------------------------
    answered = {rec.event_id for rec in recs}
    unanswered = sum(1 for history in per_user.values() if history[-1].event_id not in answered)
    miscounted = sum(1 for user_id, history in per_user.items()
                     if user_id not in states or states[user_id].n_events != len(history))

    # -- no mixed lists -------------------------------------------------------------------
    foreign = unversioned = v2_early = v1_late = backwards = 0
    newest: dict[str, str] = {}
    for rec in recs:  # one user's lists are in one partition, in order
        model = models.get(rec.model_version)
        if model is None:
            unversioned += 1
            continue
        if any(i.item_id not in model.row_of and i.item_id not in streamed_items for i in rec.items):
            foreign += 1
        sent = produced_at[position[rec.event_id]]
        if rec.model_version == "v000002" and rec.produced_at < published_at:
            v2_early += 1
        if rec.model_version == "v000001" and sent > all_adopted:
            v1_late += 1
        if newest.get(rec.user_id) == "v000002" and rec.model_version == "v000001":
            backwards += 1
        newest[rec.user_id] = rec.model_version
    # Each user's last list was searched with their final stored vector: the scores of its
    # model items must be that vector's inner products with the named version's item vectors
    # (a list searched in one version's space and labelled with the other's would not be).
    targets = {v: m.index.reconstruct_n(0, m.n_items) for v, m in models.items()}
    last_lists = {rec.user_id: rec for rec in recs if rec.event_id == per_user[rec.user_id][-1].event_id}
    scored = off_scores = 0
    for user_id, rec in last_lists.items():
        if user_id not in finals or rec.model_version not in models:
            continue
        state = next((c for c in finals[user_id] if c.model_version == rec.model_version), None)
        if state is None:
            off_scores += 1
            continue
        row_of = models[rec.model_version].row_of
        repeat = models[rec.model_version].extras["repeat"]
        params = InterestParams()
        for item in rec.items:
            if item.source == "model" and item.item_id in row_of:
                row = row_of[item.item_id]
                # the repeat step's bonus for items of the user's last 32 events (age 0 = newest)
                by_age = models[rec.model_version].meta["training"]["repeat_by_age"]
                bonus = sum(params.repeat_weight * float(repeat[row]) * by_age[age]
                            for age, event in enumerate(reversed(state.recent[-32:])) if event.item_id == item.item_id)
                # the neighbour step's: knn_weight * knn_decay ** age * similarity to the items of the
                # user's last knn_events events; pop_weight * count / the largest for the pop_items most popular
                extras = models[rec.model_version].extras
                for age, event in enumerate(reversed(state.recent[-params.knn_events:])):
                    source = row_of.get(event.item_id)
                    if source is not None:
                        bonus += sum(params.knn_weight * params.knn_decay**age * float(s)
                                     for j, s in zip(extras["neighbours"][source], extras["neighbour_sims"][source])
                                     if j == row)
                counts = extras["popularity"]
                if params.pop_weight > 0 and row in np.argsort(-counts, kind="stable")[: params.pop_items]:
                    bonus += params.pop_weight * float(counts[row] / counts.max())
                expected = float(targets[rec.model_version][row] @ state.vector) + bonus
                scored += 1
                off_scores += not np.isclose(item.score, expected, rtol=1e-4, atol=1e-4)
    mixed = foreign + unversioned + v2_early + v1_late + backwards + off_scores

    # -- vectors rebuilt in the new space -------------------------------------------------
    params = InterestParams()
    rebuilt = mismatched = 0
    for user_id, state in states.items():
        history = per_user[user_id]
        model = models[state.model_version]
        if len(history) > params.history_size or any(e.item_id not in model.row_of for e in history):
            continue  # the rebuild starts from the bounded recent events; new items' vectors move
        expected, _ = fold_events([(model.row_of[e.item_id], e.type, e.ts) for e in history], model.context, params)
        if not np.allclose(state.vector, expected, rtol=1e-5, atol=1e-5):
            mismatched += 1
        elif state.model_version == "v000002":
            rebuilt += 1

    # -- latency ----------------------------------------------------------------------------
    during_until = all_adopted + 2.0
    phases: dict[str, list[float]] = {"before": [], "during": [], "after": []}
    windows: dict[int, list[float]] = defaultdict(list)  # p99 per 5 s of sending, for the report
    for rec in recs:
        sent = produced_at[position[rec.event_id]]
        phase = "before" if sent < published_at else "during" if sent <= during_until else "after"
        phases[phase].append(rec.produced_at - sent)
        windows[int((sent - produced_at[0]) // 5)].append(rec.produced_at - sent)
    row = {
        "engine": engine, "events": len(events), "rate": rate, "users": len(per_user),
        "p99_before_ms": round(p99(phases["before"]) * 1000, 1), "p99_during_ms": round(p99(phases["during"]) * 1000, 1),
        "p99_after_ms": round(p99(phases["after"]) * 1000, 1),
        "max_during_ms": round(float(max(phases["during"], default=float("nan"))) * 1000, 1),
        "adoption_delay_s": [round(t - published_at, 2) for t in adopted],
        "events_lost": unanswered + miscounted, "unanswered": unanswered, "miscounted": miscounted,
        "mixed_lists": mixed, "foreign_items": foreign, "v1_after_adoption": v1_late, "v2_before_publish": v2_early,
        "backwards": backwards, "scores_checked": scored, "off_scores": off_scores, "tied_copies": tied, "lists": len(recs), "lists_v2": sum(r.model_version == "v000002" for r in recs),
        "rebuilt_checked": rebuilt, "vector_mismatches": mismatched,
    }
    print(f"\nswap under load ({engine}): {row}")
    print(f"published at {published_at - produced_at[0]:.1f} s; p99 (ms) per 5 s of sending: "
          + ", ".join(f"{5 * w}-{5 * w + 5} s: {p99(windows[w]) * 1000:.0f}" for w in sorted(windows)))
    record(f"model swap under {rate:.0f} events/s ({engine} engine)", **row)

    assert unanswered == 0 and miscounted == 0, row
    assert unversioned == 0 and foreign == 0 and v2_early == 0 and v1_late == 0 and backwards == 0, row
    assert off_scores == 0 and scored > 1000, row
    assert mismatched == 0 and rebuilt >= 20, row
    assert all(phases.values()), row
    bound_ms = P99_BOUND_S[engine] * 1000
    assert row["p99_during_ms"] < bound_ms and row["p99_before_ms"] < bound_ms and row["p99_after_ms"] < bound_ms, row
    assert row["p99_during_ms"] < max(row["p99_before_ms"], row["p99_after_ms"]) + SWAP_COST_S * 1000, row
    assert all(0 < t - published_at < 30 for t in adopted), row
