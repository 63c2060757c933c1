"""Demand counts, the trading calendar, the models and the backtest, on series with known answers."""

from __future__ import annotations

import json

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from click.testing import CliRunner

from streamrec.cli.forecast import forecast as forecast_command
from streamrec.contract import Event
from streamrec.forecasting.backtest import backtest_shop, mase, origins, seasonal_scale, wape
from streamrec.forecasting.demand import SHOP, DemandCounts, learn_calendar
from streamrec.forecasting.models import MODELS, forecast, trading_view

MONDAY = date(2024, 1, 1)


def ts(day: date, hour: int, zone: str = "UTC") -> float:
    return datetime(day.year, day.month, day.day, hour, tzinfo=ZoneInfo(zone)).timestamp()


def test_counts_add_quantities_per_item_category_and_shop_in_the_shops_time_zone():
    counts = DemandCounts("Europe/London")
    summer = date(2011, 7, 1)
    counts.add_all([
        Event("1", "u", "a", "purchase", ts(summer, 0, "Europe/London") + 60, category="mugs", quantity=12),
        Event("2", "u", "a", "purchase", ts(summer, 23, "Europe/London"), category="mugs"),  # no quantity: one unit
        Event("3", "u", "b", "purchase", ts(summer, 10, "Europe/London"), quantity=2),
        Event("4", "u", "b", "view", ts(summer, 10, "Europe/London"), category="mugs"),
        Event("5", "u", "b", "add_to_cart", ts(summer, 10, "Europe/London"), category="mugs"),
    ])
    # 00:01 in London in July is 23:01 UTC the day before: still 1 July for the shop.
    assert counts.days() == (summer, summer)
    assert counts.matrix([SHOP, "item:a", "item:b", "category:mugs"], summer, summer)[:, 0].tolist() == [15, 13, 2, 13]
    assert counts.units("views:category:mugs", summer) == 1 and counts.units("carts:shop", summer) == 1
    assert counts.top_items(1) == ["item:a"]
    shares = counts.hourly_shares(summer, summer)
    assert shares[0] == pytest.approx(12 / 15) and shares[10] == pytest.approx(2 / 15) and shares.sum() == pytest.approx(1)


def test_the_calendar_learns_closed_weekdays_and_closures_and_fills_them_for_the_models():
    units = np.array([[5, 5, 5, 5, 5, 0, 3] * 5], dtype=float)
    units[0, 9] = 0.0  # Wednesday of week 2: a closure
    cal = learn_calendar(units[0], MONDAY, holidays=[MONDAY + timedelta(days=40)])
    assert cal.closed_weekdays == {5} and cal.season == 6
    assert cal.closed_days == {MONDAY + timedelta(days=9), MONDAY + timedelta(days=40)}
    view, days = trading_view(units, MONDAY, cal)
    assert all(d.weekday() != 5 for d in days) and len(days) == 30
    assert view[0].tolist() == [5, 5, 5, 5, 5, 3] * 5  # the closed Wednesday took the same weekday of the week before


def test_a_constant_demand_is_forecast_as_the_constant_and_zero_on_closed_days():
    units = np.array([[40, 40, 40, 40, 40, 0, 40] * 12], dtype=float)  # closed on Saturdays
    holiday = MONDAY + timedelta(days=84)  # the next Monday, a bank holiday known in advance
    for name in ("ets", "theta", "ets+arima+seasonal-naive", "window-28", "seasonal-naive-7"):
        predicted = forecast(units, MONDAY, 7, MODELS[name], holidays=frozenset([holiday]))[0]
        expected = [0, 40, 40, 40, 40, 0, 40] if MODELS[name].calendar else [40, 40, 40, 40, 40, 0, 40]
        assert predicted == pytest.approx(expected, abs=0.5), name


def test_a_weekly_pattern_is_followed_and_noise_is_averaged_out():
    rng = np.random.default_rng(7)
    pattern = np.array([100, 140, 120, 160, 90, 0, 50], dtype=float)
    weeks = 20
    truth = np.tile(pattern, weeks + 1)
    noisy = truth[: 7 * weeks] + np.where(truth[: 7 * weeks] > 0, rng.normal(0, 5, 7 * weeks), 0)
    predicted = forecast(noisy[None, :], MONDAY, 7, MODELS["ets"])[0]
    assert np.abs(predicted - pattern).max() < 12  # follows the week; noise sd 5
    assert predicted[5] == 0.0


def test_intermittent_models_spread_their_rate_over_the_shops_week():
    rng = np.random.default_rng(3)
    shop = np.tile([100, 100, 100, 100, 200, 0, 100], 16).astype(float)  # Fridays twice the other days
    item = rng.poisson(np.where(shop > 0, shop / 100, 0)).astype(float)
    predicted = forecast(item[None, :], MONDAY, 7, MODELS["imapa"], shop_units=shop)[0]
    assert predicted[5] == 0
    assert predicted[4] == pytest.approx(2 * predicted[0], rel=0.05)


def test_wape_and_mase_by_hand():
    actual = np.array([[10.0, 20.0], [0.0, 10.0]])
    predicted = np.array([[12.0, 17.0], [1.0, 10.0]])
    assert wape(actual, predicted) == pytest.approx(6 / 40)
    scales = seasonal_scale(np.array([[1.0, 3.0, 2.0, 6.0], [5.0, 5.0, 5.0, 5.0]]), season=2)  # |2-1|,|6-3| -> 2; 0
    assert scales.tolist() == [2.0, 0.0]
    assert mase(actual, predicted, scales) == pytest.approx(2.5 / 2)  # the second series has no scale: left out
    with pytest.raises(ValueError, match="needs some actual units"):
        wape(np.zeros(3), np.ones(3))
    assert origins(70, weeks=3) == [49, 56, 63]
    with pytest.raises(ValueError, match="too few"):
        origins(20, weeks=3)


