"""The business panels' state (streams/panels.py) on small inputs with known answers."""

from __future__ import annotations

import math
from datetime import date

import orjson
import pytest

from streamrec.contract import Event
from streamrec.core.experiments import experiment_from_dict
from streams.panels import EventWindow, LatestByKey, conversion_state, forecast_state, funnel_state

DAY = 86_400.0
SPEC = experiment_from_dict({"name": "x", "salt": "s", "variants": [{"name": "c", "weight": 1, "kind": "model"},
                                                                    {"name": "t", "weight": 1, "kind": "model"}]})


def arm(variant: str, users: int, converted: int) -> dict:
    return {"kind": "arm", "experiment": "x", "variant": variant, "users": users, "converted_users": converted,
            "clicked_users": converted, "buyers": converted, "revenue": 0.0, "revenue_sumsq": 0.0}


def test_conversion_rates_lift_and_p_value():
    [row] = conversion_state([arm("c", 400, 20), arm("t", 400, 40), {"kind": "hourly"}], [SPEC])
    control, treatment = row["arms"]
    assert (control["rate"], treatment["rate"]) == (0.05, 0.1)
    assert treatment["lift"] == pytest.approx(1.0)
    assert control["rate_low"] < 0.05 < control["rate_high"]
    # The pooled two-proportion z-test: z = 0.05 / sqrt(0.075 * 0.925 * 2 / 400).
    z = 0.05 / math.sqrt(0.075 * 0.925 * 2 / 400)
    assert treatment["p_value"] == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-9) and control["p_value"] is None
    assert row["srm_flagged"] is False and row["control"] == "c"


def test_impossible_totals_are_reported_not_raised():
    [row] = conversion_state([arm("c", 5, 9)], [SPEC])
    assert "9 converted users out of 5 users is impossible" in row["error"]
    [row] = conversion_state([arm("c", 5, 1), arm("zz", 5, 1)], [SPEC])
    assert "variants the experiment does not have: ['zz']" in row["error"]


def forecast(series: str, units: list[float]) -> dict:
    return {"series": series, "model": "m", "made_at": 1.0, "history_end": "2024-01-01",
            "days": [{"date": f"2024-01-{2 + k:02d}", "units": u} for k, u in enumerate(units)]}


def test_forecasts_sit_next_to_the_units_sold():
    records = [forecast("item:a", [1.0, 1.0, 1.0]), forecast("shop", [5.0, 6.0, 7.0]), forecast("item:b", [9.0, 0.0, 0.0]),
               forecast("item:c", [0.0, 0.0, 0.5])]
    units = {date(2024, 1, 2): {"shop": 4.0, "item:b": 3.0}, date(2024, 1, 3): {"shop": 2.0}}
    shown = forecast_state(records, units, date(2024, 1, 3), top=2)
    assert [s["series"] for s in shown] == ["shop", "item:b", "item:a"]
    assert [(d["forecast"], d["actual"]) for d in shown[0]["days"]] == [(5.0, 4.0), (6.0, 2.0), (7.0, None)]
    assert [d["actual"] for d in shown[1]["days"]] == [3.0, 0.0, None]
    # Days before the first day read are unknown, not zero.
    assert [d["actual"] for d in forecast_state(records, {date(2024, 1, 3): {"shop": 2.0}}, date(2024, 1, 3))[0]["days"]] \
        == [None, 2.0, None]


def test_the_funnel_counts_distinct_users():
    events = [Event("1", "u", "a", "view", 0.0), Event("2", "u", "a", "view", 1.0), Event("3", "v", "a", "view", 2.0),
              Event("4", "u", "a", "purchase", 3.0)]
    state = funnel_state(events)
    assert state["users"] == {"view": 2, "purchase": 1}
    assert state["drop_out"] == {"view→purchase": 0.5}
    assert state["events_by_type"] == {"purchase": 1, "view": 3} and state["events"] == 4
    assert funnel_state([Event("1", "u", "a", "click", 0.0), Event("2", "u", "a", "purchase", 0.0)])["users"] \
        == {"click": 1, "purchase": 1}
    assert funnel_state([])["users"] == {} and funnel_state([])["from_ts"] is None


def encoded(event: Event) -> bytes:
    return orjson.dumps(event.to_dict())


def test_the_event_window_is_bounded():
    window = EventWindow("unused:9092", "events", window_s=3600.0, max_events=3, actual_days=2)
    for n, ts in enumerate([10 * DAY, 10 * DAY + 100, 11 * DAY, 12 * DAY + 10, 12 * DAY + 20, 12 * DAY + 30, 12 * DAY + 40]):
        window.handle(b"k", encoded(Event(f"e{n}", f"u{n}", "i", "purchase", ts, quantity=2.0, category="c")))
    window.handle(b"k", encoded(Event("late", "u9", "i", "view", 12 * DAY - 4000)))  # from another partition, older
    window.handle(b"k", b"{oops")
    events, units, newest, _ = window.snapshot()
    assert [e.event_id for e in events] == ["e5", "e6"]  # at most 3 kept, and only the last hour shown
    assert newest == date(1970, 1, 13)
    assert sorted(units) == [date(1970, 1, 12), date(1970, 1, 13)]  # two days kept
    assert units[date(1970, 1, 13)] == {"shop": 8.0, "item:i": 8.0, "category:c": 8.0}
    assert window.skipped == {"malformed_json": 1} and window.read == 8
    with pytest.raises(ValueError, match="must be positive"):
        EventWindow("unused:9092", "events", window_s=0)


def test_latest_by_key_keeps_the_newest_and_forgets_tombstones():
    latest = LatestByKey("unused:9092", "attribution", keep=lambda key: key.startswith("arm|"))
    latest.handle(b"arm|x|c", b'{"users": 1}')
    latest.handle(b"arm|x|c", b'{"users": 2}')
    latest.handle(b"arm|x|t", b'{"users": 3}')
    latest.handle(b"hour|1", b'{"users": 9}')
    latest.handle(b"arm|x|t", None)
    latest.handle(b"arm|x|u", b"not json")
    assert latest.values() == [{"users": 2}] and latest.unreadable == 1
    assert math.isinf(EventWindow("unused:9092", "e").newest_ts)
