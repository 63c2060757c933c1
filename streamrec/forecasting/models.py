"""Forecasting models: statsforecast's, run over the trading days of a shop.

Nixtla's statsforecast supplies every model (ETS, Theta, ARIMA, the intermittent-demand family
Croston/ADIDA/IMAPA/TSB and the naive baselines), compiled and maintained; this module only
says which model runs on which view of a series:

- *calendar* models see the trading days only (closed weekdays removed, so a Sunday-to-Friday
  shop has a season of 6; a holiday inside the history is filled with the same weekday of the
  week before so the weekly rhythm stays aligned) and forecast zero for the days the shop is closed;
- *plain* models (the baselines the issue names: seasonal-naive with a season of 7, naive,
  historic average) see every calendar day as it is, zeros included;
- ``weekday_profile`` multiplies a flat forecast (the intermittent-demand models forecast one
  rate) by the shop's weekday profile (each trading weekday's mean units over the last eight
  weeks, relative to the mean), so an item follows the shop's week;
- an ensemble is the mean of its members' forecasts.

>>> y = np.array([10, 20, 30, 40, 50, 0, 5] * 10, dtype=float)
>>> spec = MODELS["seasonal-naive-7"]
>>> forecast(y[None, :], date(2024, 1, 1), 7, spec).round(1).tolist()   # a Monday start
[[10.0, 20.0, 30.0, 40.0, 50.0, 0.0, 5.0]]
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np

from streamrec.forecasting.demand import TradingCalendar, learn_calendar

logger = logging.getLogger(__name__)

#: How many trading weeks the weekday profile averages over.
PROFILE_WEEKS = 8


def _sf() -> Any:
    import statsforecast.models as sf  # imported on first use: it takes a few seconds

    return sf


@dataclass(frozen=True)
class ModelSpec:
    """A named forecaster: the mean of ``members`` (each builds a statsforecast model from the season)."""

    name: str
    members: tuple[Callable[[int], Any], ...]
    calendar: bool = True
    weekday_profile: bool = False
    description: str = ""
    #: Fit on the last this many trading days only (None: all of them).
    history: int | None = None


def _spec(name: str, description: str, *members: Callable[[int], Any], calendar: bool = True,
          weekday_profile: bool = False, history: int | None = None) -> ModelSpec:
    return ModelSpec(name, members, calendar, weekday_profile, description, history)


MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    # The baselines, on calendar days.
    _spec("seasonal-naive-7", "statsforecast SeasonalNaive(7) on calendar days: the same weekday last week",
          lambda s: _sf().SeasonalNaive(season_length=7), calendar=False),
    _spec("naive", "statsforecast Naive on calendar days: the last day's units",
          lambda s: _sf().Naive(), calendar=False),
    _spec("historic-average", "statsforecast HistoricAverage on calendar days",
          lambda s: _sf().HistoricAverage(), calendar=False),
    # Trading-day models.
    _spec("seasonal-naive", "SeasonalNaive over trading days (the same weekday last week; closed days 0)",
          lambda s: _sf().SeasonalNaive(season_length=s)),
    _spec("seasonal-window-4", "SeasonalWindowAverage: mean of the same weekday over the last 4 weeks",
          lambda s: _sf().SeasonalWindowAverage(season_length=s, window_size=4)),
    _spec("ets", "AutoETS with a weekly season", lambda s: _sf().AutoETS(season_length=s)),
    _spec("theta", "AutoTheta with a weekly season", lambda s: _sf().AutoTheta(season_length=s)),
    _spec("arima", "AutoARIMA with a weekly season", lambda s: _sf().AutoARIMA(season_length=s)),
    _spec("ets+theta", "mean of AutoETS and AutoTheta",
          lambda s: _sf().AutoETS(season_length=s), lambda s: _sf().AutoTheta(season_length=s)),
    _spec("ets+theta+arima", "mean of AutoETS, AutoTheta and AutoARIMA",
          lambda s: _sf().AutoETS(season_length=s), lambda s: _sf().AutoTheta(season_length=s),
          lambda s: _sf().AutoARIMA(season_length=s)),
    _spec("ets+theta+window", "mean of AutoETS, AutoTheta and the 4-week seasonal window average",
          lambda s: _sf().AutoETS(season_length=s), lambda s: _sf().AutoTheta(season_length=s),
          lambda s: _sf().SeasonalWindowAverage(season_length=s, window_size=4)),
    _spec("ets+theta+seasonal-naive", "mean of AutoETS, AutoTheta and SeasonalNaive",
          lambda s: _sf().AutoETS(season_length=s), lambda s: _sf().AutoTheta(season_length=s),
          lambda s: _sf().SeasonalNaive(season_length=s)),
    _spec("ets+arima+seasonal-naive", "mean of AutoETS, AutoARIMA and SeasonalNaive",
          lambda s: _sf().AutoETS(season_length=s), lambda s: _sf().AutoARIMA(season_length=s),
          lambda s: _sf().SeasonalNaive(season_length=s)),
    _spec("ets-16w", "AutoETS with a weekly season, fitted on the last 16 weeks",
          lambda s: _sf().AutoETS(season_length=s), history=96),
    _spec("theta-16w", "AutoTheta with a weekly season, fitted on the last 16 weeks",
          lambda s: _sf().AutoTheta(season_length=s), history=96),
    _spec("mstl", "MSTL (weekly season) with an AutoETS trend",
          lambda s: _sf().MSTL(season_length=s, trend_forecaster=_sf().AutoETS(model="ZZN"))),
    _spec("croston", "CrostonOptimized × the shop's weekday profile",
          lambda s: _sf().CrostonOptimized(), weekday_profile=True),
    _spec("adida", "ADIDA × the shop's weekday profile", lambda s: _sf().ADIDA(), weekday_profile=True),
    _spec("imapa", "IMAPA × the shop's weekday profile", lambda s: _sf().IMAPA(), weekday_profile=True),
    _spec("tsb", "TSB(0.1, 0.1) × the shop's weekday profile",
          lambda s: _sf().TSB(alpha_d=0.1, alpha_p=0.1), weekday_profile=True),
    _spec("window-28", "WindowAverage(28 trading days) × the shop's weekday profile",
          lambda s: _sf().WindowAverage(window_size=28), weekday_profile=True),
    _spec("imapa+window", "mean of IMAPA and WindowAverage(28), × the shop's weekday profile",
          lambda s: _sf().IMAPA(), lambda s: _sf().WindowAverage(window_size=28), weekday_profile=True),
)}


def trading_view(units: np.ndarray, start: date, calendar: TradingCalendar) -> tuple[np.ndarray, list[date]]:
    """The columns of ``units`` on open weekdays, a closed day among them filled with the same
    weekday one week (``calendar.season`` trading days) earlier (later for the first week); and their days."""
    days = [start + timedelta(days=k) for k in range(units.shape[1])]
    keep = [k for k, d in enumerate(days) if d.weekday() not in calendar.closed_weekdays]
    view = units[:, keep].astype(float, copy=True)
    kept_days = [days[k] for k in keep]
    season = calendar.season
    holes = [j for j, d in enumerate(kept_days) if d in calendar.closed_days]
    hole_set = set(holes)
    for j in holes:
        donor = j - season
        while donor >= 0 and donor in hole_set:
            donor -= season
        if donor < 0:
            donor = j + season
            while donor < len(kept_days) and donor in hole_set:
                donor += season
        if 0 <= donor < len(kept_days):
            view[:, j] = view[:, donor]
    return view, kept_days


def weekday_profile(shop_view: np.ndarray, view_days: list[date], weeks: int = PROFILE_WEEKS) -> dict[int, float]:
    """Each weekday's mean units over the last ``weeks`` weeks of trading days, relative to the overall mean (1.0 if flat)."""
    recent = view_days[-7 * weeks:]
    values = shop_view[-len(recent):] if recent else shop_view[:0]
    means = {wd: float(values[[d.weekday() == wd for d in recent]].mean())
             for wd in {d.weekday() for d in recent}}
    overall = float(np.mean(list(means.values()))) if means else 0.0
    if overall <= 0:
        return {wd: 1.0 for wd in range(7)}
    return {wd: m / overall for wd, m in means.items()}


