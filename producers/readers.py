"""Read behaviour logs from files into contract :class:`~streamrec.contract.Event` objects.

Every reader is a generator that streams the file line by line (gzip-compressed files
ending in ``.gz`` are read transparently), so a 100M-line Taobao log never sits in memory;
only ``sort_by_time=True`` (the default for RetailRocket, which is not sorted) collects the
events first.

Event ids are deterministic, ``"<format>:<file name>:<line number>"`` (plus ``:<position>``
for Amazon sequences), so replaying the same file twice sends the same ids and downstream
de-duplication can recognise them.

A line that cannot be read raises :class:`BadLine` (a :class:`ValueError` naming the file
and the line number), unless ``skip_bad=True``: then it is counted in a :class:`ReadStats`
and logged, and reading goes on.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "log.csv"
>>> _ = path.write_text("1,42,7,pv,1511658000\\n1,43,7,buy,1511658060\\n")
>>> [(e.event_id, e.type) for e in read_events(path, "taobao")]
[('taobao:log.csv:1', 'view'), ('taobao:log.csv:2', 'purchase')]
"""

from __future__ import annotations

import csv
import gzip
import logging
import math
import operator
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

import orjson

from streamrec.contract import (
    OPTIONAL_FIELDS,
    REQUIRED_FIELDS,
    Event,
    InvalidEvent,
    event_from_dict,
)

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("taobao", "retailrocket", "amazon-seq", "yoochoose", "online-retail", "jsonl", "csv")

#: Synthetic event time of the first item of every Amazon sequence, in Unix seconds
#: (2017-07-14); item ``k`` of a user's sequence is stamped ``AMAZON_BASE_TS + k``.
AMAZON_BASE_TS = 1_500_000_000

TAOBAO_BEHAVIORS: dict[str, str] = {"pv": "view", "cart": "add_to_cart", "fav": "favorite", "buy": "purchase"}
RETAILROCKET_EVENTS: dict[str, str] = {"view": "view", "addtocart": "add_to_cart", "transaction": "purchase"}
RETAILROCKET_HEADER = ("timestamp", "visitorid", "event", "itemid", "transactionid")
YOOCHOOSE_HEADER = ("SessionId", "ItemId", "Time")
ONLINE_RETAIL_HEADER = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice",
                        "CustomerID", "Country")
#: Online Retail's ``InvoiceDate`` is UK local time.
ONLINE_RETAIL_TIMEZONE = "Europe/London"

#: How many bad lines per file are logged one by one before only the total is logged.
_LOGGED_BAD_LINES = 10
_BOM = b"\xef\xbb\xbf"
#: Longest file name used inside event ids (the contract caps strings at 256 characters).
_MAX_NAME_IN_ID = 160


class BadLine(ValueError):
    """A line of an input file that cannot be turned into an event."""

    def __init__(self, path: Path, line_number: int, reason: str) -> None:
        super().__init__(f"{path}, line {line_number}: {reason}")
        self.path = path
        self.line_number = line_number
        self.reason = reason


class BadHeader(BadLine):
    """The header line is not the one the format needs (never skipped by ``skip_bad``)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(path, 1, reason)


@dataclass
class ReadStats:
    """Counters a reader fills in while it runs (pass one in to read them afterwards)."""

    lines: int = 0
    events: int = 0
    skipped: int = 0
    #: The first few bad lines' messages, for reports.
    errors: list[str] = field(default_factory=list)
    #: Good lines that are deliberately not events, by reason (e.g. Online Retail's
    #: ``guest`` checkouts and ``cancellation`` lines).
    dropped: dict[str, int] = field(default_factory=dict)


class _LineError(Exception):
    """Raised by a line parser; the reader adds the file name and line number."""


# --------------------------------------------------------------------------- helpers


def open_binary(path: Path) -> IO[bytes]:
    """The file's bytes, gunzipped when its name ends in ``.gz``."""
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")  # noqa: SIM115 - returned to a with-statement


def utf8_lines(handle: IO[bytes], bad_utf8: dict[int, str]) -> Iterator[str]:
    """The lines of a binary file as text, without a leading byte-order mark; a line that is
    not valid UTF-8 is decoded with replacement characters and noted in ``bad_utf8`` (by line
    number), for a CSV reader to reject once it knows the line."""
    for line_number, raw in enumerate(handle, start=1):
        if line_number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM):]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad_utf8[line_number] = f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
            yield raw.decode("utf-8", "replace")


