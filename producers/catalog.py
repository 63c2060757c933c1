"""Read product catalogs from files into contract :class:`~streamrec.contract.CatalogItem` records.

Pure readers, no Kafka: each returns an iterator of items (files ending in ``.gz`` are read
transparently). Three formats (:data:`CATALOG_FORMATS`):

``jsonl``
    One catalog record per line, exactly as the contract accepts it
    (``docs/schemas/catalog-item.schema.json``), validated by ``catalog_item_from_dict``.

``amazon-attributes``
    The S3-Rec ``*_item2attributes.json`` of the Amazon review datasets: one JSON object
    ``{"<item_id>": [<attribute id>, ...]}``. The item ids are the same strings as in the
    sequence file (``Beauty.txt``), which the ``amazon-seq`` event reader passes through
    unchanged, so catalog ids and event ids match. The attribute ids are anonymous integers
    (the preprocessing mapped the original category and brand names to numbers and did not
    keep the names, nor which id is a brand), so no title, brand or category path can be
    derived honestly: ``category`` stays empty and every attribute id becomes one entry of
    ``attributes``, ``{"attr:<id>": "1"}``: two items share an attribute whatever its place in
    their lists (what new items' catalog priors match on; the place in the list carried no
    signal on a validation split, docs/lifecycle.md).

``online-retail``
    The UCI Online Retail transaction log (gzip CSV with the header
    ``InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country``),
    folded into one record per ``StockCode`` (the id used as is, like the shop's events):
    ``title`` is its most frequent non-empty ``Description`` (trimmed; ties go to the one seen
    first), ``price`` its most recent positive ``UnitPrice`` (absent if it never had one),
    ``currency`` GBP, ``updated_at`` its last ``InvoiceDate`` (UK local time, converted to Unix
    seconds), ``available`` true. Non-product codes (``POST``, ``M``, ``D``, ``BANK CHARGES``...)
    are stock codes of the log too and are kept. Items come in order of first appearance.

A record that cannot be read raises :class:`~producers.readers.BadLine` (naming the file and
the line) or :class:`BadItem` (naming the entry of a JSON object), unless ``skip_bad=True``:
then it is counted in a :class:`CatalogStats`, logged, and reading goes on. A file that is not
of its format at all raises :class:`~producers.readers.BadHeader` or :class:`BadCatalogFile`,
never skipped.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "Beauty_item2attributes.json"
>>> _ = path.write_text('{"4": [1, 2, 3], "83": [4]}')
>>> catalog_format_from_name(path)
'amazon-attributes'
>>> [(item.item_id, item.attributes) for item in read_catalog(path, "amazon-attributes")]
[('4', {'attr:1': '1', 'attr:2': '1', 'attr:3': '1'}), ('83', {'attr:4': '1'})]
"""

from __future__ import annotations

import csv
import io
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from producers.readers import ONLINE_RETAIL_HEADER, BadHeader, BadLine, online_retail_timestamp, open_binary
from streamrec.contract import CatalogItem, InvalidCatalogItem, catalog_item_from_dict, encode_catalog_item

logger = logging.getLogger(__name__)

CATALOG_FORMATS: tuple[str, ...] = ("jsonl", "amazon-attributes", "online-retail")

ONLINE_RETAIL_CURRENCY = "GBP"

#: How many bad records per file are logged one by one before only the total is logged.
_LOGGED_BAD_RECORDS = 10
_BOM = b"\xef\xbb\xbf"


class BadItem(ValueError):
    """One entry of a JSON-object catalog (``amazon-attributes``) that cannot be turned into an item."""

    def __init__(self, path: Path, item_id: str, reason: str) -> None:
        super().__init__(f"{path}, item {item_id!r}: {reason}")
        self.path = path
        self.item_id = item_id
        self.reason = reason


