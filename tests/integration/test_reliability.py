"""Faults against the real broker: crashes, re-sent events, outages, failover, hostile input,
refused deliveries and broken model versions.

Each test audits the end state twice: every user's vector in the worker's RocksDB table must
equal the offline computation over that user's events (``audit_states``), and every user's
stored ``n_events`` and recent event ids must be those of the *published log*, the events the
test itself sent less the copies it knows it re-sent (``audit_histories``: this one does not
trust the worker's own counters). No triggering event may have two different lists. Where a
worker restarts or takes over, the test also asserts that recovery happened: committed
offsets existed (so their effect had to come back from the changelog), lists were published
again for replayed events skipped as duplicates, and (batch engine) the log's own counts of
changelog records applied and duplicates skipped are above zero.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, ConsumerGroupState, TopicPartition
from confluent_kafka.admin import AdminClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from producers.publisher import DeliveryError, EventPublisher
from streamrec.benchmarks.load import produce
from streamrec.config import LocalKafkaSettings
from streamrec.contract import decode_dead_letter, decode_recommendation, encode_event
from streamrec.harness.topics import read_topic
from streamrec.harness.worker import WorkerConfig, WorkerProcess
from streamrec.kafka import KafkaLauncher
from streamrec.kafka.admin import ensure_topics
from streams.tables import read_user_states

from .conftest import free_port
from .helpers import (
    audit_histories,
    audit_states,
    changelog_records_applied,
    committed_offsets,
    conflicting_lists,
    logged_duplicates,
    publish,
    record,
    republished,
    trained_shop,
    wait_for_recommendations,
)

pytestmark = [pytest.mark.integration, pytest.mark.reliability]


def commits_every(seconds: int) -> dict[str, str]:
    """A worker's environment that makes it commit its offsets every ``seconds``."""
    return {"STREAMREC_WORKER__COMMIT_INTERVAL_S": str(seconds)}


#: The batch engine's commit interval for workers that get SIGKILL (default 1 s).
SLOW_COMMITS = commits_every(3)


def latest_per_user(recs):
    latest = {}
    for rec, _ in recs:
        latest[rec.user_id] = rec
    return latest


def kill_between_commits(worker, bootstrap: str, topics, partitions: int, *, after_s: float = 1.0) -> dict[int, int]:  # noqa: ANN001
    """SIGKILL ``worker`` ``after_s`` after it was seen to commit (less than its commit
    interval), so that it dies with batches applied and sent but not committed. Returns the
    offsets committed at the kill."""
    before = committed_offsets(bootstrap, topics.app_id, topics.events, partitions)
    deadline = time.monotonic() + 60
    while committed_offsets(bootstrap, topics.app_id, topics.events, partitions) == before:
        assert time.monotonic() < deadline, "the worker never committed"
        time.sleep(0.05)
    time.sleep(after_s)
    worker.kill()
    return committed_offsets(bootstrap, topics.app_id, topics.events, partitions)


@pytest.mark.parametrize("engine", ["batch", "faust"])
def test_crash_mid_stream_loses_nothing_and_doubles_nothing(bootstrap, topics, start_worker, tmp_path, engine):
    # The Faust agent is a few times slower: it gets fewer events for about the same time.
    count = 100_000 if engine == "batch" else 30_000
    shop = trained_shop(tmp_path / "models", items=3000, users=5000, history=40_000, live=count + 1_000, seed=5)
    events = shop.live[:count]
    publish(bootstrap, topics.events, events)
    # Small batches, so that the crash comes with work in every stage (large ones would
    # coalesce the 5,000 users' events into a few thousand lists, done in seconds). The batch
    # engine commits every 3 s rather than every second.
    first = start_worker(shop.models_dir, partitions=2, engine=engine, batch_size=1000, extra_env=SLOW_COMMITS)
    # Let it get part-way, then SIGKILL it 1 s after a commit: what it applied since is replayed.
    read_topic(bootstrap, topics.recommendations, done=lambda m: len(m) >= 4_000, timeout=300)
    # What it had committed is not read again by the second worker, which starts with an EMPTY
    # data folder: the effect of those events can only come back from the changelog.
    committed = kill_between_commits(first, bootstrap, topics, 2)
    restarted_at = time.time()
    second = start_worker(shop.models_dir, partitions=2, engine=engine, name="second")
    recs = wait_for_recommendations(bootstrap, topics.recommendations, events, timeout=600)
    new = [rec.produced_at for rec, _ in recs if rec.produced_at > restarted_at]
    assert new, "the first worker had answered everything before it was killed"
    first_new = min(new)
    assert second.stop() == 0

    states = read_user_states(second.config.data_dir)
    audit = audit_states(states, events, shop.model)
    history = audit_histories(states, events)
    last = {e.user_id: e.event_id for e in events}
    stale = sum(1 for user_id, rec in latest_per_user(recs).items() if rec.event_id != last[user_id])
    conflicts = conflicting_lists([rec for rec, _ in recs])
    again = republished([rec for rec, _ in recs])
    restored = changelog_records_applied(second.log_file) if engine == "batch" else None
    skipped = logged_duplicates(second.log_file) if engine == "batch" else None
    record(f"worker SIGKILL mid-stream, restarted with an empty data folder ({engine} engine)", events=len(events),
           lost=audit.lost, doubled=audit.doubled, mismatched=audit.mismatched, wrong_history=history.wrong_recent,
           wrong_count=history.wrong_count, conflicting_lists=conflicts, recovery_s=round(first_new - restarted_at, 2),
           committed_before_restart=sum(committed.values()), lists_republished=again,
           changelog_applied=restored, duplicates_logged=skipped)
    assert (audit.lost, audit.doubled, audit.mismatched) == (0, 0, 0)
    assert (history.wrong_count, history.wrong_recent) == (0, 0), "stored events differ from the published log"
    assert stale == 0, "every user's latest recommendation must reflect their last event"
    assert conflicts == 0
    # Recovery really happened: committed events restored from the changelog, and
    # uncommitted ones replayed and recognised as applied.
    assert sum(committed.values()) > 0, "the first worker had committed nothing: no restore was needed"
    assert again > 0, "no list was published twice: nothing was replayed and skipped"
    if engine == "batch":
        assert restored > 0 and skipped > 0, second.log_tail()


