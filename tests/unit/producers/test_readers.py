"""Dataset readers: every format on small files with known answers, bad lines, real-file counts."""

from __future__ import annotations

import gzip
import logging
from collections import Counter
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producers.readers import (
    AMAZON_BASE_TS,
    FORMATS,
    BadHeader,
    BadLine,
    ReadStats,
    format_from_extension,
    read_amazon_seq,
    read_csv,
    read_events,
    read_jsonl,
    read_online_retail,
    read_retailrocket,
    read_sequences,
    read_taobao,
    read_yoochoose,
)
from streamrec.contract import decode_event, encode_event


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def assert_contract(events: list) -> None:
    for event in events:
        assert decode_event(encode_event(event)) == event


# --------------------------------------------------------------------------- taobao

TAOBAO = "1,10,100,pv,1511658000\n1,10,100,cart,1511658001\n2,11,101,fav,1511658002\n2,10,100,buy,1511658003\n"


def test_taobao_maps_behaviours_ids_and_categories(tmp_path: Path) -> None:
    path = write(tmp_path, "UserBehavior.csv", TAOBAO)
    events = list(read_taobao(path))
    assert [e.type for e in events] == ["view", "add_to_cart", "favorite", "purchase"]
    assert [e.event_id for e in events] == [f"taobao:UserBehavior.csv:{n}" for n in (1, 2, 3, 4)]
    first = events[0]
    assert (first.user_id, first.item_id, first.category, first.ts) == ("1", "10", "100", 1511658000.0)
    assert first.session_id is None and first.price is None
    assert_contract(events)


def test_taobao_ids_are_deterministic_across_reads(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", TAOBAO)
    assert list(read_events(path, "taobao")) == list(read_events(path, "taobao"))


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("1,10,100,pv", "expected 5 comma-separated fields"),
        ("1,10,100,click,1511658000", "unknown behavior 'click'"),
        ("1,10,100,pv,yesterday", "timestamp 'yesterday' is not a number"),
        ("1,10,100,pv,-5", "must be a finite number >= 0"),
        ("1,,100,pv,1511658000", "item_id is empty"),
    ],
)
def test_taobao_bad_line_names_file_and_line(tmp_path: Path, line: str, reason: str) -> None:
    path = write(tmp_path, "bad.csv", TAOBAO + line + "\n")
    with pytest.raises(ValueError, match=reason) as info:
        list(read_taobao(path))
    assert isinstance(info.value, BadLine)
    assert info.value.line_number == 5
    assert str(info.value).startswith(f"{path}, line 5: ")


def test_skip_bad_counts_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "bad.csv", "garbage\n" + TAOBAO + "1,2,3,zzz,4\n")
    stats = ReadStats()
    with caplog.at_level(logging.WARNING, logger="producers.readers"):
        events = list(read_taobao(path, skip_bad=True, stats=stats))
    assert len(events) == 4
    assert (stats.lines, stats.events, stats.skipped) == (6, 4, 2)
    assert "line 1" in stats.errors[0] and "line 6" in stats.errors[1]
    assert "skipped 2 bad line(s) of 6" in caplog.text
    # event ids keep the physical line numbers
    assert events[0].event_id.endswith(":2")


def test_blank_lines_are_ignored_and_crlf_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "crlf.csv"
    path.write_bytes(b"1,10,100,pv,1511658000\r\n\r\n2,11,101,buy,1511658001\r\n")
    events = list(read_taobao(path))
    assert [e.category for e in events] == ["100", "101"]
    assert events[1].event_id.endswith(":3")


def test_a_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    bom = b"\xef\xbb\xbf"
    (tmp_path / "t.csv").write_bytes(bom + TAOBAO.encode())
    (tmp_path / "c.txt").write_bytes(bom + YOOCHOOSE.encode())
    (tmp_path / "e.csv").write_bytes(bom + b"user_id,item_id,type,ts\nu,i,view,1\n")
    (tmp_path / "e.jsonl").write_bytes(bom + b'{"user_id": "u", "item_id": "i", "type": "view", "ts": 1}\n')
    assert list(read_taobao(tmp_path / "t.csv"))[0].user_id == "1"
    assert len(list(read_yoochoose(tmp_path / "c.txt"))) == 3
    assert len(list(read_csv(tmp_path / "e.csv"))) == 1
    assert len(list(read_jsonl(tmp_path / "e.jsonl"))) == 1


