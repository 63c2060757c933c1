"""Rolling-origin backtest: WAPE and MASE of each model against the actual daily units.

The protocol: the last ``test_weeks`` weeks of the log are the test window, the
``validation_weeks`` before them the validation window. Each window is cut into origins one
week apart; at each origin every model sees only the days before it (its calendar is learned
from them too, plus the holidays known in advance) and forecasts the next ``horizon`` days.
The model of each level (shop total, top items) is chosen by its WAPE on the validation
window; the test window then scores it once.

WAPE = sum |actual - forecast| / sum actual, over every series, origin and day of the window.
MASE = mean |actual - forecast| / mean |y_t - y_{t-7}| of the series' history before the
window (seasonal-naive's in-sample error on calendar days), averaged over the series whose
scale is not zero.

>>> wape(np.array([10.0, 0.0, 30.0]), np.array([12.0, 1.0, 27.0]))
0.15
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np

from streamrec.forecasting.demand import SHOP, DemandCounts
from streamrec.forecasting.models import MODELS, ModelSpec, forecast

SHOP_CANDIDATES = ("seasonal-naive", "seasonal-window-4", "ets", "theta", "arima", "ets+theta",
                   "ets+theta+arima", "ets+theta+window", "ets+theta+seasonal-naive", "ets+arima+seasonal-naive",
                   "ets-16w", "theta-16w", "mstl")
ITEM_CANDIDATES = ("seasonal-naive", "seasonal-window-4", "theta", "croston", "adida", "imapa", "tsb",
                   "window-28", "imapa+window")
BASELINES = ("seasonal-naive-7", "naive", "historic-average")


def wape(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Weighted absolute percentage error: total absolute error over total actual units."""
    total = float(np.sum(actual))
    if total <= 0:
        raise ValueError("WAPE needs some actual units in the window")
    return float(np.sum(np.abs(np.asarray(actual) - np.asarray(predicted))) / total)


def mase(actual: np.ndarray, predicted: np.ndarray, scales: np.ndarray) -> float:
    """Mean over series (rows) of their mean absolute error divided by their scale; series of scale 0 left out."""
    actual = np.atleast_2d(actual).reshape(len(scales), -1)
    predicted = np.atleast_2d(predicted).reshape(len(scales), -1)
    ok = scales > 0
    if not ok.any():
        return float("nan")
    return float(np.mean(np.abs(actual[ok] - predicted[ok]).mean(axis=1) / scales[ok]))


def seasonal_scale(history: np.ndarray, season: int = 7) -> np.ndarray:
    """Each series' in-sample mean absolute seasonal difference (the MASE denominator)."""
    history = np.atleast_2d(history)
    if history.shape[1] <= season:
        return np.zeros(history.shape[0])
    return np.abs(history[:, season:] - history[:, :-season]).mean(axis=1)


def origins(n_days: int, *, weeks: int, horizon: int = 7, end: int | None = None) -> list[int]:
    """Day indices of ``weeks`` forecast origins one week apart whose horizons end at ``end`` (default: the last day).

    >>> origins(100, weeks=2)
    [86, 93]
    """
    end = n_days if end is None else end
    first = end - 7 * weeks
    if first < 14:
        raise ValueError(f"{n_days} days are too few for {weeks} weeks of origins after two weeks of history")
    return [first + 7 * k for k in range(weeks) if first + 7 * k + horizon <= end]


@dataclass
class Score:
    model: str
    wape: float
    mase: float


@dataclass
class LevelResult:
    """The scores of every model on one level (``shop`` or ``items``) in both windows."""

    level: str
    series: int
    validation: dict[str, Score] = field(default_factory=dict)
    test: dict[str, Score] = field(default_factory=dict)
    chosen: str = ""
    #: The chosen model's and seasonal-naive-7's test forecasts, and the actuals (series × days).
    test_forecasts: dict[str, np.ndarray] = field(default_factory=dict)
    test_actuals: np.ndarray | None = None
    test_days: list[date] = field(default_factory=list)


