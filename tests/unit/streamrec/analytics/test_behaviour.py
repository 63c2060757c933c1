"""Behaviour analytics on small logs whose answers are worked out by hand."""

from __future__ import annotations

import math

import pytest

from streamrec.analytics.behaviour import funnel, interest, sessions, trends
from streamrec.contract import Event

H = 3600.0


def ev(n: int, user: str, item: str, kind: str, ts: float, category: str | None = "shoes") -> Event:
    return Event(f"e{n}", user, item, kind, ts, category=category)


FUNNEL_LOG = [
    # hour 0, shoes: 4 viewers, 3 clickers, 2 carts, 1 buyer
    ev(1, "a", "s1", "view", 10), ev(2, "b", "s1", "view", 20), ev(3, "c", "s2", "view", 30), ev(4, "d", "s2", "view", 40),
    ev(5, "a", "s1", "view", 50),  # a second view by a: still one user
    ev(6, "a", "s1", "click", 60), ev(7, "b", "s1", "click", 70), ev(8, "c", "s2", "click", 80),
    ev(9, "a", "s1", "add_to_cart", 90), ev(10, "b", "s1", "add_to_cart", 100),
    ev(11, "a", "s1", "purchase", 110),
    # hour 1, hats: 2 viewers, 2 clickers, no cart, no purchase
    ev(12, "a", "h1", "view", H + 10, "hats"), ev(13, "e", "h1", "view", H + 20, "hats"),
    ev(14, "a", "h1", "click", H + 30, "hats"), ev(15, "e", "h1", "click", H + 40, "hats"),
    ev(16, "e", "h1", "favorite", H + 50, "hats"),  # not a funnel stage
]


def test_funnel_counts_distinct_users_per_stage_and_the_drop_out_between_stages():
    rows = {(r.hour, r.category): r for r in funnel(FUNNEL_LOG)}
    shoes = rows[("1970-01-01T00:00:00+00:00", "shoes")]
    assert shoes.users == {"view": 4, "click": 3, "add_to_cart": 2, "purchase": 1}
    assert shoes.drop_out == {"view→click": 0.25, "click→add_to_cart": pytest.approx(1 / 3),
                              "add_to_cart→purchase": 0.5}
    hats = rows[("1970-01-01T01:00:00+00:00", "hats")]
    assert hats.users == {"view": 2, "click": 2, "add_to_cart": 0, "purchase": 0}
    assert hats.drop_out["view→click"] == 0 and hats.drop_out["click→add_to_cart"] == 1
    assert math.isnan(hats.drop_out["add_to_cart→purchase"])  # nobody to drop out
    total = rows[("*", "*")]
    assert total.users == {"view": 5, "click": 4, "add_to_cart": 2, "purchase": 1}  # a counts once over both hours
    assert list(rows)[-1] == ("*", "*")
    london = {(r.hour, r.category) for r in funnel(FUNNEL_LOG, "Europe/London")}
    assert ("1970-01-01T01:00:00+01:00", "shoes") in london  # 1970: British Standard Time all year


def test_funnel_leaves_out_stages_the_log_never_has():
    rows = funnel([ev(1, "a", "x", "view", 0), ev(2, "a", "x", "purchase", 5), ev(3, "b", "x", "view", 6)])
    assert rows[-1].users == {"view": 2, "purchase": 1} and rows[-1].drop_out == {"view→purchase": 0.5}


def test_interest_entropy_and_reach():
    log = [ev(1, "a", "x", "view", 0, "shoes"), ev(2, "a", "y", "view", 1, "hats"),  # a: 1 bit
           ev(3, "b", "x", "view", 2, "shoes"), ev(4, "b", "x", "view", 3, "shoes"),  # b: 0 bits
           ev(5, "c", "x", "view", 4, "shoes"), ev(6, "c", "x", "view", 5, "shoes"), ev(7, "c", "y", "view", 6, "hats"),
           ev(8, "c", "z", "view", 7, "socks"), ev(9, "d", "z", "view", 8, None)]  # d has no category: left out
    result = interest(log)
    c_entropy = -(0.5 * math.log2(0.5) + 2 * 0.25 * math.log2(0.25))  # 1.5 bits
    assert result.users == 3
    assert result.mean_entropy_bits == pytest.approx((1 + 0 + c_entropy) / 3)
    assert result.median_entropy_bits == pytest.approx(1.0)
    assert result.single_category_users == pytest.approx(1 / 3)
    assert result.mean_top_share == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert result.category_reach == {"shoes": 1.0, "hats": pytest.approx(2 / 3), "socks": pytest.approx(1 / 3)}


def test_rising_and_falling_items_against_the_first_half():
    log = ([ev(k, "u", "up", "view", 10 + k) for k in range(2)] + [ev(100 + k, "u", "up", "view", 60 + k) for k in range(6)]
           + [ev(200 + k, "u", "down", "view", 10 + k) for k in range(8)] + [ev(300, "u", "down", "view", 70)]
           + [ev(400 + k, "u", "new", "view", 80 + k) for k in range(5)]
           + [ev(500, "u", "rare", "view", 10), ev(501, "u", "rare", "view", 80)])
    rising, falling = trends(log, split_ts=50, min_events=5)
    assert [(t.item_id, t.before, t.now, t.growth) for t in rising] == [("new", 0, 5, math.inf), ("up", 2, 6, 2.0)]
    assert [(t.item_id, t.before, t.now, t.growth) for t in falling] == [("down", 8, 1, -0.875)]


def test_sessions_are_cut_after_30_quiet_minutes():
    log = [ev(1, "a", "x", "view", 0), ev(2, "a", "x", "view", 600), ev(3, "a", "x", "view", 600 + 1800),  # 1800 s gap: same
           ev(4, "a", "x", "view", 600 + 1800 + 1801),  # > 30 min: a new session of one event
           ev(5, "b", "x", "view", 100)]
    result = sessions(log)
    assert result.count == 3
    assert result.depth == {"mean": pytest.approx(5 / 3), "p50": 1.0, "p90": pytest.approx(2.6), "max": 3.0}
    assert result.length_s["max"] == 2400.0 and result.length_s["p50"] == 0.0
    assert result.single_event_share == pytest.approx(2 / 3)


def test_the_report_command_on_a_file_and_its_refusals(tmp_path):
    import json

    from click.testing import CliRunner

    from streamrec.cli.report import report

    path = tmp_path / "log.jsonl"
    path.write_text("\n".join(json.dumps(e.to_dict()) for e in FUNNEL_LOG) + "\nnot json\n")
    result = CliRunner().invoke(report, ["behaviour", "--events", str(path), "--format", "jsonl", "--last", "30m",
                                         "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    # The last 30 minutes before the newest event (hour 1, +50 s): only the hats events.
    assert out["events"] == 5 and out["rejected"] == {"bad_line": 1}
    assert [r["category"] for r in out["funnel"] if r["hour"] == "*"] == ["hats", "*"]
    assert out["funnel"][-1]["drop_out"] == {"view→click": 0.0}
    text = CliRunner().invoke(report, ["behaviour", "--events", str(path), "--format", "jsonl", "--last", "all"])
    assert text.exit_code == 0 and "shoes" in text.output and "sessions (30-minute gap): " in text.output
    bad = CliRunner().invoke(report, ["behaviour", "--events", str(path), "--format", "jsonl", "--timezone", "Mars/Base"])
    assert bad.exit_code == 2 and "is not a time zone name" in bad.output