def test_invalid_utf8_is_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"1,10,100,pv,1511658000\n1,caf\xe9,100,pv,1511658000\n")
    with pytest.raises(BadLine, match="line 2: not valid UTF-8"):
        list(read_taobao(path))
    assert len(list(read_taobao(path, skip_bad=True))) == 1


def test_limit_stops_early_and_gzip_is_transparent(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(TAOBAO + "this line is never read\n")
    assert [e.type for e in read_events(path, "taobao", limit=2)] == ["view", "add_to_cart"]
    assert list(read_events(path, "taobao", limit=0)) == []


@settings(max_examples=50, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 10**9),
            st.integers(0, 10**9),
            st.integers(0, 10**7),
            st.sampled_from(["pv", "cart", "fav", "buy"]),
            st.integers(0, 1_700_000_000),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_taobao_round_trips_any_valid_rows(tmp_path_factory: pytest.TempPathFactory, rows: list) -> None:
    path = tmp_path_factory.mktemp("taobao") / "rows.csv"
    path.write_text("".join(",".join(map(str, row)) + "\n" for row in rows))
    events = list(read_taobao(path))
    assert [(e.user_id, e.item_id, e.category, e.ts) for e in events] == [
        (str(u), str(i), str(c), float(ts)) for u, i, c, _, ts in rows
    ]
    assert_contract(events)


# --------------------------------------------------------------------------- retailrocket

RETAILROCKET = (
    "timestamp,visitorid,event,itemid,transactionid\n"
    "1433221332117,257597,view,355908,\n"
    "1433224214164,992329,view,248676,\n"
    "1433221999827,111016,addtocart,318965,\n"
    "1433221332117,111016,transaction,356475,4000\n"
)


def test_retailrocket_sorts_by_time_stably_by_default(tmp_path: Path) -> None:
    path = write(tmp_path, "events.csv", RETAILROCKET)
    events = list(read_events(path, "retailrocket"))
    assert [e.ts for e in events] == [1433221332.117, 1433221332.117, 1433221999.827, 1433224214.164]
    # the two events at the same millisecond keep file order
    assert [e.event_id.rsplit(":", 1)[1] for e in events] == ["2", "5", "4", "3"]
    assert [e.type for e in events] == ["view", "purchase", "add_to_cart", "view"]
    assert events[1].user_id == "111016" and events[1].item_id == "356475"
    assert_contract(events)


def test_retailrocket_file_order_and_limit_after_sorting(tmp_path: Path) -> None:
    path = write(tmp_path, "events.csv", RETAILROCKET)
    assert [e.user_id for e in read_retailrocket(path, sort_by_time=False)] == ["257597", "992329", "111016", "111016"]
    assert [e.ts for e in read_retailrocket(path, limit=1)] == [1433221332.117]
    assert [e.user_id for e in read_events(path, "retailrocket", sort_by_time=False, limit=2)] == ["257597", "992329"]


def test_retailrocket_bad_header_and_bad_event(tmp_path: Path) -> None:
    path = write(tmp_path, "events.csv", "ts,visitor,event,item,tx\n1,2,view,3,\n")
    with pytest.raises(BadHeader, match="line 1: expected the header 'timestamp,visitorid,event,itemid,transactionid'"):
        list(read_retailrocket(path))
    path = write(tmp_path, "events2.csv", RETAILROCKET + "1433221332117,1,removefromcart,2,\n")
    with pytest.raises(BadLine, match="line 6: unknown event 'removefromcart'"):
        list(read_retailrocket(path))
    assert len(list(read_retailrocket(path, skip_bad=True))) == 4


def test_empty_file_with_required_header(tmp_path: Path) -> None:
    path = write(tmp_path, "events.csv", "")
    with pytest.raises(BadHeader, match="the file is empty"):
        list(read_retailrocket(path))


# --------------------------------------------------------------------------- amazon

BEAUTY = "1 1 2 3\n2 4 1\n\n3 5\n"


def test_amazon_sequences_become_purchases_user_by_user(tmp_path: Path) -> None:
    path = write(tmp_path, "Beauty.txt", BEAUTY)
    events = list(read_amazon_seq(path))
    assert [(e.user_id, e.item_id, e.ts - AMAZON_BASE_TS) for e in events] == [
        ("1", "1", 0), ("1", "2", 1), ("1", "3", 2), ("2", "4", 0), ("2", "1", 1), ("3", "5", 0),
    ]
    assert {e.type for e in events} == {"purchase"}
    assert events[4].event_id == "amazon-seq:Beauty.txt:2:1"
    assert len({e.event_id for e in events}) == len(events)
    assert_contract(events)


def test_amazon_limit_counts_events_and_bad_line(tmp_path: Path) -> None:
    path = write(tmp_path, "Beauty.txt", BEAUTY)
    assert len(list(read_events(path, "amazon-seq", limit=4))) == 4
    path = write(tmp_path, "bad.txt", "1 1 2\n7\n2 3\n")
    with pytest.raises(BadLine, match="line 2: user '7' has no items"):
        list(read_amazon_seq(path))
    stats = ReadStats()
    assert len(list(read_amazon_seq(path, skip_bad=True, stats=stats))) == 3
    assert (stats.lines, stats.events, stats.skipped) == (3, 3, 1)


def test_read_sequences(tmp_path: Path) -> None:
    path = write(tmp_path, "Beauty.txt", BEAUTY)
    assert read_sequences(path) == {"1": ["1", "2", "3"], "2": ["4", "1"], "3": ["5"]}
    path = write(tmp_path, "dup.txt", "1 1\n1 2\n")
    with pytest.raises(ValueError, match="line 2: user '1' already has a sequence"):
        read_sequences(path)


# --------------------------------------------------------------------------- yoochoose

YOOCHOOSE = "SessionId\tItemId\tTime\n3\t214716935\t1396437466.94\n3\t214832672\t1396438212.318\n9\t5\t1396437000.5\n"


def test_yoochoose_session_is_the_user(tmp_path: Path) -> None:
    path = write(tmp_path, "clicks.txt", YOOCHOOSE)
    events = list(read_yoochoose(path))
    assert [(e.user_id, e.session_id, e.item_id, e.type, e.ts) for e in events] == [
        ("3", "3", "214716935", "click", 1396437466.94),
        ("3", "3", "214832672", "click", 1396438212.318),
        ("9", "9", "5", "click", 1396437000.5),
    ]
    assert events[0].event_id == "yoochoose:clicks.txt:2"
    assert [e.user_id for e in read_events(path, "yoochoose", sort_by_time=True)] == ["9", "3", "3"]
    assert_contract(events)


def test_yoochoose_wrong_header_or_separator(tmp_path: Path) -> None:
    path = write(tmp_path, "clicks.txt", "SessionId,ItemId,Time\n3,1,2\n")
    with pytest.raises(BadHeader, match="expected the header"):
        list(read_yoochoose(path))
    path = write(tmp_path, "clicks2.txt", "SessionId\tItemId\tTime\n3 1 2\n")
    with pytest.raises(BadLine, match="line 2: expected 3 tab-separated fields"):
        list(read_yoochoose(path))


# --------------------------------------------------------------------------- jsonl and csv


def test_jsonl_validates_through_the_contract(tmp_path: Path) -> None:
    lines = [
        {"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "view", "ts": 1700000000, "price": 9.5},
        {"user_id": "u2", "item_id": "i2", "type": "purchase", "ts": 1700000001.5, "session_id": "s"},
    ]
    path = write(tmp_path, "events.jsonl", "".join(orjson.dumps(x).decode() + "\n" for x in lines))
    events = list(read_jsonl(path))
    assert events[0].event_id == "e1" and events[0].price == 9.5 and events[0].ts == 1700000000.0
    assert events[1].event_id == "jsonl:events.jsonl:2" and events[1].session_id == "s"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"user_id": "u", "item_id": "i", "type": "buy", "ts": 1}', "unknown_type: type 'buy' is not one of"),
        ('{"user_id": "u", "item_id": "i", "type": "view"}', "field 'ts' is required"),
        ('{"user_id": "u", "item_id": "i", "type": "view", "ts": 1, "color": "red"}', "unknown field"),
    ],
)
def test_jsonl_bad_lines(tmp_path: Path, line: str, reason: str) -> None:
    good = '{"user_id": "u", "item_id": "i", "type": "view", "ts": 1}\n'
    path = write(tmp_path, "events.jsonl", good + line + "\n")
    with pytest.raises(BadLine, match=reason) as info:
        list(read_jsonl(path))
    assert info.value.line_number == 2
    assert len(list(read_jsonl(path, skip_bad=True))) == 1