def test_the_backtest_prefers_a_4_week_average_over_last_week_on_a_noisy_stable_week():
    # Independent expectation: with iid noise of sd s, last week's value errs with sd s*sqrt(2),
    # the mean of 4 weeks with sd s*sqrt(1.25): about 0.79 of seasonal-naive's error.
    rng = np.random.default_rng(11)
    pattern = np.array([300, 420, 360, 480, 270, 0, 150], dtype=float)
    counts = DemandCounts("UTC")
    for k in range(7 * 30):
        day = MONDAY + timedelta(days=k)
        units = max(0.0, pattern[k % 7] + (rng.normal(0, 40) if pattern[k % 7] else 0))
        if units:
            counts.add(Event(str(k), "u", "a", "purchase", ts(day, 12), category="c", quantity=round(units) or 1))
    results = backtest_shop(counts, top_items=1, categories=True, test_weeks=4, validation_weeks=4,
                            shop_candidates=("seasonal-naive", "seasonal-window-4"), item_candidates=("seasonal-window-4",))
    shop = results["shop"]
    assert shop.chosen == "seasonal-window-4"
    ratio = shop.test["seasonal-window-4"].wape / shop.test["seasonal-naive-7"].wape
    assert 0.6 < ratio < 0.92
    assert set(results) == {"shop", "items", "categories"}
    assert results["categories"].test["seasonal-naive-7"].wape == pytest.approx(shop.test["seasonal-naive-7"].wape)


def test_the_cli_asks_for_a_log_in_a_sentence():
    result = CliRunner().invoke(forecast_command, ["backtest", "--dataset", "file"])
    assert result.exit_code == 2
    assert "--dataset file needs --events PATH and --format" in result.output


def test_the_backtest_command_on_a_log_file(tmp_path):
    # 20 weeks of a steady weekly pattern in two categories, written as JSON lines.
    rng = np.random.default_rng(5)
    lines = []
    for k in range(7 * 20):
        day = MONDAY + timedelta(days=k)
        for item, category, base in (("a", "mugs", 30), ("b", "cards", 12)):
            if day.weekday() != 5:
                units = int(base * (1.5 if day.weekday() == 3 else 1) + rng.integers(-3, 4))
                lines.append(Event(f"{item}{k}", "u", item, "purchase", ts(day, 12), category=category,
                                   quantity=units).to_dict())
    path = tmp_path / "log.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    result = CliRunner().invoke(forecast_command, [
        "backtest", "--dataset", "file", "--events", str(path), "--format", "jsonl", "--categories", "--top-items", "2",
        "--test-weeks", "4", "--validation-weeks", "4", "--shop-models", "seasonal-naive,seasonal-window-4",
        "--item-models", "seasonal-window-4", "--plot", str(tmp_path / "img"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    levels = {row["key"]: row for row in report["levels"]}
    assert set(levels) == {"shop", "items", "categories"} and levels["categories"]["series"] == 2
    assert levels["shop"]["test_days"] == [(MONDAY + timedelta(days=7 * 16)).isoformat(),
                                           (MONDAY + timedelta(days=7 * 20 - 1)).isoformat()]
    for row in levels.values():  # noise of +-3 units around 12 to 45: well under a fifth of the units
        assert row["test"][row["chosen"]]["wape"] < 0.2
    assert (tmp_path / "img" / "forecast-shop.png").stat().st_size > 10_000
    # Every sale was at noon: by hour, each model errs exactly as it does by day.
    shop = levels["shop"]
    assert shop["hourly_test_wape"]["model"] == pytest.approx(shop["test"][shop["chosen"]]["wape"])
    assert shop["hourly_test_wape"]["seasonal-naive-7-hourly"] == pytest.approx(shop["test"]["seasonal-naive-7"]["wape"])
    bad = CliRunner().invoke(forecast_command, ["backtest", "--shop-models", "prophet"])
    assert bad.exit_code == 2 and "unknown model(s) prophet" in bad.output


@pytest.mark.datasets
def test_online_retail_seasonal_naive_wape_matches_an_independent_pandas_computation():
    import pandas as pd

    from producers.readers import read_online_retail
    from streamrec.config import get_settings
    from streamrec.forecasting.backtest import evaluate_level

    path = get_settings().datasets_dir / "online-retail" / "online-retail.csv.gz"
    if not path.is_file():
        pytest.skip(f"Online Retail is not at {path}: the shared datasets are absent (see ../shared/datasets/README.md)")
    # Independent: pandas on the raw CSV, whose InvoiceDate is already the UK day.
    raw = pd.read_csv(path)
    sales = raw[~raw.InvoiceNo.astype(str).str.startswith("C") & (raw.Quantity > 0) & (raw.UnitPrice >= 0)]
    daily = sales.groupby(pd.to_datetime(sales.InvoiceDate).dt.normalize()).Quantity.sum()
    daily = daily.reindex(pd.date_range(daily.index.min(), daily.index.max()), fill_value=0).to_numpy(float)
    actual, last_week = daily[-56:], daily[-63:-7]
    expected = np.abs(actual - last_week).sum() / actual.sum()

    counts = DemandCounts("Europe/London").add_all(read_online_retail(path, guests=True))
    first, last = counts.days()
    shop = counts.matrix([SHOP], first, last)[0]
    assert shop.tolist() == daily.tolist()
    result = evaluate_level("shop", shop[None, :], first, shop, ("seasonal-naive",))
    assert result.test["seasonal-naive-7"].wape == pytest.approx(expected, rel=1e-9)
    assert result.test_days[0] == date(2011, 8, 20) and result.test_days[-1] == date(2011, 10, 14)