def _window(units: np.ndarray, start: date, window: Sequence[int], horizon: int, spec: ModelSpec,
            holidays: frozenset[date], shop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    forecasts, actuals = [], []
    for origin in window:
        forecasts.append(forecast(units[:, :origin], start, horizon, spec, holidays=holidays,
                                  shop_units=shop[:origin]))
        actuals.append(units[:, origin:origin + horizon])
    return np.concatenate(forecasts, axis=1), np.concatenate(actuals, axis=1)


def evaluate_level(level: str, units: np.ndarray, start: date, shop: np.ndarray, candidates: Sequence[str], *,
                   test_weeks: int = 8, validation_weeks: int = 8, horizon: int = 7,
                   holidays: frozenset[date] = frozenset(),
                   progress: Callable[[str], None] | None = None) -> LevelResult:
    """Score ``candidates`` and the baselines on ``units`` (series × days) in the validation and test windows."""
    n_days = units.shape[1]
    test = origins(n_days, weeks=test_weeks, horizon=horizon)
    validation = origins(n_days, weeks=validation_weeks, horizon=horizon, end=test[0])
    result = LevelResult(level, units.shape[0])
    windows = {"validation": (validation, result.validation), "test": (test, result.test)}
    for name in dict.fromkeys([*BASELINES, *candidates]):
        spec = MODELS[name]
        for window_name, (window, scores) in windows.items():
            if progress:
                progress(f"{level}: {name} ({window_name})")
            predicted, actual = _window(units, start, window, horizon, spec, holidays, shop)
            scale = seasonal_scale(units[:, :window[0]])
            scores[name] = Score(name, wape(actual, predicted), mase(actual, predicted, scale))
            if window_name == "test":
                result.test_forecasts[name] = predicted
                result.test_actuals = actual
    result.chosen = min(candidates, key=lambda name: result.validation[name].wape)
    result.test_days = [start + timedelta(days=origin + k) for origin in test for k in range(horizon)]
    return result


def backtest_shop(counts: DemandCounts, *, top_items: int = 200, test_weeks: int = 8, validation_weeks: int = 8,
                  horizon: int = 7, holidays: frozenset[date] = frozenset(),
                  shop_candidates: Sequence[str] = SHOP_CANDIDATES, item_candidates: Sequence[str] = ITEM_CANDIDATES,
                  categories: bool = False,
                  progress: Callable[[str], None] | None = None) -> dict[str, LevelResult]:
    """The backtest of one shop's log: its daily total, its ``top_items`` best-selling items (by
    units before the validation window, so that neither window chooses them) and, with
    ``categories``, its categories. Returns one :class:`LevelResult` per level."""
    span = counts.days()
    if span is None:
        raise ValueError("the log has no purchases: there is no demand to forecast")
    first, last = span
    shop = counts.matrix([SHOP], first, last)[0]
    n_days = shop.shape[0]
    test = origins(n_days, weeks=test_weeks, horizon=horizon)
    validation_start = first + timedelta(days=test[0] - 7 * validation_weeks)
    kwargs = dict(test_weeks=test_weeks, validation_weeks=validation_weeks, horizon=horizon, holidays=holidays,
                  progress=progress)
    results = {"shop": evaluate_level("shop", shop[None, :], first, shop, shop_candidates, **kwargs)}
    if top_items:
        items = counts.top_items(top_items, before=validation_start)
        if items:
            results["items"] = evaluate_level(f"top {len(items)} items", counts.matrix(items, first, last), first,
                                              shop, item_candidates, **kwargs)
    if categories:
        names = [s for s in counts.series_names() if s.startswith("category:")]
        if names:
            results["categories"] = evaluate_level(f"{len(names)} categories", counts.matrix(names, first, last),
                                                   first, shop, shop_candidates, **kwargs)
    return results


def report(results: dict[str, LevelResult], hourly: dict[str, float] | None = None) -> list[dict[str, object]]:
    """One row per level: the chosen model's and the baselines' test scores, and the gain over seasonal-naive-7."""
    rows = []
    for key, result in results.items():
        chosen, base = result.test[result.chosen], result.test["seasonal-naive-7"]
        rows.append({
            "level": result.level, "series": result.series, "chosen": result.chosen,
            "validation_wape": {name: s.wape for name, s in result.validation.items()},
            "test": {name: {"wape": s.wape, "mase": s.mase} for name, s in result.test.items()},
            "wape_gain_vs_seasonal_naive_7": 1 - chosen.wape / base.wape,
            "test_days": [d.isoformat() for d in (result.test_days[0], result.test_days[-1])],
            "key": key,
        })
        if key == "shop" and hourly is not None:
            rows[-1]["hourly_test_wape"] = hourly
    return rows


#: Days of history whose hourly shares split a daily forecast into hours.
HOURLY_SHARE_DAYS = 28


def hourly_backtest(counts: DemandCounts, shop: LevelResult) -> dict[str, float]:
    """WAPE of the shop's hour-by-hour forecast in the test window: the chosen model's daily
    forecast split by the hourly shares of the 28 days before its origin, against the same hour a
    week before (seasonal-naive over hours). Over the hours of days the shop traded."""
    first, _ = counts.days() or (None, None)
    if first is None or not shop.test_days:
        raise ValueError("no test window to score")
    days = shop.test_days
    hours = counts.hourly_matrix(first, days[-1])
    offset = (days[0] - first).days
    actual = hours[offset:]
    last_week = hours[offset - 7:len(hours) - 7]
    daily = shop.test_forecasts[shop.chosen][0]
    predicted = np.zeros_like(actual)
    for k in range(len(days)):
        origin = offset + 7 * (k // 7)
        window = hours[max(0, origin - HOURLY_SHARE_DAYS):origin].sum(axis=0)
        shares = window / window.sum() if window.sum() > 0 else np.full(24, 1 / 24)
        predicted[k] = daily[k] * shares
    return {"model": wape(actual, predicted), "seasonal-naive-7-hourly": wape(actual, last_week),
            "daily_split_by_hourly_shares": shop.chosen}