def test_csv_with_contract_header_in_any_order(tmp_path: Path) -> None:
    text = (
        "ts,type,user_id,item_id,event_id,price,category,query,session_id\n"
        "1700000000,view,u1,i1,e1,,shoes,,\n"
        '1700000001.25,purchase,u1,i1,,19.99,shoes,"red, size 42",s1\n'
    )
    path = write(tmp_path, "events.csv", text)
    events = list(read_csv(path))
    assert events[0].event_id == "e1" and events[0].price is None and events[0].query is None
    assert events[1].event_id == "csv:events.csv:3"
    assert (events[1].price, events[1].query, events[1].session_id, events[1].ts) == (19.99, "red, size 42", "s1", 1700000001.25)
    assert_contract(events)


def test_csv_header_and_line_errors(tmp_path: Path) -> None:
    with pytest.raises(BadHeader, match="unknown column\\(s\\) colour"):
        list(read_csv(write(tmp_path, "a.csv", "user_id,item_id,type,ts,colour\n")))
    with pytest.raises(BadHeader, match="missing column\\(s\\) ts"):
        list(read_csv(write(tmp_path, "b.csv", "user_id,item_id,type\n")))
    with pytest.raises(BadHeader, match="empty"):
        list(read_csv(write(tmp_path, "c.csv", "")))
    path = write(tmp_path, "d.csv", "user_id,item_id,type,ts\nu,i,view,1\nu,i,view\nu,i,view,soon\nu,i,look,1\nu,i,view,2\n")
    with pytest.raises(BadLine, match="line 3: expected 4 fields like the header, got 3"):
        list(read_csv(path))
    stats = ReadStats()
    events = list(read_csv(path, skip_bad=True, stats=stats))
    assert [e.ts for e in events] == [1.0, 2.0]
    assert stats.skipped == 3
    assert "line 4: ts 'soon' is not a number" in stats.errors[1]
    assert "line 5: not a valid event (unknown_type" in stats.errors[2]


