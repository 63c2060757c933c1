"""Catalog readers on small files with known answers, and on the real datasets."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from producers.catalog import (
    CATALOG_FORMATS,
    BadCatalogFile,
    BadItem,
    CatalogStats,
    catalog_for,
    catalog_format_from_name,
    read_catalog,
)
from producers.readers import BadHeader, BadLine, online_retail_timestamp, read_events
from streamrec.config import get_settings
from streamrec.contract import CatalogItem


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- jsonl

JSONL = (
    '{"item_id": "sku-1", "title": "Rose cream", "category": ["Beauty", "Skin Care"], "price": 9.5, "currency": "GBP"}\n'
    "\n"
    '{"item_id": "sku-2", "available": false, "attributes": {"size": "50 ml"}}\n'
)


def test_jsonl_reads_validated_items(tmp_path: Path) -> None:
    stats = CatalogStats()
    items = list(read_catalog(write(tmp_path, "items.jsonl", JSONL), "jsonl", stats=stats))
    assert items == [
        CatalogItem("sku-1", title="Rose cream", category=("Beauty", "Skin Care"), price=9.5, currency="GBP"),
        CatalogItem("sku-2", available=False, attributes={"size": "50 ml"}),
    ]
    assert (stats.records, stats.items, stats.skipped) == (3, 2, 0)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"item_id": "sku-3", "price": -1}', "line 4: not a valid catalog record (bad_price: price must be >= 0, got -1.0)"),
        ('{"item_id": "sku-3", "colour": "red"}', "line 4: not a valid catalog record (unknown_field: unknown field(s): colour)"),
        ('{"item_id": "sku-3"', "line 4: not valid JSON"),
        ('["sku-3"]', "line 4: expected a JSON object, got list"),
    ],
)
def test_jsonl_bad_line_names_file_line_and_reason(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, "items.jsonl", JSONL + line + "\n")
    with pytest.raises(BadLine) as info:
        list(read_catalog(path, "jsonl"))
    assert str(info.value).startswith(f"{path}, {message}")
    assert info.value.line_number == 4
    stats = CatalogStats()
    assert [item.item_id for item in read_catalog(path, "jsonl", skip_bad=True, stats=stats)] == ["sku-1", "sku-2"]
    assert stats.skipped == 1 and stats.errors[0].startswith(f"{path}, line 4")


def test_jsonl_refuses_records_too_large_for_the_topic_and_bad_utf8(tmp_path: Path) -> None:
    escaped_nul = "\\u0000" * 256  # 6 bytes each once encoded: 64 of them overflow 64 KiB
    big = '{"item_id": "big", "attributes": {' + ", ".join(f'"a{i}": "{escaped_nul}"' for i in range(64)) + "}}"
    path = write(tmp_path, "items.jsonl", big + "\n")
    with pytest.raises(BadLine, match="line 1: not a valid catalog record \\(payload_too_large"):
        list(read_catalog(path, "jsonl"))
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"item_id": "\xff"}\n')
    with pytest.raises(BadLine, match="line 1: not valid UTF-8"):
        list(read_catalog(path, "jsonl"))


def test_jsonl_limit_and_gzip(tmp_path: Path) -> None:
    path = write(tmp_path, "items.jsonl.gz", JSONL)
    assert [item.item_id for item in read_catalog(path, "jsonl", limit=1)] == ["sku-1"]
    assert list(read_catalog(path, "jsonl", limit=0)) == []
    with pytest.raises(ValueError, match="limit must be >= 0"):
        read_catalog(path, "jsonl", limit=-1)


# --------------------------------------------------------------------------- amazon attributes


def test_amazon_attributes_become_an_attribute_map(tmp_path: Path) -> None:
    path = write(tmp_path, "Beauty_item2attributes.json", '{"4": [1, 2, 3], "83": [17, 4, 17], "9": []}')
    items = list(read_catalog(path, "amazon-attributes"))
    assert items == [
        CatalogItem("4", attributes={"attr:1": "1", "attr:2": "1", "attr:3": "1"}),
        CatalogItem("83", attributes={"attr:17": "1", "attr:4": "1"}),  # a repeated id is one attribute
        CatalogItem("9"),
    ]
    assert all(item.category == () and item.title is None for item in items)


def test_amazon_attributes_bad_entries_and_bad_files(tmp_path: Path) -> None:
    path = write(tmp_path, "x_item2attributes.json", '{"4": [1], "5": "nine", "": [2], "6": [true]}')
    with pytest.raises(BadItem) as info:
        list(read_catalog(path, "amazon-attributes"))
    assert str(info.value) == f"{path}, item '5': expected a list of attribute ids, got str"
    stats = CatalogStats()
    assert [i.item_id for i in read_catalog(path, "amazon-attributes", skip_bad=True, stats=stats)] == ["4"]
    assert stats.skipped == 3
    assert "item '': not a valid catalog record (empty_string" in stats.errors[1]
    assert "item '6': attribute ids must be integers, got True" in stats.errors[2]
    for text, message in (("[1, 2]", "expected one JSON object of item_id -> attribute ids, got list"),
                          ("{nope", "not valid JSON")):
        path = write(tmp_path, "y_item2attributes.json", text)
        with pytest.raises(BadCatalogFile, match=message):
            list(read_catalog(path, "amazon-attributes", skip_bad=True))


# --------------------------------------------------------------------------- online retail

RETAIL_HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
RETAIL = RETAIL_HEADER + (
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom\n"
    "536366,85123A,CREAM HANGING HEART ,6,2010-12-01 08:28:00,2.65,17850.0,United Kingdom\n"
    "536367,85123A,WHITE HANGING HEART T-LIGHT HOLDER ,2,2011-06-01 10:00:00,2.95,,United Kingdom\n"
    "C536368,85123A,,-1,2011-06-02 10:00:00,0,17850.0,United Kingdom\n"
    '536369,22745,"POPPY\'S PLAYHOUSE, BEDROOM",6,2010-12-01 08:34:00,2.1,13047.0,United Kingdom\n'
    "536370,22745,,6,2010-12-02 08:34:00,-1,13047.0,United Kingdom\n"
    "536371,POST,POSTAGE,1,2010-12-03 09:00:00,18,12583.0,France\n"
    "536372,21000,,1,2010-12-03 09:00:00,0,,United Kingdom\n"
)


def test_online_retail_folds_the_log_into_one_record_per_stock_code(tmp_path: Path) -> None:
    path = write(tmp_path, "online-retail.csv.gz", RETAIL)
    stats = CatalogStats()
    items = {item.item_id: item for item in read_catalog(path, "online-retail", stats=stats)}
    assert list(items) == ["85123A", "22745", "POST", "21000"]
    heart = items["85123A"]
    # the most frequent description (trimmed), the latest positive price, the last line's time (BST: UTC+1)
    assert heart == CatalogItem("85123A", title="WHITE HANGING HEART T-LIGHT HOLDER", price=2.95, currency="GBP",
                                available=True, updated_at=1307005200.0)
    assert heart.updated_at == online_retail_timestamp("2011-06-02 10:00:00")
    assert items["22745"].title == "POPPY'S PLAYHOUSE, BEDROOM" and items["22745"].price == 2.1
    assert items["22745"].updated_at == 1291278840.0  # 2010-12-02 08:34 GMT
    assert items["21000"] == CatalogItem("21000", currency="GBP", updated_at=1291366800.0)  # no title, no price
    assert stats.records == 9 and stats.items == 4


def test_online_retail_ties_go_to_the_first_description(tmp_path: Path) -> None:
    path = write(tmp_path, "online-retail.csv", RETAIL_HEADER
                 + "1,X1,FIRST,1,2010-12-01 08:00:00,1,,UK\n1,X1,SECOND,1,2010-12-01 08:00:00,2,,UK\n")
    (item,) = read_catalog(path, "online-retail")
    assert (item.title, item.price) == ("FIRST", 2.0)  # same time: the later line's price


def test_online_retail_bad_lines_and_header(tmp_path: Path) -> None:
    path = write(tmp_path, "online-retail.csv", RETAIL + "9,X2,THING,1,yesterday,1,,UK\n9,X3,THING,1\n")
    with pytest.raises(BadLine) as info:
        list(read_catalog(path, "online-retail"))
    assert str(info.value) == f"{path}, line 10: InvoiceDate 'yesterday' is not a date like 2010-12-01 08:26:00"
    stats = CatalogStats()
    assert len(list(read_catalog(path, "online-retail", skip_bad=True, stats=stats))) == 4
    assert stats.skipped == 2 and "line 11: expected 8 fields like the header, got 4" in stats.errors[1]
    path = write(tmp_path, "online-retail2.csv", "a,b,c\n")
    with pytest.raises(BadHeader, match="expected the header 'InvoiceNo,StockCode"):
        list(read_catalog(path, "online-retail", skip_bad=True))


def test_online_retail_limit(tmp_path: Path) -> None:
    path = write(tmp_path, "online-retail.csv", RETAIL)
    assert [item.item_id for item in read_catalog(path, "online-retail", limit=2)] == ["85123A", "22745"]


# --------------------------------------------------------------------------- dispatch


def test_format_from_name_and_errors(tmp_path: Path) -> None:
    assert catalog_format_from_name("a/items.JSONL") == "jsonl"
    assert catalog_format_from_name("Beauty_item2attributes.json") == "amazon-attributes"
    assert catalog_format_from_name("online-retail.csv.gz") == "online-retail"
    assert catalog_format_from_name("online-retail-2011.csv") == "online-retail"
    assert catalog_format_from_name("items.json") is None and catalog_format_from_name("retail.csv") is None
    assert set(CATALOG_FORMATS) == {"jsonl", "amazon-attributes", "online-retail"}
    with pytest.raises(ValueError, match="unknown catalog format 'parquet'; choose one of jsonl"):
        read_catalog(tmp_path / "x", "parquet")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_catalog(tmp_path / "missing.jsonl", "jsonl")


# --------------------------------------------------------------------------- real datasets


@pytest.fixture(scope="module")
def datasets() -> Path:
    path = get_settings().datasets_dir
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"the real datasets are not at {path}, and CI is set: they must be there")
        pytest.skip(f"the real datasets are not at {path} (see the project README); skipping the real catalogs")
    return path


@pytest.mark.datasets
def test_beauty_catalog_ids_match_the_event_ids(datasets: Path) -> None:
    folder = datasets / "amazon-beauty"
    stats = CatalogStats()
    items = list(read_catalog(folder / "Beauty_item2attributes.json", "amazon-attributes", stats=stats))
    assert len(items) == 12_101 and stats.skipped == 0
    event_items = {event.item_id for event in read_events(folder / "Beauty.txt", "amazon-seq")}
    assert {item.item_id for item in items} == event_items
    assert items[0] == CatalogItem("4", attributes={"attr:1": "1", "attr:2": "1", "attr:3": "1"})


@pytest.mark.datasets
def test_online_retail_catalog(datasets: Path) -> None:
    stats = CatalogStats()
    items = list(read_catalog(datasets / "online-retail" / "online-retail.csv.gz", "online-retail", stats=stats))
    assert len(items) == 3_943 and stats.skipped == 0 and stats.records == 398_868  # the header and 398,867 lines
    first = items[0]
    assert (first.item_id, first.title, first.currency) == ("85123A", "WHITE HANGING HEART T-LIGHT HOLDER", "GBP")
    assert sum(item.title is None for item in items) == 113 and sum(item.price is None for item in items) == 126
    # the log ends 2011-10-14 17:23 BST
    assert max(item.updated_at for item in items) == online_retail_timestamp("2011-10-14 17:23:00") == 1318609380.0


def test_the_catalog_of_a_dataset_is_found_beside_it_or_in_it(tmp_path):
    sequences = tmp_path / "Toy.txt"
    sequences.write_text("u1 4 83\n")
    (tmp_path / "Toy_item2attributes.json").write_text('{"4": [1, 2], "83": [2, 1, 2]}')
    catalog = catalog_for(sequences, "amazon-seq")
    assert catalog["83"].attributes == {"attr:2": "1", "attr:1": "1"}  # shared whatever the order
    retail = tmp_path / "or.csv.gz"
    with gzip.open(retail, "wt") as handle:
        handle.write("InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
                     '1,A,"RED MUG, LARGE",1,2010-12-01 08:00:00,2.5,1.0,UK\n'
                     "2,A,RED MUG,1,2010-12-02 08:00:00,0,,UK\n"
                     "3,A,RED MUG,1,2010-12-03 08:00:00,3.0,2.0,UK\n")
    assert catalog_for(retail, "online-retail")["A"].title in ("RED MUG", "RED MUG, LARGE")
    clicks = tmp_path / "clicks.txt"
    clicks.write_text("SessionId\tItemId\tTime\n1\t214\t1396310400.0\n1\t215\t1396310460.0\n")
    assert catalog_for(clicks, "yoochoose") is None  # no catalog beside it, no categories in its events
    taobao = tmp_path / "UserBehavior.csv"
    taobao.write_text("1,10,7,pv,1511658000\n2,11,7,pv,1511658001\n2,10,9,buy,1511658002\n3,12,,pv,1511658003\n")
    catalog = catalog_for(taobao, "taobao")  # the categories its events carry, the latest per item
    assert {item_id: item.category for item_id, item in catalog.items()} == {"10": ("9",), "11": ("7",)}