def _one(model_factory: Callable[[int], Any], season: int, y: np.ndarray, h: int) -> np.ndarray:
    if h == 0:
        return np.zeros(0)
    if not y.any():
        return np.zeros(h)
    if len(y) < 2 * season + 1:  # too short for a seasonal fit: the mean of what there is
        return np.full(h, float(y.mean()))
    model = model_factory(season)
    try:
        return np.asarray(model.forecast(y=y, h=h)["mean"], dtype=float)
    except Exception as exc:  # noqa: BLE001 - a fit that fails on one odd series falls back, never stops the rest
        logger.warning("%s failed on a series of %d days (%s); its recent mean stands in", type(model).__name__, len(y), exc)
        return np.full(h, float(y[-7 * season:].mean()) if len(y) else 0.0)


def forecast(units: np.ndarray, start: date, horizon: int, spec: ModelSpec, *,
             holidays: frozenset[date] = frozenset(), shop_units: np.ndarray | None = None,
             calendar: TradingCalendar | None = None) -> np.ndarray:
    """Forecast the ``horizon`` days after the history ``units`` (series × days, first day ``start``).

    The trading calendar is learned from ``shop_units`` (the shop total; the sum of the rows if
    None) plus the ``holidays`` known in advance, unless ``calendar`` is given. Returns series ×
    horizon, never negative.
    """
    units = np.atleast_2d(np.asarray(units, dtype=float))
    if units.ndim != 2 or units.shape[1] == 0:
        raise ValueError("units must be a non-empty matrix of series × days")
    if not np.isfinite(units).all():
        raise ValueError("units must be finite")
    if horizon < 1:
        raise ValueError(f"horizon must be at least one day, got {horizon}")
    out = np.zeros((units.shape[0], horizon))
    if not spec.calendar:
        for row, y in enumerate(units):
            out[row] = np.mean([_one(m, 7, y, horizon) for m in spec.members], axis=0)
        return np.maximum(out, 0.0)
    shop = units.sum(axis=0) if shop_units is None else np.asarray(shop_units, dtype=float)
    if calendar is None:
        calendar = learn_calendar(shop, start, holidays)
    view, view_days = trading_view(units, start, calendar)
    first_future = start + timedelta(days=units.shape[1])
    future = [first_future + timedelta(days=k) for k in range(horizon)]
    future_cols = [k for k, d in enumerate(future) if d.weekday() not in calendar.closed_weekdays]
    profile = None
    if spec.weekday_profile:
        shop_view, _ = trading_view(shop[None, :], start, calendar)
        profile = weekday_profile(shop_view[0], view_days)
    if spec.history is not None:
        view, view_days = view[:, -spec.history:], view_days[-spec.history:]
    for row, y in enumerate(view):
        values = np.mean([_one(m, calendar.season, y, len(future_cols)) for m in spec.members], axis=0)
        if profile is not None:
            values = values * np.array([profile.get(future[k].weekday(), 1.0) for k in future_cols])
        out[row, future_cols] = values
    for k, d in enumerate(future):
        if not calendar.is_open(d):
            out[:, k] = 0.0
    return np.maximum(out, 0.0)