# --------------------------------------------------------------------------- dispatch


def test_dispatcher_rejects_unknown_format_missing_file_and_bad_limit(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", TAOBAO)
    with pytest.raises(ValueError, match="unknown format 'parquet'; choose one of taobao, retailrocket"):
        read_events(path, "parquet")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_events(tmp_path / "missing.csv", "taobao")
    with pytest.raises(ValueError, match="limit must be >= 0"):
        read_events(path, "taobao", limit=-1)
    assert set(FORMATS) == {"taobao", "retailrocket", "amazon-seq", "yoochoose", "online-retail", "jsonl", "csv"}


def test_format_from_extension() -> None:
    assert format_from_extension("a/events.jsonl") == "jsonl"
    assert format_from_extension("events.NDJSON") == "jsonl"
    assert format_from_extension("events.csv.gz") == "csv"
    assert format_from_extension("Beauty.txt") is None
    assert format_from_extension("events") is None


# --------------------------------------------------------------------------- real datasets


@pytest.fixture(scope="module")
def datasets(shared_dataset) -> Path:  # noqa: ANN001
    return shared_dataset()


@pytest.mark.datasets
def test_taobao_slice_counts(datasets: Path) -> None:
    stats = ReadStats()
    events = read_events(datasets / "taobao-userbehavior-slice" / "UserBehavior_slice.csv", "taobao", stats=stats)
    types = Counter(e.type for e in events)
    assert stats.events == 110_300 and stats.skipped == 0
    assert types == {"view": 98_361, "add_to_cart": 6_063, "favorite": 3_383, "purchase": 2_493}


@pytest.mark.datasets
def test_beauty_counts(datasets: Path) -> None:
    path = datasets / "amazon-beauty" / "Beauty.txt"
    events = list(read_events(path, "amazon-seq"))
    assert len(events) == 198_502
    assert len({e.user_id for e in events}) == 22_363
    assert len({e.item_id for e in events}) == 12_101
    sequences = read_sequences(path)
    assert len(sequences) == 22_363 and sum(map(len, sequences.values())) == 198_502


@pytest.mark.datasets
def test_yoochoose_train_counts(datasets: Path) -> None:
    events = list(read_events(datasets / "yoochoose-clicks-100k" / "yoochoose-clicks-100k_train_full.txt", "yoochoose"))
    assert len(events) == 70_278
    assert len({e.session_id for e in events}) == 17_794


# --------------------------------------------------------------------------- online retail

ONLINE_RETAIL = (
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom\n"
    '536381,82567,"AIRLINE LOUNGE,METAL SIGN",2,2010-12-01 09:41:00,2.1,15311.0,United Kingdom\n'
    "536414,22139,,56,2010-12-01 11:52:00,0.0,,United Kingdom\n"
    "C536379,D,Discount,-1,2010-12-01 09:41:00,27.5,14527.0,United Kingdom\n"
    '553000,22041,"RECORD FRAME 7"" SINGLE SIZE ",48,2011-07-01 12:27:00,2.1,16210,United Kingdom\n'
)


def test_online_retail_purchases_of_known_customers_in_uk_time(tmp_path: Path) -> None:
    path = tmp_path / "online-retail.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(ONLINE_RETAIL)
    stats = ReadStats()
    events = list(read_events(path, "online-retail", stats=stats))
    assert_contract(events)
    assert [(e.event_id, e.user_id, e.item_id, e.type, e.price, e.quantity) for e in events] == [
        ("online-retail:online-retail.csv.gz:2", "17850", "85123A", "purchase", 2.55, 6),
        ("online-retail:online-retail.csv.gz:3", "15311", "82567", "purchase", 2.1, 2),
        ("online-retail:online-retail.csv.gz:6", "16210", "22041", "purchase", 2.1, 48),
    ]
    # December is GMT (UTC+0); July is BST (UTC+1): 12:27 in London is 11:27 UTC.
    assert events[0].ts == 1291191960.0  # 2010-12-01 08:26:00 UTC
    assert events[2].ts == 1309519620.0  # 2011-07-01 11:27:00 UTC
    assert stats.events == 3 and stats.dropped == {"guest": 1, "cancellation": 1} and stats.skipped == 0
    assert [e.event_id for e in read_events(path, "online-retail", limit=2)] == [e.event_id for e in events[:2]]
    # For demand, guest lines count too, each invoice its own guest.
    with_guests = list(read_online_retail(path, guests=True))
    assert_contract(with_guests)
    assert [(e.user_id, e.item_id, e.quantity) for e in with_guests] == [
        ("17850", "85123A", 6), ("15311", "82567", 2), ("guest:536414", "22139", 56), ("16210", "22041", 48)]


def test_online_retail_stock_adjustments_are_not_sales(tmp_path: Path) -> None:
    path = write(tmp_path, "or.csv", ONLINE_RETAIL.splitlines()[0] + "\n"
                 "1,A,damaged,-5,2011-01-01 10:00:00,0,,UK\n1,B,x,0,2011-01-01 10:00:00,0,12.0,UK\n"
                 "1,C,x,3,2011-01-01 10:00:00,1,12.0,UK\n1,D,x,three,2011-01-01 10:00:00,1,12.0,UK\n")
    stats = ReadStats()
    events = list(read_online_retail(path, guests=True, skip_bad=True, stats=stats))
    assert [(e.item_id, e.quantity) for e in events] == [("C", 3)]
    assert stats.dropped == {"adjustment": 2} and stats.skipped == 1
    assert "Quantity 'three' is not a number" in stats.errors[0]


def test_online_retail_bad_header_and_bad_lines(tmp_path: Path) -> None:
    bad_header = write(tmp_path, "or.csv", "InvoiceNo,StockCode\n1,2\n")
    with pytest.raises(BadHeader, match="expected the header 'InvoiceNo,StockCode,Description"):
        list(read_events(bad_header, "online-retail"))
    bad = write(tmp_path, "or2.csv", ONLINE_RETAIL.splitlines()[0] + "\n"
                "1,A,x,1,yesterday,1.0,12.0,UK\n1,B,x,1,2011-01-01 10:00:00,-3,12.0,UK\n1,C,x,1,2011-01-01 10:00:00,1,12.0,UK\n")
    with pytest.raises(BadLine, match="line 2: InvoiceDate 'yesterday'"):
        list(read_events(bad, "online-retail"))
    stats = ReadStats()
    assert [e.item_id for e in read_events(bad, "online-retail", skip_bad=True, stats=stats)] == ["C"]
    assert stats.skipped == 2


@pytest.mark.datasets
def test_online_retail_real_file_counts() -> None:
    from streamrec.config import get_settings

    path = get_settings().datasets_dir / "online-retail" / "online-retail.csv.gz"
    if not path.is_file():
        pytest.skip(f"Online Retail is not at {path}: the shared datasets are absent (see ../shared/datasets/README.md)")
    stats = ReadStats()
    n = sum(1 for _ in read_events(path, "online-retail", stats=stats))
    assert n == 289_158 and stats.dropped == {"cancellation": 7_416, "guest": 102_293} and stats.skipped == 0
    # With guests: every line that is neither a cancellation nor a stock adjustment is a sale.
    stats = ReadStats()
    units = sum(e.quantity for e in read_online_retail(path, guests=True, stats=stats))
    assert stats.events == 390_356 and stats.dropped == {"cancellation": 7_416, "adjustment": 1_095}
    assert units == 4_237_636  # pandas: Quantity summed over non-C lines with Quantity > 0 and UnitPrice >= 0