def online_retail_timestamp(text: str) -> float:
    """An Online Retail ``InvoiceDate`` (``YYYY-MM-DD HH:MM:SS``, UK local time: GMT in winter,
    BST in summer) as Unix seconds; ValueError for anything else.

    >>> online_retail_timestamp("2010-12-01 08:26:00"), online_retail_timestamp("2011-06-01 08:26:00")
    (1291191960.0, 1306913160.0)
    """
    try:
        local = datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise ValueError(f"InvoiceDate {text!r} is not a date like 2010-12-01 08:26:00") from None
    return local.replace(tzinfo=ZoneInfo(ONLINE_RETAIL_TIMEZONE)).timestamp()


def _id_prefix(fmt: str, path: Path) -> str:
    return f"{fmt}:{path.name[:_MAX_NAME_IN_ID]}"


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise _LineError(f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None


def _timestamp(text: str, *, per_second: float = 1.0) -> float:
    try:
        ts = float(text) / per_second  # divide, don't multiply by 0.001: 1433221999827 ms -> 1433221999.827 exactly
    except ValueError:
        raise _LineError(f"timestamp {text!r} is not a number") from None
    if not math.isfinite(ts) or ts < 0:
        raise _LineError(f"timestamp {text!r} must be a finite number >= 0")
    return ts


def _require(value: str, name: str) -> str:
    if not value.strip():
        raise _LineError(f"{name} is empty")
    return value


def _record_bad(error: BadLine, stats: ReadStats, skip_bad: bool) -> None:
    if not skip_bad:
        raise error
    stats.skipped += 1
    if len(stats.errors) < _LOGGED_BAD_LINES:
        stats.errors.append(str(error))
        logger.warning("skipping bad line: %s", error)
    else:
        logger.debug("skipping bad line: %s", error)


def _finish(path: Path, stats: ReadStats) -> None:
    if stats.skipped:
        logger.warning("skipped %d bad line(s) of %d in %s", stats.skipped, stats.lines, path)


LineParser = Callable[[str, int], Event]


def _read_lines(
    path: Path,
    parse: LineParser,
    *,
    header: tuple[str, ...] | None,
    separator: str,
    limit: int | None,
    skip_bad: bool,
    stats: ReadStats | None,
) -> Iterator[Event]:
    """The shared loop of the one-event-per-line formats: decode, parse, count, stop at limit."""
    _check_limit(limit)
    stats = ReadStats() if stats is None else stats
    if limit == 0:
        return
    with open_binary(path) as handle:
        line_number = 0
        if header is not None:
            line_number = 1
            first = handle.readline()
            stats.lines += 1
            if not first:
                raise BadHeader(path, f"the file is empty; expected the header {separator.join(header)!r}")
            found = tuple(first.decode("utf-8-sig", "replace").rstrip("\r\n").split(separator))
            if found != header:
                raise BadHeader(path, f"expected the header {separator.join(header)!r}, found {separator.join(found)!r}")
        for raw in handle:
            line_number += 1
            stats.lines += 1
            if line_number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            try:
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError:
                    line = _decode(raw)  # raises with the reason
                if not line or line.isspace():
                    continue
                event = parse(line, line_number)
            except _LineError as exc:
                _record_bad(BadLine(path, line_number, str(exc)), stats, skip_bad)
                continue
            stats.events += 1
            yield event
            if limit is not None and stats.events >= limit:
                break
    _finish(path, stats)


def sorted_by_time(events: Iterable[Event], *, limit: int | None = None) -> Iterator[Event]:
    """Collect ``events`` and yield them by event time (stable: ties keep file order)."""
    _check_limit(limit)
    ordered = sorted(events, key=operator.attrgetter("ts"))
    yield from ordered if limit is None else ordered[:limit]


# --------------------------------------------------------------------------- formats


def read_taobao(
    path: str | Path, *, limit: int | None = None, skip_bad: bool = False, stats: ReadStats | None = None
) -> Iterator[Event]:
    """Alibaba Taobao UserBehavior: ``user_id,item_id,category_id,behavior,unix_ts``, no header."""
    path = Path(path)
    prefix = _id_prefix("taobao", path)

    def parse(line: str, line_number: int) -> Event:
        fields = line.split(",")
        if len(fields) != 5:
            raise _LineError(
                f"expected 5 comma-separated fields (user_id,item_id,category_id,behavior,unix_ts), got {len(fields)}"
            )
        user_id, item_id, category_id, behavior, ts_text = fields
        kind = TAOBAO_BEHAVIORS.get(behavior)
        if kind is None:
            raise _LineError(f"unknown behavior {behavior!r}; expected one of {', '.join(TAOBAO_BEHAVIORS)}")
        # The hot path of 100M-line logs: inline checks, helpers only to phrase the error.
        try:
            ts = float(ts_text)
        except ValueError:
            ts = math.nan
        if not 0.0 <= ts < math.inf:
            _timestamp(ts_text)
        if not user_id.strip() or not item_id.strip():
            _require(user_id, "user_id")
            _require(item_id, "item_id")
        return Event(f"{prefix}:{line_number}", user_id, item_id, kind, ts, None, None, category_id or None)

    return _read_lines(path, parse, header=None, separator=",", limit=limit, skip_bad=skip_bad, stats=stats)


def read_retailrocket(
    path: str | Path,
    *,
    sort_by_time: bool = True,
    limit: int | None = None,
    skip_bad: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[Event]:
    """RetailRocket ``events.csv``: ``timestamp,visitorid,event,itemid,transactionid`` (ms).

    The file is not in time order; ``sort_by_time=True`` (default) reads it all and sorts
    by timestamp in memory (stable), ``False`` streams it in file order.
    """
    path = Path(path)
    prefix = _id_prefix("retailrocket", path)

    def parse(line: str, line_number: int) -> Event:
        fields = line.split(",")
        if len(fields) != 5:
            raise _LineError(
                f"expected 5 comma-separated fields (timestamp,visitorid,event,itemid,transactionid), got {len(fields)}"
            )
        ts, visitor_id, name, item_id, _transaction_id = fields
        kind = RETAILROCKET_EVENTS.get(name)
        if kind is None:
            raise _LineError(f"unknown event {name!r}; expected one of {', '.join(RETAILROCKET_EVENTS)}")
        return Event(
            f"{prefix}:{line_number}",
            _require(visitor_id, "visitorid"),
            _require(item_id, "itemid"),
            kind,
            _timestamp(ts, per_second=1000.0),
        )

    if not sort_by_time:
        return _read_lines(
            path, parse, header=RETAILROCKET_HEADER, separator=",", limit=limit, skip_bad=skip_bad, stats=stats
        )
    events = _read_lines(path, parse, header=RETAILROCKET_HEADER, separator=",", limit=None, skip_bad=skip_bad, stats=stats)
    return sorted_by_time(events, limit=limit)


def _parse_sequence(line: str) -> tuple[str, list[str]]:
    user_id, *items = line.split()
    if not items:
        raise _LineError(f"user {user_id!r} has no items; expected 'user_id item_1 item_2 ...'")
    return user_id, items


def read_amazon_seq(
    path: str | Path,
    *,
    base_ts: float = AMAZON_BASE_TS,
    limit: int | None = None,
    skip_bad: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[Event]:
    """Amazon review sequences (``Beauty.txt``): ``user_id item_1 item_2 ...`` per line.

    Items are in the user's chronological order but carry no timestamps: every event is a
    ``purchase`` (a review of a bought item) stamped ``base_ts + position`` seconds, and the
    users come one after another in file order. ``stats.events`` counts events, not users.
    """
    path = Path(path)
    _check_limit(limit)
    stats = ReadStats() if stats is None else stats
    prefix = _id_prefix("amazon-seq", path)
    if limit == 0:
        return
    with open_binary(path) as handle:
        for line_number, raw in enumerate(handle, start=1):
            stats.lines += 1
            try:
                line = _decode(raw)
                if not line.strip():
                    continue
                user_id, items = _parse_sequence(line)
            except _LineError as exc:
                _record_bad(BadLine(path, line_number, str(exc)), stats, skip_bad)
                continue
            for position, item_id in enumerate(items):
                stats.events += 1
                yield Event(f"{prefix}:{line_number}:{position}", user_id, item_id, "purchase", float(base_ts + position))
                if limit is not None and stats.events >= limit:
                    _finish(path, stats)
                    return
    _finish(path, stats)


def read_sequences(path: str | Path) -> dict[str, list[str]]:
    """Read an Amazon sequence file into ``{user_id: [item_id, ...]}`` in file order.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "Beauty.txt"
    >>> _ = path.write_text("1 10 11\\n2 11 12 13\\n")
    >>> read_sequences(path)
    {'1': ['10', '11'], '2': ['11', '12', '13']}
    """
    path = Path(path)
    sequences: dict[str, list[str]] = {}
    with open_binary(path) as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = _decode(raw)
                if not line.strip():
                    continue
                user_id, items = _parse_sequence(line)
            except _LineError as exc:
                raise BadLine(path, line_number, str(exc)) from None
            if user_id in sequences:
                raise BadLine(path, line_number, f"user {user_id!r} already has a sequence on an earlier line")
            sequences[user_id] = items
    return sequences


def read_yoochoose(
    path: str | Path, *, limit: int | None = None, skip_bad: bool = False, stats: ReadStats | None = None
) -> Iterator[Event]:
    """YooChoose clicks (session-rec ``prepared`` files): tab-separated ``SessionId ItemId Time``.

    Sessions are anonymous, so the session is the user: ``user_id == session_id``; every
    event is a ``click``. The file is grouped by session, not sorted by time.
    """
    path = Path(path)
    prefix = _id_prefix("yoochoose", path)

    def parse(line: str, line_number: int) -> Event:
        fields = line.split("\t")
        if len(fields) != 3:
            raise _LineError(f"expected 3 tab-separated fields (SessionId, ItemId, Time), got {len(fields)}")
        session_id, item_id, ts = fields
        _require(session_id, "SessionId")
        return Event(f"{prefix}:{line_number}", session_id, _require(item_id, "ItemId"), "click", _timestamp(ts), session_id)

    return _read_lines(path, parse, header=YOOCHOOSE_HEADER, separator="\t", limit=limit, skip_bad=skip_bad, stats=stats)


def _read_csv_rows(
    path: Path,
    parse: Callable[[list[str], int], Event | None],
    check_header: Callable[[list[str]], None],
    *,
    limit: int | None,
    skip_bad: bool,
    stats: ReadStats,
    empty: str,
) -> Iterator[Event]:
    """The events of a CSV file with a header: ``check_header`` raises :class:`BadHeader`;
    ``parse`` turns a row into an event (None: not an event) or raises ``_LineError``; a row
    that is not valid CSV or UTF-8 is a bad line."""
    bad_utf8: dict[int, str] = {}
    with open_binary(path) as handle:
        rows = csv.reader(utf8_lines(handle, bad_utf8))
        try:
            header = next(rows)
        except StopIteration:
            raise BadHeader(path, empty) from None
        stats.lines = rows.line_num
        check_header(header)
        while True:
            try:
                row = next(rows)
            except StopIteration:
                break
            except csv.Error as exc:
                _record_bad(BadLine(path, rows.line_num, f"not valid CSV ({exc})"), stats, skip_bad)
                continue
            line_number = rows.line_num
            stats.lines = line_number
            if not row:
                continue
            try:
                if line_number in bad_utf8:
                    raise _LineError(bad_utf8.pop(line_number))
                event = parse(row, line_number)
            except _LineError as exc:
                _record_bad(BadLine(path, line_number, str(exc)), stats, skip_bad)
                continue
            if event is None:
                continue
            stats.events += 1
            yield event
            if limit is not None and stats.events >= limit:
                break


def read_online_retail(
    path: str | Path, *, limit: int | None = None, skip_bad: bool = False, stats: ReadStats | None = None,
    guests: bool = False,
) -> Iterator[Event]:
    """UCI Online Retail (gzip) CSV: ``InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country``.

    One ``purchase`` per line of a known customer: ``user_id`` is ``CustomerID`` without the
    file's trailing ``.0``, ``item_id`` the ``StockCode`` exactly as written, ``price`` the
    ``UnitPrice``, ``quantity`` the ``Quantity``, ``ts`` the ``InvoiceDate`` read as UK local
    time (Europe/London, so summer time is honoured). Guest lines (no ``CustomerID``),
    cancellations (``InvoiceNo`` starting with ``C``) and stock adjustments (a ``Quantity`` of
    zero or less on another invoice) are not events: they are counted in ``stats.dropped``
    (``guest``, ``cancellation``, ``adjustment``; with ``guests`` also the two ``A`` invoices
    "Adjust bad debt" of a negative price). With ``guests`` a guest line is a purchase
    too, by the user ``guest:<InvoiceNo>`` (demand counts every sale; a recommender has no
    use for a one-invoice user). Descriptions may hold quoted commas, so the line is read as CSV.
    """
    path = Path(path)
    _check_limit(limit)
    stats = ReadStats() if stats is None else stats
    prefix = _id_prefix("online-retail", path)
    times: dict[str, float] = {}  # a whole invoice shares one InvoiceDate
    if limit == 0:
        return

    def timestamp(text: str) -> float:
        ts = times.get(text)
        if ts is None:
            try:
                ts = online_retail_timestamp(text)
            except ValueError as exc:
                raise _LineError(str(exc)) from None
            if len(times) > 100_000:
                times.clear()
            times[text] = ts
        return ts

    def parse(fields: list[str], line_number: int) -> Event | None:
        if len(fields) != len(ONLINE_RETAIL_HEADER):
            raise _LineError(f"expected {len(ONLINE_RETAIL_HEADER)} comma-separated fields "
                             f"({','.join(ONLINE_RETAIL_HEADER)}), got {len(fields)}")
        invoice, stock_code, _description, quantity_text, date, unit_price, customer, _country = fields
        if invoice.startswith("C"):
            stats.dropped["cancellation"] = stats.dropped.get("cancellation", 0) + 1
            return None
        customer = customer.strip()
        if not customer and not guests:
            stats.dropped["guest"] = stats.dropped.get("guest", 0) + 1
            return None
        try:
            quantity = float(quantity_text)
        except ValueError:
            raise _LineError(f"Quantity {quantity_text!r} is not a number") from None
        if not math.isfinite(quantity):
            raise _LineError(f"Quantity {quantity_text!r} must be a finite number")
        if quantity <= 0:
            stats.dropped["adjustment"] = stats.dropped.get("adjustment", 0) + 1
            return None
        if not customer:
            customer = f"guest:{invoice}"
        elif customer.endswith(".0"):
            customer = customer[:-2]
        _require(stock_code, "StockCode")
        try:
            price = float(unit_price)
        except ValueError:
            raise _LineError(f"UnitPrice {unit_price!r} is not a number") from None
        if guests and invoice.startswith("A") and price < 0:  # "Adjust bad debt": bookkeeping, not a sale
            stats.dropped["adjustment"] = stats.dropped.get("adjustment", 0) + 1
            return None
        if not 0.0 <= price < math.inf:
            raise _LineError(f"UnitPrice {unit_price!r} must be a finite number >= 0")
        return Event(f"{prefix}:{line_number}", customer, stock_code, "purchase", timestamp(date), None, price,
                     quantity=quantity)

    def check_header(header: list[str]) -> None:
        if tuple(name.strip() for name in header) != ONLINE_RETAIL_HEADER:
            raise BadHeader(path, f"expected the header {','.join(ONLINE_RETAIL_HEADER)!r}, found {','.join(header)!r}")

    yield from _read_csv_rows(path, parse, check_header, limit=limit, skip_bad=skip_bad, stats=stats,
                              empty=f"the file is empty; expected the header {','.join(ONLINE_RETAIL_HEADER)!r}")
    if stats.dropped:
        logger.info("%s: not events: %s", path, ", ".join(f"{n:,} {why}" for why, n in sorted(stats.dropped.items())))
    _finish(path, stats)


def _validated(payload: dict[str, Any], default_id: str) -> Event:
    if payload.get("event_id") in (None, ""):
        payload["event_id"] = default_id
    try:
        return event_from_dict(payload)
    except InvalidEvent as exc:
        raise _LineError(f"not a valid event ({exc})") from None


def read_jsonl(
    path: str | Path, *, limit: int | None = None, skip_bad: bool = False, stats: ReadStats | None = None
) -> Iterator[Event]:
    """One event JSON object per line, validated by the contract (``event_from_dict``).

    An object without ``event_id`` gets the deterministic ``"jsonl:<file>:<line>"``.
    """
    path = Path(path)
    prefix = _id_prefix("jsonl", path)

    def parse(line: str, line_number: int) -> Event:
        try:
            payload = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise _LineError(f"not valid JSON ({exc})") from None
        if not isinstance(payload, dict):
            raise _LineError(f"expected a JSON object, got {type(payload).__name__}")
        return _validated(payload, f"{prefix}:{line_number}")

    return _read_lines(path, parse, header=None, separator="", limit=limit, skip_bad=skip_bad, stats=stats)


_CSV_FIELDS = frozenset(REQUIRED_FIELDS + OPTIONAL_FIELDS)
_CSV_NUMBERS = frozenset({"ts", "price", "quantity"})


def _csv_header(path: Path, header: list[str]) -> list[str]:
    names = [name.strip() for name in header]
    unknown = [name for name in names if name not in _CSV_FIELDS]
    if unknown:
        raise BadHeader(path, f"unknown column(s) {', '.join(unknown)}; the columns are {', '.join(REQUIRED_FIELDS + OPTIONAL_FIELDS)}")
    missing = [name for name in REQUIRED_FIELDS if name != "event_id" and name not in names]
    if missing:
        raise BadHeader(path, f"missing column(s) {', '.join(missing)}; the header must name the contract's fields")
    if len(set(names)) != len(names):
        raise BadHeader(path, "a column is named twice in the header")
    return names


def _csv_payload(names: list[str], row: list[str]) -> dict[str, Any]:
    if len(row) != len(names):
        raise _LineError(f"expected {len(names)} fields like the header, got {len(row)}")
    payload: dict[str, Any] = {}
    for name, text in zip(names, row):
        if text == "":
            continue  # an empty cell is an absent optional field
        if name in _CSV_NUMBERS:
            try:
                payload[name] = float(text)
            except ValueError:
                raise _LineError(f"{name} {text!r} is not a number") from None
        else:
            payload[name] = text
    return payload


def read_csv(
    path: str | Path, *, limit: int | None = None, skip_bad: bool = False, stats: ReadStats | None = None
) -> Iterator[Event]:
    """CSV with a header naming the contract's fields (``event_id,user_id,item_id,type,ts`` and
    optionally ``session_id,price,category,query``, in any order); empty cells are absent
    optional fields; a missing ``event_id`` column or cell gets ``"csv:<file>:<line>"``.
    """
    path = Path(path)
    _check_limit(limit)
    stats = ReadStats() if stats is None else stats
    prefix = _id_prefix("csv", path)
    if limit == 0:
        return
    names: list[str] = []

    def check_header(header: list[str]) -> None:
        names[:] = _csv_header(path, header)

    def parse(row: list[str], line_number: int) -> Event:
        return _validated(_csv_payload(names, row), f"{prefix}:{line_number}")

    yield from _read_csv_rows(path, parse, check_header, limit=limit, skip_bad=skip_bad, stats=stats,
                              empty="the file is empty; expected a header naming the contract's fields")
    _finish(path, stats)


# --------------------------------------------------------------------------- dispatch

_READERS: dict[str, Callable[..., Iterator[Event]]] = {
    "taobao": read_taobao,
    "retailrocket": read_retailrocket,
    "amazon-seq": read_amazon_seq,
    "yoochoose": read_yoochoose,
    "online-retail": read_online_retail,
    "jsonl": read_jsonl,
    "csv": read_csv,
}

_EXTENSIONS: dict[str, str] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


def format_from_extension(path: str | Path) -> str | None:
    """``jsonl`` or ``csv`` from a file name (``.jsonl``, ``.ndjson``, ``.csv``, also ``.gz``), else None."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return _EXTENSIONS.get(suffixes[-1]) if suffixes else None


def read_events(
    path: str | Path,
    fmt: str,
    *,
    limit: int | None = None,
    skip_bad: bool = False,
    sort_by_time: bool | None = None,
    stats: ReadStats | None = None,
) -> Iterator[Event]:
    """Read ``path`` in format ``fmt`` (one of :data:`FORMATS`) as a stream of events.

    ``sort_by_time``: None keeps each format's default (RetailRocket sorted, the rest in
    file order); True collects and sorts any format by ``ts`` (stable); False keeps file order.
    Raises :class:`FileNotFoundError` for a missing file, :class:`ValueError` for an
    unknown format, :class:`BadLine` for a bad line unless ``skip_bad``.
    """
    reader = _READERS.get(fmt)
    if reader is None:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    _check_limit(limit)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if fmt == "retailrocket":
        return read_retailrocket(path, sort_by_time=sort_by_time is not False, limit=limit, skip_bad=skip_bad, stats=stats)
    if sort_by_time:
        return sorted_by_time(reader(path, skip_bad=skip_bad, stats=stats), limit=limit)
    return reader(path, limit=limit, skip_bad=skip_bad, stats=stats)
