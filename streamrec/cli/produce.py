"""``streamrec produce``: send one event, a file, a dataset or a synthetic shop to Kafka.

Exactly one source per call:

* one event from options: ``--user u1 --item sku-1 --type view``;
* ``--file events.jsonl`` (or ``.csv``; ``--format`` overrides the extension);
* ``--dataset PATH --format taobao|retailrocket|amazon-seq|yoochoose|jsonl|csv``;
* ``--synthetic --users 1000 --items 5000 --events 100000 --seed 0``;
* ``--catalog items.jsonl`` (or an Amazon ``*_item2attributes.json``, the Online Retail log;
  ``--catalog-format`` overrides the name): catalog records to the compacted items topic, keyed
  by ``item_id`` (see :mod:`producers.catalog`);
* ``--catalog-remove ITEM_ID`` (repeatable): a tombstone (a record with no value) per item.

Every option can also come from the environment, named after it (``STREAMREC_PRODUCE_RATE=500``,
``STREAMREC_PRODUCE_FILE=...``, ``STREAMREC_PRODUCE_NO_PROGRESS=1`` under the ``streamrec`` group); ``--topic``/``--bootstrap`` default to the settings
(``STREAMREC_KAFKA__EVENTS_TOPIC``, or ``STREAMREC_KAFKA__ITEMS_TOPIC`` for catalog records;
``STREAMREC_KAFKA__BOOTSTRAP``). A repeatable option takes several values from its variable,
separated by spaces (``STREAMREC_PRODUCE_CATALOG_REMOVE="sku-1 sku-2"``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import orjson

from producers.catalog import (
    CATALOG_FORMATS,
    BadCatalogFile,
    BadItem,
    CatalogStats,
    catalog_format_from_name,
    read_catalog,
)
from producers.publisher import DeliveryError, EventPublisher, QueueFullError
from streamrec.privacy import PseudonymKeyError, Pseudonymizer
from producers.readers import FORMATS, BadHeader, BadLine, ReadStats, format_from_extension, read_events
from producers.replay import ReplayStats, replay
from producers.synthetic import DEFAULT_RATE, SyntheticShop
from streamrec.config import get_settings
from streamrec.contract import (
    WIRE_EVENT_TYPES,
    CatalogItem,
    Event,
    InvalidEvent,
    catalog_item_from_dict,
    encode_catalog_item,
    event_from_dict,
)
from streamrec.kafka.admin import ensure_topics, topic_config

logger = logging.getLogger(__name__)

#: Defaults of the synthetic shop (options are None when not given, to detect misuse).
SYNTHETIC_DEFAULTS = {"users": 1_000, "items": 5_000, "events": 100_000, "seed": 0}
#: How long to wait for the broker when making sure the topic exists.
TOPIC_TIMEOUT_S = 15.0

_SINGLE_OPTIONS = {"user": "--user", "item": "--item", "type": "--type", "ts": "--ts", "session": "--session",
                   "price": "--price", "category": "--category", "query": "--query", "event_id": "--event-id",
                   "list_id": "--list-id", "quantity": "--quantity"}
_SYNTHETIC_OPTIONS = {"users": "--users", "items": "--items", "events": "--events", "seed": "--seed",
                      "start_ts": "--start-ts"}
_FIELD_OPTIONS = {"event_id": "--event-id", "user_id": "--user", "item_id": "--item", "type": "--type", "ts": "--ts",
                  "session_id": "--session", "price": "--price", "category": "--category", "query": "--query",
                  "list_id": "--list-id", "quantity": "--quantity"}


@dataclass
class _Source:
    """What to send: the events (or catalog items and removed item ids), how many we expect
    (for the progress bar), read counters."""

    events: Iterator[Event] | Iterator[CatalogItem | str]
    total: int | None
    stats: ReadStats | CatalogStats | None = None
    catalog: bool = False


class _DryRunPublisher:
    """Counts instead of sending (``--dry-run``)."""

    def publish(self, event: Event) -> None:
        pass

    def flush(self, timeout: float = 0.0) -> int:
        return 0


class _CatalogSender:
    """Sends catalog records keyed by ``item_id``: an item as its JSON value, a removed item id
    (a ``str``) as a tombstone (no value); with no publisher (``--dry-run``) it only encodes."""

    def __init__(self, publisher: EventPublisher | None) -> None:
        self._publisher = publisher

    def publish(self, record: CatalogItem | str) -> None:
        if isinstance(record, str):
            key, value = record.encode("utf-8"), None
        else:
            key, value = record.item_id.encode("utf-8"), encode_catalog_item(record)
        if self._publisher is not None:
            self._publisher.publish_raw(key, value)

    def flush(self, timeout: float = 0.0) -> int:
        return 0 if self._publisher is None else self._publisher.flush(timeout)


# --------------------------------------------------------------------------- sources


def _given(options: dict[str, object], names: dict[str, str]) -> list[str]:
    return [flag for name, flag in names.items() if options.get(name) not in (None, False, ())]


def _choose_mode(options: dict[str, object]) -> str:
    modes = {
        "single": _given(options, {"user": "--user", "item": "--item"}),
        "file": _given(options, {"file": "--file"}),
        "dataset": _given(options, {"dataset": "--dataset"}),
        "synthetic": _given(options, {"synthetic": "--synthetic"}),
        "catalog": _given(options, {"catalog": "--catalog"}),
        "remove": _given(options, {"catalog_remove": "--catalog-remove"}),
    }
    chosen = [mode for mode, flags in modes.items() if flags]
    if not chosen:
        raise click.UsageError(
            "nothing to send: give --user and --item for one event, --file PATH, "
            "--dataset PATH with --format, or --synthetic; or --catalog PATH or --catalog-remove ITEM_ID "
            "for the catalog"
        )
    if len(chosen) > 1:
        flags = " and ".join("/".join(modes[mode]) for mode in chosen)
        if {"catalog", "remove"} & set(chosen):
            raise click.UsageError(
                f"choose one thing to send, got {flags}; send events, a catalog file and catalog removals "
                "in separate calls"
            )
        raise click.UsageError(f"choose one source of events, got {flags}")
    mode = chosen[0]
    catalog_format = {"catalog_format": "--catalog-format"}
    misplaced = {
        "single": _given(options, _SYNTHETIC_OPTIONS) + _given(options, {"format": "--format", "skip_bad": "--skip-bad"}),
        "file": _given(options, _SINGLE_OPTIONS) + _given(options, _SYNTHETIC_OPTIONS),
        "dataset": _given(options, _SINGLE_OPTIONS) + _given(options, _SYNTHETIC_OPTIONS),
        "synthetic": _given(options, _SINGLE_OPTIONS) + _given(options, {"format": "--format", "skip_bad": "--skip-bad"}),
        "catalog": _given(options, _SINGLE_OPTIONS) + _given(options, _SYNTHETIC_OPTIONS),
        "remove": _given(options, _SINGLE_OPTIONS) + _given(options, _SYNTHETIC_OPTIONS)
        + _given(options, {"skip_bad": "--skip-bad", **catalog_format}),
    }[mode]
    if mode not in ("catalog", "remove"):
        misplaced += _given(options, catalog_format)
    if mode in ("catalog", "remove") and options.get("format") is not None:
        raise click.UsageError(
            f"--format names event formats and cannot be used with {modes[mode][0]}; "
            f"the catalog's is --catalog-format (one of {', '.join(CATALOG_FORMATS)})"
        )
    if misplaced:
        where = {"single": "a single event", "file": "--file", "dataset": "--dataset", "synthetic": "--synthetic",
                 "catalog": "--catalog", "remove": "--catalog-remove"}[mode]
        raise click.UsageError(f"{', '.join(misplaced)} cannot be used with {where}")
    return mode


def _single_event(options: dict[str, object]) -> Event:
    for name in ("user", "item"):
        if options.get(name) is None:
            raise click.UsageError(f"{_SINGLE_OPTIONS[name]} is required for a single event (give --user and --item)")
    payload = {
        "event_id": options.get("event_id") or f"cli-{time.time_ns()}",
        "user_id": options["user"],
        "item_id": options["item"],
        "type": options.get("type") or "view",
        "ts": time.time() if options.get("ts") is None else options["ts"],
        "session_id": options.get("session"),
        "price": options.get("price"),
        "category": options.get("category"),
        "query": options.get("query"),
        "list_id": options.get("list_id"),
        "quantity": options.get("quantity"),
    }
    try:
        return event_from_dict({k: v for k, v in payload.items() if v is not None})
    except InvalidEvent as exc:
        flag = next((flag for field, flag in _FIELD_OPTIONS.items() if repr(field) in exc.detail), None)
        if flag is None and exc.reason in ("bad_timestamp", "future_timestamp"):
            flag = "--ts"
        if flag is None and exc.reason == "bad_price":
            flag = "--price"
        raise click.BadParameter(f"the event breaks the contract: {exc.detail}", param_hint=flag) from None


def _check_path(path: Path, flag: str) -> Path:
    if not path.exists():
        raise click.BadParameter(f"there is no file at {path}", param_hint=flag)
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.is_file())[:8]
        hint = f"; it holds {', '.join(inside)}" if inside else ""
        raise click.BadParameter(f"{path} is a folder, give the file inside it{hint}", param_hint=flag)
    return path


def _file_source(options: dict[str, object], limit: int | None) -> _Source:
    mode_flag = "--file" if options.get("file") is not None else "--dataset"
    path = _check_path(Path(str(options.get("file") or options["dataset"])), mode_flag)
    fmt = options.get("format")
    if fmt is None and mode_flag == "--file":
        fmt = format_from_extension(path)
        if fmt is None:
            raise click.BadParameter(
                f"cannot tell the format of {path.name} from its extension; name it .jsonl or .csv, "
                f"or pass --format (one of {', '.join(FORMATS)})",
                param_hint="--file",
            )
    if fmt is None:
        raise click.UsageError(f"--format is required with --dataset; choose one of {', '.join(FORMATS)}")
    stats = ReadStats()
    events = read_events(path, str(fmt), limit=limit, skip_bad=bool(options.get("skip_bad")), stats=stats)
    return _Source(events=events, total=limit, stats=stats)


def _catalog_source(options: dict[str, object], limit: int | None) -> _Source:
    path = _check_path(Path(str(options["catalog"])), "--catalog")
    fmt = options.get("catalog_format") or catalog_format_from_name(path)
    if fmt is None:
        raise click.BadParameter(
            f"cannot tell the catalog format of {path.name} from its name; name it .jsonl, "
            f"*item2attributes.json or online-retail*.csv.gz, or pass --catalog-format "
            f"(one of {', '.join(CATALOG_FORMATS)})",
            param_hint="--catalog",
        )
    stats = CatalogStats()
    items = read_catalog(path, str(fmt), limit=limit, skip_bad=bool(options.get("skip_bad")), stats=stats)
    return _Source(events=items, total=limit, stats=stats, catalog=True)


def _removal_source(options: dict[str, object], limit: int | None) -> _Source:
    item_ids = list(options["catalog_remove"])  # type: ignore[call-overload]
    for item_id in item_ids:
        try:
            item_id.encode("utf-8")
            catalog_item_from_dict({"item_id": item_id})
        except UnicodeEncodeError:
            raise click.BadParameter(f"{item_id!r} is not valid UTF-8 text", param_hint="--catalog-remove") from None
        except InvalidEvent as exc:
            raise click.BadParameter(f"{item_id!r} is not an item id: {exc.detail}", param_hint="--catalog-remove") from None
    if limit is not None:
        item_ids = item_ids[:limit]
    return _Source(events=iter(item_ids), total=len(item_ids), catalog=True)


def _synthetic_source(options: dict[str, object], limit: int | None) -> _Source:
    settings = {name: default if options.get(name) is None else int(options[name])  # type: ignore[call-overload]
                for name, default in SYNTHETIC_DEFAULTS.items()}
    n_events = settings["events"] if limit is None else min(settings["events"], limit)
    start_ts = options.get("start_ts")
    if start_ts is None:  # end the simulated stream about now (the worker rejects events >1 day ahead)
        start_ts = time.time() - n_events / DEFAULT_RATE
    try:
        shop = SyntheticShop(items=settings["items"], users=settings["users"], seed=settings["seed"])
        events = shop.events(n_events, start_ts=float(start_ts))  # type: ignore[arg-type]
    except ValueError as exc:
        raise click.UsageError(f"cannot build the synthetic shop: {exc}") from None
    return _Source(events=events, total=n_events)


# --------------------------------------------------------------------------- sending


def _send(source: _Source, *, topic: str, bootstrap: str, rate: float | None, progress: bool, dry_run: bool,
          pseudonymizer: Pseudonymizer | None = None) -> ReplayStats:
    if dry_run:
        dry = _CatalogSender(None) if source.catalog else _DryRunPublisher()
        return replay(source.events, dry, rate=rate, progress=progress, total=source.total)  # type: ignore[arg-type]
    partitions = {topic: get_settings().kafka.partitions}
    try:
        if source.catalog:
            created = ensure_topics(bootstrap, partitions, timeout=TOPIC_TIMEOUT_S,
                                    configs={topic: {"cleanup.policy": "compact"}})
            if topic not in created:
                _warn_unless_compacted(bootstrap, topic)
        else:
            ensure_topics(bootstrap, partitions, timeout=TOPIC_TIMEOUT_S)
    except RuntimeError as exc:
        raise click.ClickException(f"{exc}\n(is the broker running? try `streamrec kafka status`)") from None
    try:
        with EventPublisher(bootstrap, topic, pseudonymizer=pseudonymizer) as publisher:
            sender = _CatalogSender(publisher) if source.catalog else publisher
            return replay(source.events, sender, rate=rate, progress=progress, total=source.total)  # type: ignore[arg-type]
    except (DeliveryError, QueueFullError) as exc:
        raise click.ClickException(str(exc)) from None


def _warn_unless_compacted(bootstrap: str, topic: str) -> None:
    """An existing items topic that deletes old records would lose the catalog: say so (and send anyway)."""
    try:
        policy = topic_config(bootstrap, topic, timeout=TOPIC_TIMEOUT_S).get("cleanup.policy", "")
    except RuntimeError as exc:
        logger.warning("could not read the settings of topic %r: %s", topic, exc)
        return
    if "compact" not in policy.split(","):
        click.echo(
            f"warning: topic {topic!r} exists with cleanup.policy={policy or '?'}, not compact: the broker will "
            f"delete old catalog records instead of keeping the latest per item",
            err=True,
        )


def _summary(stats: ReadStats | CatalogStats | None, replayed: ReplayStats, *, topic: str, bootstrap: str,
             dry_run: bool, as_json: bool, kind: str = "event") -> str:
    """``kind``: what was sent, ``event``, ``catalog record`` or ``tombstone``."""
    skipped = stats.skipped if stats is not None else 0
    unit = "events" if kind == "event" else "records"
    if as_json:
        return orjson.dumps({
            "sent": 0 if dry_run else replayed.sent, "read": replayed.sent, "skipped": skipped,
            "seconds": round(replayed.elapsed_s, 3), f"{unit}_per_s": round(replayed.events_per_s, 1),
            "topic": topic, "bootstrap": bootstrap, "dry_run": dry_run,
        }).decode()
    verb = "read and validated" if dry_run else "sent"
    where = " (dry run, nothing sent)" if dry_run else f" to topic {topic!r} at {bootstrap}"
    bad = "line(s)" if isinstance(stats, ReadStats) else "record(s)"
    extra = f"; skipped {skipped:,} bad {bad}" if skipped else ""
    noun = kind if replayed.sent == 1 else f"{kind}s"
    return (f"{verb} {replayed.sent:,} {noun}{where} in {replayed.elapsed_s:.2f} s "
            f"({replayed.events_per_s:,.0f} {unit}/s){extra}")


@click.command("produce")
@click.option("--user", help="Single event: the user id.")
@click.option("--item", help="Single event: the item id.")
@click.option("--type", type=click.Choice(WIRE_EVENT_TYPES), help="Single event: its type [default: view].")
@click.option("--ts", type=float, help="Single event: event time in Unix seconds [default: now].")
@click.option("--session", help="Single event: the session id.")
@click.option("--price", type=float, help="Single event: the price.")
@click.option("--category", help="Single event: the item's category.")
@click.option("--query", help="Single event: the search query.")
@click.option("--list-id", help="Single event: the recommendation list the shopper acted from.")
@click.option("--quantity", type=int, help="Single event: units bought or added.")
@click.option("--event-id", help="Single event: its id [default: cli-<nanoseconds>].")
@click.option("--file", type=click.Path(path_type=Path), help="Send a .jsonl or .csv file of events.")
@click.option("--dataset", type=click.Path(path_type=Path), help="Send a dataset file (needs --format).")
@click.option("--format", type=click.Choice(FORMATS), help="Format of --dataset (or of --file, over its extension).")
@click.option("--skip-bad", is_flag=True, help="Skip (count and log) bad lines instead of stopping at the first.")
@click.option("--synthetic", is_flag=True, help="Send events of a seeded synthetic shop.")
@click.option("--catalog", type=click.Path(path_type=Path),
              help="Send a product catalog file to the items topic, keyed by item_id (.jsonl, an Amazon "
                   "*item2attributes.json or the Online Retail log).")
@click.option("--catalog-format", type=click.Choice(CATALOG_FORMATS), help="Format of --catalog, over its file name.")
@click.option("--catalog-remove", multiple=True, metavar="ITEM_ID",
              help="Remove an item from the catalog: send a tombstone keyed by its id (repeatable).")
@click.option("--users", type=click.IntRange(min=1), help=f"Synthetic: users [default: {SYNTHETIC_DEFAULTS['users']}].")
@click.option("--items", type=click.IntRange(min=1), help=f"Synthetic: items [default: {SYNTHETIC_DEFAULTS['items']}].")
@click.option("--events", type=click.IntRange(min=0),
              help=f"Synthetic: events [default: {SYNTHETIC_DEFAULTS['events']}].")
@click.option("--seed", type=int, help=f"Synthetic: random seed [default: {SYNTHETIC_DEFAULTS['seed']}].")
@click.option("--start-ts", type=click.FloatRange(min=0), help="Synthetic: time of the first event [default: so the last is about now].")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Events per second [default: as fast as possible].")
@click.option("--limit", type=click.IntRange(min=0), help="Send at most this many events (or catalog records).")
@click.option("--topic", help="Topic to send to [default: settings kafka.events_topic; kafka.items_topic for the catalog].")
@click.option("--bootstrap", help="Kafka bootstrap servers [default: settings kafka.bootstrap].")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--dry-run", is_flag=True, help="Read and validate the events or records, send nothing (no Kafka needed).")
@click.option("--pseudonymize", is_flag=True,
              help="Replace every user id by its keyed HMAC-SHA256 pseudonym before sending "
                   "(key: STREAMREC_PRIVACY__USER_ID_KEY; docs/security.md).")
@click.option("--json", is_flag=True, help="Print the summary as JSON.")
def produce(**options: object) -> None:
    """Send events to Kafka: one event, a file, a dataset or a synthetic shop; or catalog records."""
    mode = _choose_mode(options)
    limit = options.get("limit")
    limit = None if limit is None else int(limit)  # type: ignore[call-overload]
    if mode == "single":
        source = _Source(events=iter([_single_event(options)]), total=1)
    elif mode == "synthetic":
        source = _synthetic_source(options, limit)
    elif mode == "catalog":
        source = _catalog_source(options, limit)
    elif mode == "remove":
        source = _removal_source(options, limit)
    else:
        source = _file_source(options, limit)
    kafka = get_settings().kafka
    topic = str(options.get("topic") or (kafka.items_topic if source.catalog else kafka.events_topic))
    bootstrap = str(options.get("bootstrap") or kafka.bootstrap)
    rate = options.get("rate")
    dry_run = bool(options.get("dry_run"))
    pseudonymizer = None
    if options.get("pseudonymize"):
        if source.catalog:
            raise click.BadParameter("catalog records carry no user ids", param_hint="--pseudonymize")
        try:
            pseudonymizer = Pseudonymizer.from_settings(get_settings())
        except PseudonymKeyError as exc:
            raise click.BadParameter(str(exc), param_hint="--pseudonymize") from None
    try:
        replayed = _send(source, topic=topic, bootstrap=bootstrap, rate=None if rate is None else float(rate),  # type: ignore[arg-type]
                         progress=not options.get("no_progress"), dry_run=dry_run, pseudonymizer=pseudonymizer)
    except (BadHeader, BadCatalogFile) as exc:
        flag, formats = ("--catalog-format", CATALOG_FORMATS) if source.catalog else ("--format", FORMATS)
        raise click.ClickException(f"{exc}\n(is {flag} right? the formats are {', '.join(formats)})") from None
    except (BadLine, BadItem) as exc:
        what = "records" if source.catalog else "lines"
        raise click.ClickException(f"{exc}\n(--skip-bad skips bad {what} and counts them)") from None
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    kind = {"catalog": "catalog record", "remove": "tombstone"}.get(mode, "event")
    click.echo(_summary(source.stats, replayed, topic=topic, bootstrap=bootstrap, dry_run=dry_run,
                        as_json=bool(options.get("json")), kind=kind))