def test_resent_events_are_applied_once(bootstrap, topics, start_worker, tmp_path):
    shop = trained_shop(tmp_path / "models", items=800, users=400, history=15_000, live=6_000, seed=8)
    events = shop.live
    rng = random.Random(3)
    ensure_topics(bootstrap, {topics.events: 2})
    worker = start_worker(shop.models_dir, partitions=2)
    resent = 0
    with EventPublisher(bootstrap, topics.events) as publisher:
        for n, event in enumerate(events):
            publisher.publish(event)
            if rng.random() < 0.1:  # a producer retry: the same event again, right away
                publisher.publish(event)
                resent += 1
            if n >= 10 and rng.random() < 0.02:  # or a little later
                publisher.publish(events[n - rng.randint(1, 10)])
                resent += 1
    recs = wait_for_recommendations(bootstrap, topics.recommendations, events)
    assert worker.stop() == 0
    states = read_user_states(worker.config.data_dir)
    audit = audit_states(states, events, shop.model)
    history = audit_histories(states, events)  # the log without the copies re-sent
    conflicts = conflicting_lists([rec for rec, _ in recs])
    skipped = logged_duplicates(worker.log_file)
    record("same events re-sent (producer retries; batch engine)", events=len(events) + resent, lost=audit.lost,
           doubled=audit.doubled, mismatched=audit.mismatched, wrong_history=history.wrong_recent,
           wrong_count=history.wrong_count, conflicting_lists=conflicts, recovery_s=None, resent=resent,
           duplicates_logged=skipped)
    assert resent > 300
    assert (audit.lost, audit.doubled, audit.mismatched, conflicts) == (0, 0, 0, 0)
    assert (history.wrong_count, history.wrong_recent) == (0, 0), "stored events differ from the published log"
    assert skipped == resent, "the worker must count each re-sent copy as a duplicate, and nothing else"


#: How long the broker stays down in the outage tests.
OUTAGE_S = 12


@pytest.fixture(scope="module")
def outage_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaLauncher]:
    """A broker of the outage tests' own, so that stopping it hits nobody else."""
    launcher = KafkaLauncher(
        LocalKafkaSettings(home=tmp_path_factory.mktemp("outage-kafka"), port=free_port(), controller_port=free_port(),
                           heap="512m"),
        lib_dir=LocalKafkaSettings().home / "lib",
    )
    launcher.up(timeout=120)
    yield launcher
    launcher.down()


