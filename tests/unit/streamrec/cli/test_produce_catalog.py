"""``produce --catalog`` and ``--catalog-remove`` through click's CliRunner, no Kafka needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson
import pytest
from click.testing import CliRunner, Result

import streamrec.cli.produce as cli
from streamrec.config import get_settings
from streamrec.contract import decode_catalog_item


@click.group(context_settings={"auto_envvar_prefix": "STREAMREC"})
def group() -> None:
    """Stands in for the ``streamrec`` group (same env prefix)."""


group.add_command(cli.produce)

CATALOG = (
    '{"item_id": "sku-1", "title": "Rose cream", "category": ["Beauty", "Skin Care"], "price": 9.5}\n'
    '{"item_id": "sku-2", "available": false}\n'
)


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(group, ["produce", *args], env=env, catch_exceptions=False)


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    path = tmp_path / "items.jsonl"
    path.write_text(CATALOG, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--catalog", "items.jsonl", "--synthetic"),
         "choose one thing to send, got --synthetic and --catalog; send events, a catalog file and catalog removals "
         "in separate calls"),
        (("--catalog", "items.jsonl", "--catalog-remove", "sku-1"), "got --catalog and --catalog-remove"),
        (("--file", "e.jsonl", "--catalog-remove", "sku-1"), "got --file and --catalog-remove"),
        (("--catalog", "items.jsonl", "--format", "jsonl"),
         "--format names event formats and cannot be used with --catalog; the catalog's is --catalog-format"),
        (("--catalog", "items.jsonl", "--user", "u1"), "choose one thing to send, got --user and --catalog"),
        (("--catalog", "items.jsonl", "--type", "view"), "--type cannot be used with --catalog"),
        (("--catalog-remove", "sku-1", "--skip-bad"), "--skip-bad cannot be used with --catalog-remove"),
        (("--catalog-remove", "sku-1", "--catalog-format", "jsonl"), "--catalog-format cannot be used with --catalog-remove"),
        (("--synthetic", "--catalog-format", "jsonl"), "--catalog-format cannot be used with --synthetic"),
        (("--catalog-remove", ""), "Invalid value for --catalog-remove: '' is not an item id: field 'item_id' must not be empty"),
        (("--catalog-remove", "x" * 300), "has 300 characters, the limit is 256"),
        (("--catalog", "items.jsonl", "--catalog-format", "xml"), "'xml' is not one of 'jsonl', 'amazon-attributes', 'online-retail'"),
        ((), "or --catalog PATH or --catalog-remove ITEM_ID for the catalog"),
    ],
)
def test_bad_arguments_say_what_is_wrong(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_catalog_file_problems_are_sentences(tmp_path: Path) -> None:
    result = run("--catalog", str(tmp_path / "nope.jsonl"))
    assert result.exit_code == 2 and f"there is no file at {tmp_path / 'nope.jsonl'}" in result.output
    path = tmp_path / "items.txt"
    path.write_text(CATALOG)
    result = run("--catalog", str(path), "--dry-run")
    assert result.exit_code == 2
    assert "cannot tell the catalog format of items.txt from its name; name it .jsonl" in " ".join(result.output.split())
    result = run("--catalog", str(path), "--catalog-format", "jsonl", "--dry-run", "--no-progress")
    assert result.exit_code == 0 and "read and validated 2 catalog records (dry run, nothing sent)" in result.output


def test_bad_record_stops_with_line_and_hint_unless_skipped(catalog: Path) -> None:
    catalog.write_text(CATALOG + '{"item_id": "sku-3", "price": "cheap"}\n')
    result = run("--catalog", str(catalog), "--dry-run", "--no-progress")
    assert result.exit_code == 1
    assert f"{catalog}, line 3: not a valid catalog record (wrong_type: field 'price' must be a number" in result.output
    assert "--skip-bad skips bad records and counts them" in result.output
    result = run("--catalog", str(catalog), "--dry-run", "--no-progress", "--skip-bad")
    assert result.exit_code == 0
    assert "read and validated 2 catalog records" in result.output and "skipped 1 bad record(s)" in result.output


def test_wrong_catalog_format_points_at_the_option(tmp_path: Path) -> None:
    path = tmp_path / "online-retail.csv"
    path.write_text("a,b\n")
    result = run("--catalog", str(path), "--dry-run", "--no-progress")
    assert result.exit_code == 1
    assert "expected the header 'InvoiceNo,StockCode" in result.output and "is --catalog-format right?" in result.output


def test_dry_run_json_summary_limit_and_topic(catalog: Path) -> None:
    result = run("--catalog", str(catalog), "--dry-run", "--no-progress", "--json", "--limit", "1")
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    assert (summary["read"], summary["sent"], summary["skipped"], summary["dry_run"]) == (1, 0, 0, True)
    assert summary["topic"] == get_settings().kafka.items_topic and "records_per_s" in summary


def test_options_are_read_from_the_environment(catalog: Path) -> None:
    env = {"STREAMREC_PRODUCE_CATALOG": str(catalog), "STREAMREC_PRODUCE_DRY_RUN": "1",
           "STREAMREC_PRODUCE_NO_PROGRESS": "1", "STREAMREC_PRODUCE_CATALOG_FORMAT": "jsonl"}
    result = run(env=env)
    assert result.exit_code == 0, result.output
    assert "read and validated 2 catalog records" in result.output
    env = {"STREAMREC_PRODUCE_CATALOG_REMOVE": "sku-1 sku-2 sku-3", "STREAMREC_PRODUCE_DRY_RUN": "1",
           "STREAMREC_PRODUCE_NO_PROGRESS": "1"}
    result = run(env=env)
    assert result.exit_code == 0, result.output
    assert "read and validated 3 tombstones" in result.output


# --------------------------------------------------------------------------- publishing (faked)


class FakePublisher:
    instances: list[FakePublisher] = []

    def __init__(self, bootstrap: str, topic: str, **kwargs: Any) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.records: list[tuple[bytes | None, bytes | None]] = []
        FakePublisher.instances.append(self)

    def publish_raw(self, key: bytes | None, value: bytes | None) -> None:
        self.records.append((key, value))

    def flush(self, timeout: float = 0.0) -> int:
        return 0

    def __enter__(self) -> FakePublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.fixture
def fake_kafka(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, int], dict]]:
    ensured: list[tuple[str, dict[str, int], dict]] = []
    FakePublisher.instances = []
    monkeypatch.setattr(cli, "EventPublisher", FakePublisher)
    monkeypatch.setattr(cli, "ensure_topics",
                        lambda bootstrap, topics, **kw: ensured.append((bootstrap, topics, kw.get("configs"))) or list(topics))
    return ensured


def test_catalog_goes_keyed_by_item_id_to_a_compacted_items_topic(catalog: Path, fake_kafka: list) -> None:
    result = run("--catalog", str(catalog), "--bootstrap", "b:1", "--no-progress")
    assert result.exit_code == 0, result.output
    kafka = get_settings().kafka
    assert fake_kafka == [("b:1", {kafka.items_topic: kafka.partitions}, {kafka.items_topic: {"cleanup.policy": "compact"}})]
    (publisher,) = FakePublisher.instances
    assert publisher.topic == kafka.items_topic
    assert [key for key, _ in publisher.records] == [b"sku-1", b"sku-2"]
    items = [decode_catalog_item(key, value) for key, value in publisher.records]
    assert items[0].category == ("Beauty", "Skin Care") and items[1].available is False
    assert f"sent 2 catalog records to topic '{kafka.items_topic}' at b:1" in result.output


def test_catalog_remove_sends_tombstones(fake_kafka: list) -> None:
    result = run("--catalog-remove", "sku-1", "--catalog-remove", "sku-ü", "--topic", "shop-items", "--no-progress")
    assert result.exit_code == 0, result.output
    (publisher,) = FakePublisher.instances
    assert publisher.topic == "shop-items"
    assert publisher.records == [(b"sku-1", None), ("sku-ü".encode(), None)]
    assert fake_kafka[0][2] == {"shop-items": {"cleanup.policy": "compact"}}
    assert "sent 2 tombstones to topic 'shop-items'" in result.output


def test_an_existing_topic_that_is_not_compacted_is_warned_about(catalog: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    FakePublisher.instances = []
    monkeypatch.setattr(cli, "EventPublisher", FakePublisher)
    monkeypatch.setattr(cli, "ensure_topics", lambda bootstrap, topics, **kw: [])  # it existed
    monkeypatch.setattr(cli, "topic_config", lambda bootstrap, topic, **kw: {"cleanup.policy": "delete"})
    result = run("--catalog", str(catalog), "--topic", "events", "--no-progress")
    assert result.exit_code == 0
    assert "warning: topic 'events' exists with cleanup.policy=delete, not compact" in result.stderr
    assert len(FakePublisher.instances[0].records) == 2
