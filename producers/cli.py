"""``streamrec produce``: send one event, a file, a dataset or a synthetic shop to Kafka.

Exactly one source per call:

* one event from options: ``--user u1 --item sku-1 --type view``;
* ``--file events.jsonl`` (or ``.csv``; ``--format`` overrides the extension);
* ``--dataset PATH --format taobao|retailrocket|amazon-seq|yoochoose|jsonl|csv``;
* ``--synthetic --users 1000 --items 5000 --events 100000 --seed 0``.

Every option can also come from the environment, named after it (``STREAMREC_PRODUCE_RATE=500``,
``STREAMREC_PRODUCE_FILE=...``, ``STREAMREC_PRODUCE_NO_PROGRESS=1`` under the ``streamrec`` group); ``--topic``/``--bootstrap`` default to the settings
(``STREAMREC_KAFKA__EVENTS_TOPIC``, ``STREAMREC_KAFKA__BOOTSTRAP``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import orjson

from producers.publisher import DeliveryError, EventPublisher, QueueFullError, ensure_topics
from producers.readers import FORMATS, BadHeader, BadLine, ReadStats, format_from_extension, read_events
from producers.replay import ReplayStats, replay
from producers.synthetic import DEFAULT_RATE, SyntheticShop
from streamrec.config import get_settings
from streamrec.contract import EVENT_TYPES, Event, InvalidEvent, event_from_dict

logger = logging.getLogger(__name__)

#: Defaults of the synthetic shop (options are None when not given, to detect misuse).
SYNTHETIC_DEFAULTS = {"users": 1_000, "items": 5_000, "events": 100_000, "seed": 0}
#: How long to wait for the broker when making sure the topic exists.
TOPIC_TIMEOUT_S = 15.0

_SINGLE_OPTIONS = {"user": "--user", "item": "--item", "type": "--type", "ts": "--ts", "session": "--session",
                   "price": "--price", "category": "--category", "query": "--query", "event_id": "--event-id"}
_SYNTHETIC_OPTIONS = {"users": "--users", "items": "--items", "events": "--events", "seed": "--seed",
                      "start_ts": "--start-ts"}
_FIELD_OPTIONS = {"event_id": "--event-id", "user_id": "--user", "item_id": "--item", "type": "--type", "ts": "--ts",
                  "session_id": "--session", "price": "--price", "category": "--category", "query": "--query"}


@dataclass
class _Source:
    """What to send: the events, how many we expect (for the progress bar), read counters."""

    events: Iterator[Event]
    total: int | None
    stats: ReadStats | None = None


class _DryRunPublisher:
    """Counts instead of sending (``--dry-run``)."""

    def publish(self, event: Event) -> None:
        pass

    def flush(self, timeout: float = 0.0) -> int:
        return 0


# --------------------------------------------------------------------------- sources


def _given(options: dict[str, object], names: dict[str, str]) -> list[str]:
    return [flag for name, flag in names.items() if options.get(name) not in (None, False)]


def _choose_mode(options: dict[str, object]) -> str:
    modes = {
        "single": _given(options, {"user": "--user", "item": "--item"}),
        "file": _given(options, {"file": "--file"}),
        "dataset": _given(options, {"dataset": "--dataset"}),
        "synthetic": _given(options, {"synthetic": "--synthetic"}),
    }
    chosen = [mode for mode, flags in modes.items() if flags]
    if not chosen:
        raise click.UsageError(
            "nothing to send: give --user and --item for one event, --file PATH, "
            "--dataset PATH with --format, or --synthetic"
        )
    if len(chosen) > 1:
        flags = " and ".join("/".join(modes[mode]) for mode in chosen)
        raise click.UsageError(f"choose one source of events, got {flags}")
    mode = chosen[0]
    misplaced = {
        "single": _given(options, _SYNTHETIC_OPTIONS) + _given(options, {"format": "--format", "skip_bad": "--skip-bad"}),
        "file": _given(options, _SINGLE_OPTIONS) + _given(options, _SYNTHETIC_OPTIONS),
        "dataset": _given(options, _SINGLE_OPTIONS) + _given(options, _SYNTHETIC_OPTIONS),
        "synthetic": _given(options, _SINGLE_OPTIONS) + _given(options, {"format": "--format", "skip_bad": "--skip-bad"}),
    }[mode]
    if misplaced:
        where = {"single": "a single event", "file": "--file", "dataset": "--dataset", "synthetic": "--synthetic"}[mode]
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


def _send(source: _Source, *, topic: str, bootstrap: str, rate: float | None, progress: bool, dry_run: bool) -> ReplayStats:
    if dry_run:
        return replay(source.events, _DryRunPublisher(), rate=rate, progress=progress, total=source.total)
    try:
        ensure_topics(bootstrap, {topic: get_settings().kafka.partitions}, timeout=TOPIC_TIMEOUT_S)
    except RuntimeError as exc:
        raise click.ClickException(f"{exc}\n(is the broker running? try `streamrec kafka status`)") from None
    try:
        with EventPublisher(bootstrap, topic) as publisher:
            return replay(source.events, publisher, rate=rate, progress=progress, total=source.total)
    except (DeliveryError, QueueFullError) as exc:
        raise click.ClickException(str(exc)) from None


def _summary(stats: ReadStats | None, replayed: ReplayStats, *, topic: str, bootstrap: str, dry_run: bool,
             as_json: bool) -> str:
    skipped = stats.skipped if stats is not None else 0
    if as_json:
        return orjson.dumps({
            "sent": 0 if dry_run else replayed.sent, "read": replayed.sent, "skipped": skipped,
            "seconds": round(replayed.elapsed_s, 3), "events_per_s": round(replayed.events_per_s, 1),
            "topic": topic, "bootstrap": bootstrap, "dry_run": dry_run,
        }).decode()
    verb = "read and validated" if dry_run else "sent"
    where = " (dry run, nothing sent)" if dry_run else f" to topic {topic!r} at {bootstrap}"
    extra = f"; skipped {skipped:,} bad line(s)" if skipped else ""
    noun = "event" if replayed.sent == 1 else "events"
    return f"{verb} {replayed.sent:,} {noun}{where} in {replayed.elapsed_s:.2f} s ({replayed.events_per_s:,.0f} events/s){extra}"


@click.command("produce")
@click.option("--user", help="Single event: the user id.")
@click.option("--item", help="Single event: the item id.")
@click.option("--type", type=click.Choice(EVENT_TYPES), help="Single event: its type [default: view].")
@click.option("--ts", type=float, help="Single event: event time in Unix seconds [default: now].")
@click.option("--session", help="Single event: the session id.")
@click.option("--price", type=float, help="Single event: the price.")
@click.option("--category", help="Single event: the item's category.")
@click.option("--query", help="Single event: the search query.")
@click.option("--event-id", help="Single event: its id [default: cli-<nanoseconds>].")
@click.option("--file", type=click.Path(path_type=Path), help="Send a .jsonl or .csv file of events.")
@click.option("--dataset", type=click.Path(path_type=Path), help="Send a dataset file (needs --format).")
@click.option("--format", type=click.Choice(FORMATS), help="Format of --dataset (or of --file, over its extension).")
@click.option("--skip-bad", is_flag=True, help="Skip (count and log) bad lines instead of stopping at the first.")
@click.option("--synthetic", is_flag=True, help="Send events of a seeded synthetic shop.")
@click.option("--users", type=click.IntRange(min=1), help=f"Synthetic: users [default: {SYNTHETIC_DEFAULTS['users']}].")
@click.option("--items", type=click.IntRange(min=1), help=f"Synthetic: items [default: {SYNTHETIC_DEFAULTS['items']}].")
@click.option("--events", type=click.IntRange(min=0),
              help=f"Synthetic: events [default: {SYNTHETIC_DEFAULTS['events']}].")
@click.option("--seed", type=int, help=f"Synthetic: random seed [default: {SYNTHETIC_DEFAULTS['seed']}].")
@click.option("--start-ts", type=click.FloatRange(min=0), help="Synthetic: time of the first event [default: so the last is about now].")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Events per second [default: as fast as possible].")
@click.option("--limit", type=click.IntRange(min=0), help="Send at most this many events.")
@click.option("--topic", help="Topic to send to [default: settings kafka.events_topic].")
@click.option("--bootstrap", help="Kafka bootstrap servers [default: settings kafka.bootstrap].")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--dry-run", is_flag=True, help="Read and validate the events, send nothing (no Kafka needed).")
@click.option("--json", is_flag=True, help="Print the summary as JSON.")
def produce(**options: object) -> None:
    """Send events to Kafka: one event, a file, a dataset or a synthetic shop."""
    mode = _choose_mode(options)
    limit = options.get("limit")
    limit = None if limit is None else int(limit)  # type: ignore[call-overload]
    if mode == "single":
        source = _Source(events=iter([_single_event(options)]), total=1)
    elif mode == "synthetic":
        source = _synthetic_source(options, limit)
    else:
        source = _file_source(options, limit)
    kafka = get_settings().kafka
    topic = str(options.get("topic") or kafka.events_topic)
    bootstrap = str(options.get("bootstrap") or kafka.bootstrap)
    rate = options.get("rate")
    dry_run = bool(options.get("dry_run"))
    try:
        replayed = _send(source, topic=topic, bootstrap=bootstrap, rate=None if rate is None else float(rate),  # type: ignore[arg-type]
                         progress=not options.get("no_progress"), dry_run=dry_run)
    except BadHeader as exc:
        raise click.ClickException(f"{exc}\n(is --format right? the formats are {', '.join(FORMATS)})") from None
    except BadLine as exc:
        raise click.ClickException(f"{exc}\n(--skip-bad skips bad lines and counts them)") from None
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(_summary(source.stats, replayed, topic=topic, bootstrap=bootstrap, dry_run=dry_run,
                        as_json=bool(options.get("json"))))