def _stop_broker(launcher: KafkaLauncher, how: str) -> None:
    if how == "SIGKILL":  # no clean shutdown: the broker recovers its log at the next start
        pid = launcher.status().pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while launcher.status().running and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not launcher.status().running
    else:
        launcher.down()


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("engine", ["batch", "faust"])
def test_broker_outage_while_the_worker_is_busy(outage_broker, tmp_path, engine, how):
    """Stop the broker (cleanly, or with SIGKILL) while the worker works through a backlog, for
    OUTAGE_S seconds: producers buffer, the worker reconnects, nothing is lost or doubled."""
    launcher = outage_broker
    launcher.up(timeout=120)
    run = uuid.uuid4().hex[:8]
    names = {"events": f"events-{run}", "recommendations": f"recommendations-{run}", "dlq": f"events-dlq-{run}"}
    worker = None
    try:
        shop = trained_shop(tmp_path / "models", items=800, users=600, history=15_000, live=9_000, seed=9)
        events = shop.live
        bootstrap = launcher.bootstrap
        ensure_topics(bootstrap, {name: 2 for name in names.values()})
        config = WorkerConfig(bootstrap, shop.models_dir, tmp_path / "worker-data", f"streamrec-outage-{run}",
                              events_topic=names["events"], recommendations_topic=names["recommendations"],
                              dlq_topic=names["dlq"], partitions=2, batch_size=50, engine=engine)
        worker = WorkerProcess(config, log_file=tmp_path / "worker.log").start()
        worker.wait_ready()

        backlog = 2 * len(events) // 3
        publish(bootstrap, names["events"], events[:backlog])
        # The broker goes while the worker is part-way through the backlog.
        busy = read_topic(bootstrap, names["recommendations"], done=lambda m: len(m) >= 300, timeout=120)
        # While the broker is down, a producer keeps publishing into its buffer ...
        publisher = EventPublisher(bootstrap, names["events"], delivery_timeout_ms=180_000)
        # ... and one with a short delivery timeout must fail loudly, not silently.
        impatient = EventPublisher(bootstrap, names["events"], delivery_timeout_ms=5_000)
        _stop_broker(launcher, how)
        stopped_at = time.monotonic()
        impatient.publish(events[backlog])
        with pytest.raises(DeliveryError):
            impatient.flush(timeout=15)
        for event in events[backlog:]:
            publisher.publish(event)
            publisher._producer.poll(0)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped_at)))
        launcher.up(timeout=120)
        restarted_at = time.time()
        publisher.flush(timeout=120)
        publisher.close()
        assert worker.alive(), f"the worker died during the outage:\n{worker.log_tail()}"
        recs = wait_for_recommendations(bootstrap, names["recommendations"], events, timeout=300)
        answered_before = {decode_recommendation(v).event_id for _, v in busy}
        new = [rec.produced_at for rec, _ in recs if rec.produced_at > restarted_at]
        assert worker.stop() == 0
        # events[backlog] was sent by the impatient producer too, and may or may not have
        # landed: the published log is every event once (a second copy is a known re-send).
        states = read_user_states(config.data_dir)
        audit = audit_states(states, events, shop.model)
        history = audit_histories(states, events)
        conflicts = conflicting_lists([rec for rec, _ in recs])
        unanswered_at_stop = len(set(e.event_id for e in events[:backlog]) - answered_before)
        record(f"broker stopped ({how}) for {OUTAGE_S} s while the worker is busy ({engine} engine)",
               events=len(events), lost=audit.lost, doubled=audit.doubled, mismatched=audit.mismatched,
               wrong_history=history.wrong_recent, wrong_count=history.wrong_count, conflicting_lists=conflicts,
               recovery_s=round(min(new) - restarted_at, 2) if new else None)
        assert unanswered_at_stop > 0, "the worker had finished its backlog before the broker went"
        assert (audit.lost, audit.doubled, audit.mismatched, conflicts) == (0, 0, 0, 0)
        assert (history.wrong_count, history.wrong_recent) == (0, 0), "stored events differ from the published log"
        assert new, "nothing was recommended after the broker came back"
    finally:
        if worker is not None:
            worker.stop()
        launcher.up(timeout=120)  # the next test's broker