class BadCatalogFile(ValueError):
    """The file as a whole is not of its format (never skipped by ``skip_bad``)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass
class CatalogStats:
    """Counters a reader fills in while it runs (pass one in to read them afterwards)."""

    #: Lines (``jsonl``, ``online-retail``) or object entries (``amazon-attributes``) read.
    records: int = 0
    items: int = 0
    skipped: int = 0
    #: The first few bad records' messages, for reports.
    errors: list[str] = field(default_factory=list)


class _RecordError(Exception):
    """Raised by a record parser; the reader adds the file and the line or entry."""


# --------------------------------------------------------------------------- helpers


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")


def _record_bad(error: ValueError, stats: CatalogStats, skip_bad: bool) -> None:
    if not skip_bad:
        raise error
    stats.skipped += 1
    if len(stats.errors) < _LOGGED_BAD_RECORDS:
        stats.errors.append(str(error))
        logger.warning("skipping bad catalog record: %s", error)
    else:
        logger.debug("skipping bad catalog record: %s", error)


def _finish(path: Path, stats: CatalogStats) -> None:
    if stats.skipped:
        logger.warning("skipped %d bad record(s) of %d in %s", stats.skipped, stats.records, path)


def _item(payload: dict[str, Any]) -> CatalogItem:
    """Validate by the contract, including the encoded size the items topic accepts."""
    try:
        item = catalog_item_from_dict(payload)
        encode_catalog_item(item)
    except InvalidCatalogItem as exc:
        raise _RecordError(f"not a valid catalog record ({exc})") from None
    return item


def _limited(items: Iterator[CatalogItem], limit: int | None, stats: CatalogStats) -> Iterator[CatalogItem]:
    for item in items:
        stats.items += 1
        yield item
        if limit is not None and stats.items >= limit:
            return


# --------------------------------------------------------------------------- formats


def read_catalog_jsonl(
    path: str | Path, *, limit: int | None = None, skip_bad: bool = False, stats: CatalogStats | None = None
) -> Iterator[CatalogItem]:
    """One catalog record (a JSON object) per line; blank lines are ignored.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "items.jsonl"
    >>> _ = path.write_text('{"item_id": "sku-1", "price": 9.5}\\n{"item_id": ""}\\n')
    >>> stats = CatalogStats()
    >>> [item.item_id for item in read_catalog_jsonl(path, skip_bad=True, stats=stats)], stats.skipped
    (['sku-1'], 1)
    """
    path = Path(path)
    _check_limit(limit)
    stats = CatalogStats() if stats is None else stats
    if limit == 0:
        return

    def parse(raw: bytes) -> CatalogItem | None:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _RecordError(f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        if not line.strip():
            return None
        try:
            payload = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise _RecordError(f"not valid JSON ({exc})") from None
        if not isinstance(payload, dict):
            raise _RecordError(f"expected a JSON object, got {type(payload).__name__}")
        return _item(payload)

    def items() -> Iterator[CatalogItem]:
        with open_binary(path) as handle:
            for line_number, raw in enumerate(handle, start=1):
                stats.records += 1
                if line_number == 1 and raw.startswith(_BOM):
                    raw = raw[len(_BOM):]
                try:
                    item = parse(raw)
                except _RecordError as exc:
                    _record_bad(BadLine(path, line_number, str(exc)), stats, skip_bad)
                    continue
                if item is not None:
                    yield item

    yield from _limited(items(), limit, stats)
    _finish(path, stats)


def amazon_attributes_item(item_id: str, attribute_ids: Any) -> CatalogItem:
    """The catalog record of one entry of an Amazon ``item2attributes`` object.

    >>> amazon_attributes_item("214", [11, 8, 9, 12]).attributes
    {'attr:11': '1', 'attr:8': '1', 'attr:9': '1', 'attr:12': '1'}
    """
    if not isinstance(attribute_ids, list):
        raise _RecordError(f"expected a list of attribute ids, got {type(attribute_ids).__name__}")
    attributes: dict[str, str] = {}
    for attribute_id in attribute_ids:
        if isinstance(attribute_id, bool) or not isinstance(attribute_id, (int, str)):
            raise _RecordError(f"attribute ids must be integers, got {attribute_id!r}")
        attributes[f"attr:{attribute_id}"] = "1"
    return _item({"item_id": item_id, "attributes": attributes})


def read_amazon_attributes(
    path: str | Path, *, limit: int | None = None, skip_bad: bool = False, stats: CatalogStats | None = None
) -> Iterator[CatalogItem]:
    """Amazon ``*_item2attributes.json``: ``{"<item_id>": [<attribute id>, ...], ...}`` (read whole;
    the files are a few hundred kB). See the module docstring for the records built."""
    path = Path(path)
    _check_limit(limit)
    stats = CatalogStats() if stats is None else stats
    if limit == 0:
        return
    with open_binary(path) as handle:
        text = handle.read()
    try:
        payload = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadCatalogFile(path, f"not valid JSON ({exc}); expected one object of item_id -> attribute ids") from None
    if not isinstance(payload, dict):
        raise BadCatalogFile(path, f"expected one JSON object of item_id -> attribute ids, got {type(payload).__name__}")

    def items() -> Iterator[CatalogItem]:
        for item_id, attribute_ids in payload.items():
            stats.records += 1
            try:
                item = amazon_attributes_item(item_id, attribute_ids)
            except _RecordError as exc:
                _record_bad(BadItem(path, item_id, str(exc)), stats, skip_bad)
                continue
            yield item

    yield from _limited(items(), limit, stats)
    _finish(path, stats)


@dataclass
class _Product:
    """What the log says about one stock code so far."""

    titles: Counter[str] = field(default_factory=Counter)
    price: float | None = None
    price_at: float = -1.0
    last_seen: float = -1.0

    def to_item(self, stock_code: str) -> dict[str, Any]:
        title = self.titles.most_common(1)[0][0] if self.titles else None  # ties: first seen
        payload: dict[str, Any] = {"item_id": stock_code, "title": title, "price": self.price,
                                   "currency": ONLINE_RETAIL_CURRENCY, "available": True,
                                   "updated_at": self.last_seen}
        return {name: value for name, value in payload.items() if value is not None}


def _online_retail_line(fields: list[str]) -> tuple[str, str, float, float]:
    if len(fields) != len(ONLINE_RETAIL_HEADER):
        raise _RecordError(f"expected {len(ONLINE_RETAIL_HEADER)} fields like the header, got {len(fields)}")
    _invoice, stock_code, description, _quantity, date, unit_price, _customer, _country = fields
    if not stock_code.strip():
        raise _RecordError("StockCode is empty")
    try:
        price = float(unit_price)
    except ValueError:
        raise _RecordError(f"UnitPrice {unit_price!r} is not a number") from None
    try:
        updated_at = online_retail_timestamp(date)
    except ValueError as exc:
        raise _RecordError(str(exc)) from None
    return stock_code, description.strip(), price, updated_at


def read_online_retail(
    path: str | Path, *, limit: int | None = None, skip_bad: bool = False, stats: CatalogStats | None = None
) -> Iterator[CatalogItem]:
    """The Online Retail log folded into one record per ``StockCode`` (see the module docstring).

    The whole log is read before the first item comes out (a stock code's last line may be
    anywhere); ``stats.records`` counts the log's lines, ``stats.items`` the items yielded.
    """
    path = Path(path)
    _check_limit(limit)
    stats = CatalogStats() if stats is None else stats
    if limit == 0:
        return
    products: dict[str, _Product] = {}
    with open_binary(path) as handle:
        text = io.TextIOWrapper(handle, encoding="utf-8", errors="strict", newline="")
        rows = csv.reader(text)
        try:
            header = next(rows)
        except StopIteration:
            raise BadHeader(path, f"the file is empty; expected the header {','.join(ONLINE_RETAIL_HEADER)!r}") from None
        except UnicodeDecodeError as exc:
            raise BadHeader(path, f"not valid UTF-8 ({exc.reason}); is it the gzip CSV of the Online Retail log?") from None
        stats.records = 1
        if tuple(name.strip().lstrip("\ufeff") for name in header) != ONLINE_RETAIL_HEADER:
            raise BadHeader(path, f"expected the header {','.join(ONLINE_RETAIL_HEADER)!r}, found {','.join(header)!r}")
        while True:
            try:
                row = next(rows)
            except StopIteration:
                break
            except (csv.Error, UnicodeDecodeError) as exc:
                # a UTF-8 error leaves the decoder's position unknown: stop, skip_bad cannot help
                if isinstance(exc, UnicodeDecodeError):
                    raise BadLine(path, rows.line_num + 1, f"not valid UTF-8 ({exc.reason})") from None
                _record_bad(BadLine(path, rows.line_num, f"not valid CSV ({exc})"), stats, skip_bad)
                continue
            stats.records = rows.line_num
            if not row:
                continue
            try:
                stock_code, description, price, ts = _online_retail_line(row)
            except _RecordError as exc:
                _record_bad(BadLine(path, rows.line_num, str(exc)), stats, skip_bad)
                continue
            product = products.get(stock_code)
            if product is None:
                product = products[stock_code] = _Product()
            if description:
                product.titles[description] += 1
            if price > 0 and ts >= product.price_at:
                product.price, product.price_at = price, ts
            product.last_seen = max(product.last_seen, ts)

    def items() -> Iterator[CatalogItem]:
        for stock_code, product in products.items():
            try:
                yield _item(product.to_item(stock_code))
            except _RecordError as exc:
                _record_bad(BadItem(path, stock_code, str(exc)), stats, skip_bad)

    yield from _limited(items(), limit, stats)
    _finish(path, stats)


# --------------------------------------------------------------------------- dispatch

_READERS: dict[str, Callable[..., Iterator[CatalogItem]]] = {
    "jsonl": read_catalog_jsonl,
    "amazon-attributes": read_amazon_attributes,
    "online-retail": read_online_retail,
}


def catalog_format_from_name(path: str | Path) -> str | None:
    """The catalog format a file name suggests, else None.

    >>> [catalog_format_from_name(name) for name in
    ...  ("items.jsonl", "items.ndjson.gz", "Beauty_item2attributes.json", "online-retail.csv.gz", "items.csv")]
    ['jsonl', 'jsonl', 'amazon-attributes', 'online-retail', None]
    """
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[: -len(".gz")]
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith("item2attributes.json"):
        return "amazon-attributes"
    if name.startswith("online-retail") and ".csv" in name:
        return "online-retail"
    return None


def read_catalog(
    path: str | Path, fmt: str, *, limit: int | None = None, skip_bad: bool = False, stats: CatalogStats | None = None
) -> Iterator[CatalogItem]:
    """Read ``path`` in catalog format ``fmt`` (one of :data:`CATALOG_FORMATS`) as a stream of items.

    Raises :class:`FileNotFoundError` for a missing file, :class:`ValueError` for an unknown
    format or a negative limit, :class:`~producers.readers.BadLine` or :class:`BadItem` for a
    bad record unless ``skip_bad``, :class:`~producers.readers.BadHeader` or
    :class:`BadCatalogFile` for a file that is not of the format.
    """
    reader = _READERS.get(fmt)
    if reader is None:
        raise ValueError(f"unknown catalog format {fmt!r}; choose one of {', '.join(CATALOG_FORMATS)}")
    _check_limit(limit)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    return reader(path, limit=limit, skip_bad=skip_bad, stats=stats)


def catalog_for(dataset: Path, fmt: str, catalog: Path | None = None) -> dict[str, CatalogItem] | None:
    """The catalog of a dataset: ``catalog`` if given (an Amazon ``*_item2attributes.json``),
    else found beside it (Online Retail: its own log; Amazon: ``<name>_item2attributes.json``),
    else the categories its events carry (Taobao's ``category_id``), else None."""
    from producers.readers import read_events

    if catalog is None:
        if fmt == "online-retail":
            catalog = dataset
        elif fmt == "amazon-seq" and dataset.with_name(f"{dataset.stem}_item2attributes.json").is_file():
            catalog = dataset.with_name(f"{dataset.stem}_item2attributes.json")
        else:  # each item's latest category in the events, where they name one
            categories = {event.item_id: event.category for event in read_events(dataset, fmt) if event.category}
            return {item_id: CatalogItem(item_id, category=(category,)) for item_id, category in categories.items()} or None
    catalog_format = catalog_format_from_name(catalog) or ("online-retail" if fmt == "online-retail" else None)
    if catalog_format is None:
        raise ValueError(f"cannot tell the catalog format of {catalog}")
    return {item.item_id: item for item in read_catalog(catalog, catalog_format, skip_bad=True)}
