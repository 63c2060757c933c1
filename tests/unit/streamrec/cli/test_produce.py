"""``produce`` through click's CliRunner: clear messages for bad input, no Kafka needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson
import pytest
from click.testing import CliRunner, Result

import streamrec.cli.produce as cli
from streamrec.config import get_settings
from streamrec.contract import Event


@click.group(context_settings={"auto_envvar_prefix": "STREAMREC"})
def group() -> None:
    """Stands in for the ``streamrec`` group (same env prefix)."""


group.add_command(cli.produce)


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(group, ["produce", *args], env=env, catch_exceptions=False)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


JSONL = (
    '{"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "view", "ts": 1700000000}\n'
    '{"event_id": "e2", "user_id": "u1", "item_id": "i2", "type": "purchase", "ts": 1700000001}\n'
)


# --------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "nothing to send: give --user and --item for one event"),
        (("--user", "u1"), "--item is required for a single event"),
        (("--user", "u1", "--item", "i1", "--type", "teleport"), "'teleport' is not one of 'view', 'click'"),
        (("--user", "u1", "--item", "i1", "--ts", "99999999999"), "Invalid value for --ts: the event breaks the contract"),
        (("--user", "", "--item", "i1"), "Invalid value for --user: the event breaks the contract: field 'user_id' must not be empty"),
        (("--user", "u1", "--item", "i1", "--price", "-3"), "Invalid value for --price"),
        (("--user", "u1", "--item", "i1", "--synthetic"), "choose one source of events, got --user/--item and --synthetic"),
        (("--synthetic", "--type", "view"), "--type cannot be used with --synthetic"),
        (("--synthetic", "--format", "csv"), "--format cannot be used with --synthetic"),
        (("--user", "u1", "--item", "i1", "--users", "3"), "--users cannot be used with a single event"),
        (("--dataset", "x.csv", "--users", "3"), "--users cannot be used with --dataset"),
        (("--synthetic", "--rate", "0"), "Invalid value for '--rate'"),
        (("--synthetic", "--limit", "-1"), "Invalid value for '--limit'"),
    ],
)
def test_bad_arguments_say_what_is_wrong(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_dataset_needs_format_and_an_existing_file(tmp_path: Path) -> None:
    path = write(tmp_path, "UserBehavior.csv", "1,2,3,pv,1511658000\n")
    result = run("--dataset", str(path))
    assert result.exit_code == 2
    assert "--format is required with --dataset; choose one of taobao, retailrocket, amazon-seq, yoochoose" in result.output
    result = run("--dataset", str(tmp_path / "nope.csv"), "--format", "taobao")
    assert result.exit_code == 2 and f"there is no file at {tmp_path / 'nope.csv'}" in result.output
    result = run("--dataset", str(tmp_path), "--format", "taobao")
    assert result.exit_code == 2 and "is a folder, give the file inside it; it holds UserBehavior.csv" in result.output
    result = run("--dataset", str(path), "--format", "parquet")
    assert result.exit_code == 2 and "'parquet' is not one of 'taobao'" in result.output


def test_file_format_comes_from_the_extension_or_format(tmp_path: Path) -> None:
    path = write(tmp_path, "events.txt", JSONL)
    result = run("--file", str(path))
    assert result.exit_code == 2
    assert "cannot tell the format of events.txt from its extension; name it .jsonl or .csv, or pass --format" in result.output
    result = run("--file", str(path), "--format", "jsonl", "--dry-run", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "read and validated 2 events (dry run, nothing sent)" in result.output


def test_bad_line_stops_with_file_line_and_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "events.jsonl", JSONL + '{"user_id": "u", "item_id": "i", "type": "buy", "ts": 1}\n')
    result = run("--file", str(path), "--dry-run", "--no-progress")
    assert result.exit_code == 1
    assert f"{path}, line 3: not a valid event (unknown_type" in result.output
    assert "--skip-bad skips bad lines" in result.output
    result = run("--file", str(path), "--dry-run", "--no-progress", "--skip-bad")
    assert result.exit_code == 0
    assert "read and validated 2 events" in result.output and "skipped 1 bad line(s)" in result.output


def test_wrong_format_for_a_file_points_at_format(tmp_path: Path) -> None:
    path = write(tmp_path, "Beauty.txt", "1 1 2 3\n")
    result = run("--dataset", str(path), "--format", "yoochoose", "--dry-run", "--no-progress")
    assert result.exit_code == 1
    assert "line 1: expected the header" in result.output and "is --format right?" in result.output


# --------------------------------------------------------------------------- dry runs


def test_single_event_dry_run() -> None:
    result = run("--user", "u1", "--item", "sku-1", "--type", "purchase", "--price", "9.5", "--dry-run", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "read and validated 1 event (dry run, nothing sent)" in result.output


def test_synthetic_dry_run_with_json_summary_and_limit() -> None:
    result = run("--synthetic", "--users", "20", "--items", "50", "--events", "500", "--limit", "120",
                 "--dry-run", "--no-progress", "--json")
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    assert summary["read"] == 120 and summary["sent"] == 0 and summary["dry_run"] is True
    assert summary["topic"] == get_settings().kafka.events_topic


def test_options_are_read_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "events.jsonl", JSONL)
    env = {"STREAMREC_PRODUCE_FILE": str(path), "STREAMREC_PRODUCE_LIMIT": "1", "STREAMREC_PRODUCE_DRY_RUN": "1",
           "STREAMREC_PRODUCE_NO_PROGRESS": "1"}
    result = run(env=env)
    assert result.exit_code == 0, result.output
    assert "read and validated 1 event " in result.output


# --------------------------------------------------------------------------- publishing (faked)


class FakePublisher:
    instances: list[FakePublisher] = []

    def __init__(self, bootstrap: str, topic: str, **kwargs: Any) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.events: list[Event] = []
        self.closed = False
        FakePublisher.instances.append(self)

    def publish(self, event: Event) -> None:
        self.events.append(event)

    def flush(self, timeout: float = 0.0) -> int:
        return 0

    def __enter__(self) -> FakePublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed = True


@pytest.fixture
def fake_kafka(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, int]]]:
    ensured: list[tuple[str, dict[str, int]]] = []
    FakePublisher.instances = []
    monkeypatch.setattr(cli, "EventPublisher", FakePublisher)
    monkeypatch.setattr(cli, "ensure_topics", lambda bootstrap, topics, **kw: ensured.append((bootstrap, topics)) or [])
    return ensured


def test_publishes_to_the_given_topic_after_ensuring_it(tmp_path: Path, fake_kafka: list) -> None:
    path = write(tmp_path, "events.jsonl", JSONL)
    result = run("--file", str(path), "--topic", "t1", "--bootstrap", "b:1", "--rate", "1000")
    assert result.exit_code == 0, result.output
    assert fake_kafka == [("b:1", {"t1": get_settings().kafka.partitions})]
    (publisher,) = FakePublisher.instances
    assert (publisher.bootstrap, publisher.topic, publisher.closed) == ("b:1", "t1", True)
    assert [e.event_id for e in publisher.events] == ["e1", "e2"]
    assert "sent 2 events to topic 't1' at b:1 in" in result.stdout and "events/s" in result.stdout


def test_defaults_come_from_settings(fake_kafka: list) -> None:
    result = run("--synthetic", "--events", "30", "--items", "40", "--users", "5", "--no-progress")
    assert result.exit_code == 0, result.output
    kafka = get_settings().kafka
    (publisher,) = FakePublisher.instances
    assert (publisher.bootstrap, publisher.topic) == (kafka.bootstrap, kafka.events_topic)
    assert len(publisher.events) == 30
    # the synthetic stream ends about now, never in the future
    assert max(e.ts for e in publisher.events) < __import__("time").time() + 60


def test_unreachable_broker_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(bootstrap: str, topics: dict[str, int], **kwargs: Any) -> list[str]:
        raise RuntimeError(f"could not reach Kafka at {bootstrap} within 15 s: transport failure")

    monkeypatch.setattr(cli, "ensure_topics", unreachable)
    result = run("--user", "u1", "--item", "i1", "--bootstrap", "nowhere:9092", "--no-progress")
    assert result.exit_code == 1
    assert "could not reach Kafka at nowhere:9092" in result.output and "streamrec kafka status" in result.output