def group_owner_count(bootstrap: str, group: str) -> tuple[int, int]:
    """(members, partitions assigned) of a stable consumer group, else (0, 0)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    if description.state != ConsumerGroupState.STABLE:
        return 0, 0
    events_partitions = [tp for m in description.members for tp in m.assignment.topic_partitions]
    return len(description.members), len(events_partitions)


@pytest.mark.parametrize("engine", ["batch", "faust"])
def test_two_workers_share_partitions_and_one_takes_over(bootstrap, topics, start_worker, tmp_path, engine):
    shop = trained_shop(tmp_path / "models", items=1000, users=1500, history=20_000, live=30_000, seed=12)
    events = shop.live
    third = len(events) // 3
    ensure_topics(bootstrap, {topics.events: 4})
    # Small batches: the kill below finds a batch in flight (prepared, searched or awaiting acks).
    # a commits every 10 s (b every second): killed at a random moment of the flow, it then holds
    # seconds of applied, uncommitted events for b to replay. With 3 s the kill once (of about ten
    # runs) fell just after a's commit, and the faust run had nothing to replay.
    a = start_worker(shop.models_dir, partitions=4, name="a", engine=engine, batch_size=200,
                     extra_env=commits_every(10))
    b = start_worker(shop.models_dir, partitions=4, name="b", engine=engine, batch_size=200)
    deadline = time.monotonic() + 60
    while group_owner_count(bootstrap, topics.app_id)[0] != 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert group_owner_count(bootstrap, topics.app_id)[0] == 2, "both workers must be in the group"
    publish(bootstrap, topics.events, events[:third], partitions=4)
    answered = len(wait_for_recommendations(bootstrap, topics.recommendations, events[:third]))
    # Every partition (so a's too) commits the first third: b will not read those events again,
    # and has its own data folder, so their effect on a's users can only come from the changelog.
    deadline = time.monotonic() + 30
    while sum(committed_offsets(bootstrap, topics.app_id, topics.events, 4).values()) < third:
        assert time.monotonic() < deadline, "the first third's offsets were never committed"
        time.sleep(0.2)

    publisher_done = threading.Event()

    def keep_publishing() -> None:
        # At a steady rate: events still flow to both workers when a is killed, so a always has
        # work applied since its last commit (a fast engine could otherwise have caught up and
        # committed everything, leaving nothing to replay).
        rest = events[third:]
        produce(bootstrap, topics.events, [e.user_id.encode() for e in rest], [encode_event(e) for e in rest],
                rate=4_000)
        publisher_done.set()

    thread = threading.Thread(target=keep_publishing)
    thread.start()
    # Kill a while the rest is flowing through both workers.
    read_topic(bootstrap, topics.recommendations, done=lambda m: len(m) >= answered + 1_500, timeout=120)
    a.kill()
    killed = time.monotonic()
    committed = committed_offsets(bootstrap, topics.app_id, topics.events, 4)
    takeover_s = None
    while time.monotonic() - killed < 120:
        members, partitions = group_owner_count(bootstrap, topics.app_id)
        if members == 1 and partitions >= 4:
            takeover_s = time.monotonic() - killed
            break
        time.sleep(0.2)
    thread.join()
    assert takeover_s is not None, f"the survivor never took over:\n{b.log_tail()}"
    recs = wait_for_recommendations(bootstrap, topics.recommendations, events, timeout=300)
    assert b.stop() == 0
    states = read_user_states(b.config.data_dir)
    audit = audit_states(states, events, shop.model)
    history = audit_histories(states, events)
    conflicts = conflicting_lists([rec for rec, _ in recs])
    again = republished([rec for rec, _ in recs])
    restored = changelog_records_applied(b.log_file) if engine == "batch" else None
    skipped = logged_duplicates(b.log_file) if engine == "batch" else None
    record(f"one of two workers SIGKILLed mid-stream (failover, {engine} engine)", events=len(events), lost=audit.lost,
           doubled=audit.doubled, mismatched=audit.mismatched, wrong_history=history.wrong_recent,
           wrong_count=history.wrong_count, conflicting_lists=conflicts, recovery_s=round(takeover_s, 2),
           committed_before_takeover=sum(committed.values()), lists_republished=again, changelog_applied=restored,
           duplicates_logged=skipped)
    assert (audit.lost, audit.doubled, audit.mismatched, conflicts) == (0, 0, 0, 0)
    assert (history.wrong_count, history.wrong_recent) == (0, 0), "stored events differ from the published log"
    assert len(committed) == 4 and min(committed.values()) > 0, f"not every partition had committed: {committed}"
    assert again > 0, "no list was published twice: nothing of a's was replayed and skipped"
    if engine == "batch":
        assert restored > 0 and skipped > 0, b.log_tail()


def test_engines_share_one_table_and_changelog(bootstrap, topics, start_worker, tmp_path):
    """The Faust agent serves the first half; a batch engine with an empty data dir restores
    the table from Faust's changelog and serves the rest; a Faust agent on the batch engine's
    data dir then restores what the batch engine wrote. No user may lose or double an event."""
    shop = trained_shop(tmp_path / "models", items=1000, users=1500, history=20_000, live=24_000, seed=21)
    events = shop.live
    thirds = [events[: len(events) // 3], events[len(events) // 3 : 2 * len(events) // 3], events[2 * len(events) // 3 :]]

    faust_worker = start_worker(shop.models_dir, partitions=2, name="faust", engine="faust")
    publish(bootstrap, topics.events, thirds[0])
    wait_for_recommendations(bootstrap, topics.recommendations, thirds[0])
    assert faust_worker.stop() == 0

    batch_worker = start_worker(shop.models_dir, partitions=2, name="batch", engine="batch")
    publish(bootstrap, topics.events, thirds[1])
    wait_for_recommendations(bootstrap, topics.recommendations, thirds[0] + thirds[1])
    assert batch_worker.stop() == 0
    audit = audit_states(read_user_states(batch_worker.config.data_dir), thirds[0] + thirds[1], shop.model)
    assert (audit.lost, audit.doubled, audit.mismatched) == (0, 0, 0)

    again = start_worker(shop.models_dir, partitions=2, name="faust", engine="faust")
    publish(bootstrap, topics.events, thirds[2])
    recs = wait_for_recommendations(bootstrap, topics.recommendations, events)
    assert again.stop() == 0
    states = read_user_states(again.config.data_dir)
    audit = audit_states(states, events, shop.model)
    history = audit_histories(states, events)
    conflicts = conflicting_lists([rec for rec, _ in recs])
    restored = changelog_records_applied(batch_worker.log_file)
    record("faust -> batch (empty data dir) -> faust on one table", events=len(events), lost=audit.lost,
           doubled=audit.doubled, mismatched=audit.mismatched, wrong_history=history.wrong_recent,
           wrong_count=history.wrong_count, conflicting_lists=conflicts, changelog_applied=restored)
    assert (audit.lost, audit.doubled, audit.mismatched, conflicts) == (0, 0, 0, 0)
    assert (history.wrong_count, history.wrong_recent) == (0, 0), "stored events differ from the published log"
    assert restored > 0, "the batch engine with an empty data folder restored nothing from Faust's changelog"


def _event(event_id: str, **fields: object) -> bytes:
    """A JSON event of user u-00001 on sku-000001 at a sane time, with ``fields`` changed
    (a value of ``...`` drops the field)."""
    event: dict[str, object] = {"event_id": event_id, "user_id": "u-00001", "item_id": "sku-000001", "type": "view",
                                "ts": 1_700_000_000}
    event.update(fields)
    return orjson.dumps({k: v for k, v in event.items() if v is not ...})


#: Crafted hostile payloads, all keyed b"u-00001", and the dead-letter reason each must get.
#: (An event on an item id the model does not know is not among them: the worker accepts it
#: and makes the item a new one, docs/model.md.)
CRAFTED: list[tuple[bytes | None, str]] = [
    (None, "empty_payload"),
    (b"", "empty_payload"),
    (b"{not json", "malformed_json"),
    (b'{"event_id": "h0", "user_id": "u-00001"', "malformed_json"),
    (b"\xff\xfe\xfd not utf-8", "not_utf8"),
    (b"[1, 2, 3]", "not_an_object"),
    (b'"just a string"', "not_an_object"),
    (b"null", "not_an_object"),
    (b"[" * 3000 + b"]" * 3000, "malformed_json"),  # nested deeper than the JSON parser goes (1024)
    (_event("h1", item_id=5), "wrong_type"),
    (_event("h2", item_id=...), "missing_field"),
    (_event("h2b", ts=...), "missing_field"),
    (_event("h3", x=1), "unknown_field"),
    (_event("h4", type="teleport"), "unknown_type"),
    (_event("h5", price="free"), "wrong_type"),
    (_event("h6", user_id=""), "empty_string"),
    (_event("h6b", item_id="   "), "empty_string"),
    (_event("h7", item_id="x" * 5000), "string_too_long"),
    (_event("h8", ts=-5), "bad_timestamp"),
    (b'{"event_id": "h9", "user_id": "u-00001", "item_id": "sku-000001", "type": "view", "ts": NaN}',
     "malformed_json"),
    (_event("h10", ts=1e300), "future_timestamp"),
    (_event("h11", ts=4_102_444_800), "future_timestamp"),
    (_event("h12", ts="2024-01-01"), "wrong_type"),
    (_event("h12b", ts=True), "wrong_type"),
    (_event("h13", price=-1), "bad_price"),
    (_event("h14", user_id="someone-else"), "key_mismatch"),
    (b"{" + b'"a": 1, ' * 150_000 + b'"b": 2}', "payload_too_large"),  # ~1 MB
]

#: Distinct poison payloads, each sent 2,000 times (keyed b"u-00002"), and their reasons.
POISONS: list[tuple[bytes, str]] = [
    (_event("poison-1", user_id="u-00002", ts="soon"), "wrong_type"),
    (_event("poison-2", user_id="u-00002", ts=-1), "bad_timestamp"),
    (_event("poison-3", user_id="u-00002", type="teleport"), "unknown_type"),
    (_event("poison-4", user_id="u-00003"), "key_mismatch"),
    (_event("poison-5", user_id="u-00002")[:-7], "malformed_json"),
]
POISON_COPIES = 2_000

#: The reasons docs/schemas/dead-letter.schema.json lists for events.
REASONS = {"malformed_json", "not_utf8", "missing_field", "wrong_type", "unknown_type", "unknown_field",
           "empty_string", "string_too_long", "not_finite", "bad_timestamp", "future_timestamp", "bad_price",
           "payload_too_large", "empty_payload", "not_an_object", "key_mismatch", "non_finite_vector"}

garbage = st.one_of(
    st.binary(max_size=300),
    st.dictionaries(
        st.sampled_from(["event_id", "user_id", "item_id", "type", "ts", "price", "junk"]),
        st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=20), st.booleans(),
                  st.sampled_from(["view", "purchase", "sku-000001", "u-00001"])),
        max_size=7,
    ).map(orjson.dumps),
)


def generate_garbage(count: int) -> list[bytes]:
    """``count`` hostile payloads drawn by hypothesis (derandomised: the same every run)."""
    drawn: list[bytes] = []

    @settings(max_examples=count, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(garbage)
    def draw(value: bytes) -> None:
        drawn.append(value)

    draw()
    return drawn[:count]


def topic_size(bootstrap: str, topic: str) -> int:
    """Messages in ``topic`` now, from the partitions' watermarks (no transactions, no compaction)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"size-{topic}", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        marks = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions]
    finally:
        consumer.close()
    return sum(high - low for low, high in marks)


def _own_user(payload: bytes) -> bytes | None:
    """The user_id a payload names, if it is a JSON object naming one as a string."""
    try:
        decoded = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    user_id = decoded.get("user_id") if isinstance(decoded, dict) else None
    return user_id.encode() if isinstance(user_id, str) else None


def test_hostile_payloads_have_their_poison_values():
    """The crafted payloads say what the test means them to: checked without the decoder."""
    assert len({payload for payload, _ in POISONS}) == len(POISONS)
    assert [_own_user(p) for p, _ in POISONS[:3]] == [b"u-00002"] * 3 and _own_user(POISONS[3][0]) == b"u-00003"
    assert len(CRAFTED[-1][0]) > 1_000_000
    assert {reason for _, reason in CRAFTED} - {"not_finite"} <= REASONS


@pytest.mark.parametrize("engine", ["batch", "faust"])
def test_hostile_input_is_dead_lettered_and_good_events_survive(bootstrap, topics, start_worker, tmp_path, engine):
    """Every hostile payload is sent, whatever the decoder would make of it, and each must come
    back from the dead-letter topic exactly once (matched by the original bytes it keeps):
    crafted and poison payloads with the reason written above, generated ones with one of the
    documented reasons. The good events around them must all be applied exactly once."""
    generated = generate_garbage(300)
    assert len(generated) >= 200
    shop = trained_shop(tmp_path / "models", items=800, users=400, history=15_000, live=5_000, seed=21)
    events = shop.live
    worker = start_worker(shop.models_dir, partitions=2, engine=engine)
    rng = random.Random(5)
    # Generated payloads are bad by construction: keyed by no user they could name (a valid
    # event must be keyed by its own user_id), half by a key of their own, half by none.
    keyed_generated = [(None if n % 2 else b"g-%05d" % n, payload) for n, payload in enumerate(generated)]
    assert all(key is None or key != _own_user(payload) for key, payload in keyed_generated)
    expected: Counter[tuple[bytes, str]] = Counter()
    bad: list[tuple[bytes | None, bytes | None]] = []
    for payload, reason in CRAFTED:
        bad.append((b"u-00001", payload))
        expected[(payload or b"", reason)] += 1
    for n in range(POISON_COPIES * len(POISONS)):
        payload, reason = POISONS[n % len(POISONS)]
        bad.append((b"u-00002", payload))
        expected[(payload, reason)] += 1
    bad += keyed_generated
    mixed: list[tuple[bytes | None, bytes | None]] = [(e.user_id.encode(), encode_event(e)) for e in events]
    for key, value in bad:
        mixed.insert(rng.randrange(len(mixed) + 1), (key, value))
    ensure_topics(bootstrap, {topics.events: 2})
    with EventPublisher(bootstrap, topics.events, config={"message.max.bytes": 4 * 1024 * 1024}) as publisher:
        for key, value in mixed:
            publisher.publish_raw(key, value)
    recs = wait_for_recommendations(bootstrap, topics.recommendations, events, timeout=300)
    read_topic(bootstrap, topics.dlq, done=lambda m: len(m) >= len(bad), timeout=300)
    time.sleep(2)  # dead letters beyond one per bad payload would have arrived by now
    size = topic_size(bootstrap, topics.dlq)
    letters = read_topic(bootstrap, topics.dlq, done=lambda m: len(m) >= size, timeout=60)
    assert worker.alive(), "the worker must survive hostile input"
    assert worker.stop() == 0
    decoded = [decode_dead_letter(v) for _, v in letters]
    assert len(decoded) == len(bad), "one dead letter per bad payload sent, no more, no fewer"
    assert all(not d["raw_truncated"] and len(d["raw"]) == d["raw_size"] for d in decoded)
    got = Counter((d["raw"], d["reason"]) for d in decoded)
    # Crafted and poison payloads: exactly the reason each was written down with.
    wrong = {(raw[:80], reason): count for (raw, reason), count in (expected - got).items()}
    assert wrong == {}, f"expected dead letters (payload head, reason) that did not come: {wrong}"
    # Generated payloads: every one dead-lettered once, for a documented reason.
    rest = got - expected
    assert Counter(raw for raw, _ in rest.elements()) == Counter(payload for _, payload in keyed_generated)
    assert {reason for _, reason in rest} <= REASONS, {reason for _, reason in rest} - REASONS
    assert all(d["detail"] and d["topic"] == topics.events for d in decoded)
    states = read_user_states(worker.config.data_dir)
    audit = audit_states(states, events, shop.model)
    history = audit_histories(states, events)
    conflicts = conflicting_lists([r for r, _ in recs])
    record(f"hostile input: {len(CRAFTED)} crafted + {len(generated)} generated + {len(POISONS)} poisons "
           f"x {POISON_COPIES:,} ({engine} engine)", events=len(mixed), lost=audit.lost,
           doubled=audit.doubled, mismatched=audit.mismatched, conflicting_lists=conflicts, recovery_s=None,
           dead_lettered=len(decoded), wrong_history=history.wrong_recent, wrong_count=history.wrong_count)
    assert (audit.lost, audit.doubled, audit.mismatched, conflicts) == (0, 0, 0, 0)
    assert (history.wrong_count, history.wrong_recent) == (0, 0), "stored events differ from the published log"


def test_worker_refuses_a_broken_model_with_a_clear_error(bootstrap, topics, tmp_path):
    shop = trained_shop(tmp_path / "models", items=300, users=100, history=3_000, live=0, seed=2)
    index = shop.models_dir / shop.model.version / "index.faiss"
    index.write_bytes(index.read_bytes()[:100])
    config = WorkerConfig(bootstrap, shop.models_dir, tmp_path / "data", topics.app_id,
                          events_topic=topics.events, recommendations_topic=topics.recommendations, dlq_topic=topics.dlq)
    worker = WorkerProcess(config, log_file=tmp_path / "broken.log").start()
    worker.process.wait(60)
    assert worker.process.returncode != 0
    log = Path(worker.log_file).read_text()
    assert "cannot start the worker" in log and str(index) in log and "truncated" in log


def set_topic_config(bootstrap: str, topic: str, name: str, value: str | None) -> None:
    """Set (or, with None, remove) one config override of ``topic`` on the broker."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

    op = AlterConfigOpType.SET if value is not None else AlterConfigOpType.DELETE
    resource = ConfigResource(ResourceType.TOPIC, topic,
                              incremental_configs=[ConfigEntry(name, value or "", incremental_operation=op)])
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def test_a_batch_the_broker_refuses_is_neither_committed_nor_stored(bootstrap, topics, start_worker, tmp_path):
    """Batch engine, settle -> commit order under a real delivery failure: the recommendations
    topic is made to refuse every message (``max.message.bytes`` far below one list), so the
    broker answers MSG_SIZE_TOO_LARGE. The worker must stop without committing the refused
    batch's source offsets or writing its states to RocksDB; restarted on the same data
    folder once the topic is fixed, it replays the batch and every event lands once."""
    shop = trained_shop(tmp_path / "models", items=800, users=400, history=15_000, live=6_000, seed=31)
    events = shop.live
    half = len(events) // 2
    ensure_topics(bootstrap, {topics.events: 2, topics.recommendations: 2})
    worker = start_worker(shop.models_dir, partitions=2, engine="batch")
    publish(bootstrap, topics.events, events[:half])
    wait_for_recommendations(bootstrap, topics.recommendations, events[:half])
    deadline = time.monotonic() + 30  # the idle worker commits within commit_interval_s
    while sum(committed_offsets(bootstrap, topics.app_id, topics.events, 2).values()) < half:
        assert time.monotonic() < deadline, "the first half's offsets were never committed"
        time.sleep(0.5)

    set_topic_config(bootstrap, topics.recommendations, "max.message.bytes", "100")
    publish(bootstrap, topics.events, events[half:])
    worker.process.wait(120)
    log = worker.log_file.read_text(errors="replace")
    assert worker.process.returncode != 0, "the worker must stop when the broker refuses a batch's output"
    assert "DeliveryFailed" in log and "not delivered" in log and "too large" in log.lower(), worker.log_tail()
    # Nothing of the refused batches was committed or stored: the group and the table are
    # exactly as after the first half.
    committed = committed_offsets(bootstrap, topics.app_id, topics.events, 2)
    stored = read_user_states(worker.config.data_dir)
    after_half = audit_states(stored, events[:half], shop.model)
    half_history = audit_histories(stored, events[:half])
    assert sum(committed.values()) == half, f"offsets beyond the delivered batches were committed: {committed}"
    assert (after_half.lost, after_half.doubled, after_half.mismatched) == (0, 0, 0)
    assert (half_history.wrong_count, half_history.wrong_recent) == (0, 0), "a refused batch's states reached RocksDB"

    set_topic_config(bootstrap, topics.recommendations, "max.message.bytes", None)
    restarted_at = time.time()
    again = start_worker(shop.models_dir, partitions=2, engine="batch")  # same data folder
    recs = wait_for_recommendations(bootstrap, topics.recommendations, events)
    assert again.stop() == 0
    states = read_user_states(again.config.data_dir)
    audit = audit_states(states, events, shop.model)
    history = audit_histories(states, events)
    conflicts = conflicting_lists([rec for rec, _ in recs])
    second_half = {e.event_id for e in events[half:]}
    before_restart = sum(1 for rec, _ in recs if rec.event_id in second_half and rec.produced_at < restarted_at)
    record("recommendations refused by the broker (max.message.bytes), worker restarted (batch engine)",
           events=len(events), lost=audit.lost, doubled=audit.doubled, mismatched=audit.mismatched,
           wrong_history=history.wrong_recent, wrong_count=history.wrong_count, conflicting_lists=conflicts,
           recovery_s=None, committed_at_failure=sum(committed.values()))
    assert before_restart == 0, "the broker took a list it should have refused"
    assert (audit.lost, audit.doubled, audit.mismatched, conflicts) == (0, 0, 0, 0)
    assert (history.wrong_count, history.wrong_recent) == (0, 0), "stored events differ from the published log"


@pytest.mark.parametrize("engine", ["batch", "faust"])
def test_a_broken_version_in_the_models_folder_is_refused_while_serving(bootstrap, topics, start_worker, tmp_path, engine):
    """A corrupt version folder appears in the running worker's models_dir and ``LATEST``
    moves to it (the local-folder path; the models-topic path is in test_model_lifecycle.py):
    the worker keeps serving the old version and says why."""
    shop = trained_shop(tmp_path / "models", items=300, users=100, history=3_000, live=2_000, seed=2)
    events = shop.live
    half = len(events) // 2
    old = shop.model.version
    env = {"STREAMREC_WORKER__MODEL_POLL_S": "1", "STREAMREC_KAFKA__MODELS_TOPIC": ""}  # no models topic
    worker = start_worker(shop.models_dir, partitions=2, engine=engine, extra_env=env)
    publish(bootstrap, topics.events, events[:half])
    wait_for_recommendations(bootstrap, topics.recommendations, events[:half])

    broken = shop.models_dir / "v000002"
    shutil.copytree(shop.models_dir / old, broken)
    meta = orjson.loads((broken / "meta.json").read_bytes())
    (broken / "meta.json").write_bytes(orjson.dumps({**meta, "version": broken.name}))
    index = broken / "index.faiss"
    index.write_bytes(index.read_bytes()[:100])
    (shop.models_dir / "LATEST.tmp").write_text(broken.name)
    os.replace(shop.models_dir / "LATEST.tmp", shop.models_dir / "LATEST")
    refusal = f"model {broken} could not be loaded; still serving {old}"
    deadline = time.monotonic() + 60
    while refusal not in worker.log_file.read_text(errors="replace"):
        assert worker.alive(), worker.log_tail()
        assert time.monotonic() < deadline, f"no refusal logged:\n{worker.log_tail()}"
        time.sleep(0.5)

    publish(bootstrap, topics.events, events[half:])
    recs = wait_for_recommendations(bootstrap, topics.recommendations, events)
    assert worker.alive(), worker.log_tail()
    assert worker.stop() == 0
    log = worker.log_file.read_text(errors="replace")
    second_half = {e.event_id for e in events[half:]}
    served = Counter(rec.model_version for rec, _ in recs if rec.event_id in second_half)
    assert set(served) == {old}, served
    assert "truncated" in log and str(index) in log, "the log must say what is wrong with the version"
    assert log.count(refusal) == 1, "a refused version is reported once, not at every poll"
    assert "swapping model" not in log
    record(f"broken model version published into the running worker's models folder ({engine} engine)",
           events=len(events), lost=None, doubled=None, mismatched=None, conflicting_lists=None, recovery_s=None,
           lists_after=sum(served.values()), served=sorted(served))


def test_nothing_after_a_refused_batch_is_settled(bootstrap, topics, start_worker, tmp_path):
    """Batch engine: a refused batch stops the pipeline. A full batch of good events (their
    lists refused) is followed, on one partition, by a batch that makes only dead letters (which
    the broker takes). The second batch was prepared while the first was under way; it must not
    be settled when the worker stops, or its offsets would commit past the refused batch and
    that batch's lists would never be sent."""
    shop = trained_shop(tmp_path / "models", items=800, users=300, history=15_000, live=1_500, seed=33)
    events = shop.live[:1_000]
    ensure_topics(bootstrap, {topics.events: 1, topics.recommendations: 1})
    set_topic_config(bootstrap, topics.recommendations, "max.message.bytes", "100")
    with EventPublisher(bootstrap, topics.events, linger_ms=50) as publisher:
        for event in events:
            publisher.publish(event)
        for n in range(300):  # not JSON: dead-lettered, nothing else
            publisher.publish_raw(events[n].user_id.encode(), b"{broken %d" % n)
    # Started by hand: it may stop before the group is stable, which start_worker would not allow.
    config = WorkerConfig(bootstrap, shop.models_dir, tmp_path / "worker-data", topics.app_id, events_topic=topics.events,
                          recommendations_topic=topics.recommendations, dlq_topic=topics.dlq, partitions=1,
                          batch_size=len(events), engine="batch")
    worker = WorkerProcess(config, log_file=tmp_path / "first.log").start()
    worker.process.wait(120)
    log = worker.log_file.read_text(errors="replace")
    assert worker.process.returncode != 0 and "DeliveryFailed" in log, worker.log_tail()
    committed = committed_offsets(bootstrap, topics.app_id, topics.events, 1)
    stored = read_user_states(worker.config.data_dir)
    assert committed == {}, f"offsets were committed past the refused batch: {committed}"
    assert stored == {}, "states reached RocksDB although their batch was refused"

    set_topic_config(bootstrap, topics.recommendations, "max.message.bytes", None)
    again = start_worker(shop.models_dir, partitions=1, engine="batch")
    recs = wait_for_recommendations(bootstrap, topics.recommendations, events, timeout=120)
    assert again.stop() == 0
    states = read_user_states(again.config.data_dir)
    audit = audit_states(states, events, shop.model)
    history = audit_histories(states, events)
    conflicts = conflicting_lists([r for r, _ in recs])
    record("a refused batch, then one of dead letters only: neither settled (batch engine)", events=len(events) + 300,
           lost=audit.lost, doubled=audit.doubled, mismatched=audit.mismatched, wrong_history=history.wrong_recent,
           wrong_count=history.wrong_count, conflicting_lists=conflicts, recovery_s=None,
           committed_at_failure=sum(committed.values()))
    assert (audit.lost, audit.doubled, audit.mismatched, conflicts) == (0, 0, 0, 0)
    assert (history.wrong_count, history.wrong_recent) == (0, 0)
