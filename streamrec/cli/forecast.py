"""``streamrec forecast``: demand forecasting: ``backtest`` on a log, ``run`` the live service."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import click

from producers.readers import FORMATS, read_events, read_online_retail

logger = logging.getLogger(__name__)


#: ``--dataset synthetic``: a seeded synthetic shop with 20 categories, 400,000 events over 26 weeks from
#: Monday 2024-01-01 UTC (stationary: no week, no trend; it shows the per-category path, not real demand).
SYNTHETIC_SHOP = {"items": 2000, "users": 5000, "seed": 7}
SYNTHETIC_EVENTS = 400_000
SYNTHETIC_WEEKS = 26
SYNTHETIC_START_TS = 1_704_067_200.0


@click.group()
def forecast() -> None:
    """Daily demand forecasts in units per item, category and shop."""


def _models(value: str | None) -> tuple[str, ...] | None:
    from streamrec.forecasting.models import MODELS

    if value is None:
        return None
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise click.BadParameter(f"unknown model(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(MODELS)}")
    return names


def _load_counts(dataset: str, events_path: Path | None, fmt: str | None, timezone: str | None) -> tuple[Any, str]:
    from streamrec.config import get_settings
    from streamrec.forecasting.demand import DemandCounts

    if dataset == "online-retail":
        path = events_path or get_settings().datasets_dir / "online-retail" / "online-retail.csv.gz"
        if not path.is_file():
            raise click.BadParameter(f"Online Retail is not at {path}; give --events or set STREAMREC_DATASETS_DIR",
                                     param_hint="--events")
        return DemandCounts(timezone or "Europe/London").add_all(read_online_retail(path, guests=True)), str(path)
    if dataset == "synthetic":
        from producers.synthetic import SyntheticShop

        shop = SyntheticShop(**SYNTHETIC_SHOP)
        events = shop.events(SYNTHETIC_EVENTS, start_ts=SYNTHETIC_START_TS,
                             rate=SYNTHETIC_EVENTS / (SYNTHETIC_WEEKS * 7 * 86400))
        return DemandCounts(timezone or "UTC").add_all(events), "synthetic shop"
    if events_path is None or fmt is None:
        raise click.BadParameter("--dataset file needs --events PATH and --format", param_hint="--events")
    return DemandCounts(timezone or "UTC").add_all(read_events(events_path, fmt, sort_by_time=False)), str(events_path)


@forecast.command()
@click.option("--dataset", type=click.Choice(["online-retail", "synthetic", "file"]), default="online-retail",
              show_default=True,
              help="online-retail: the UCI log in the shared datasets (guest sales included, UK time, UK bank "
                   "holidays known in advance); synthetic: the seeded synthetic shop (20 categories, 26 weeks); "
                   "file: any log given by --events and --format.")
@click.option("--events", "events_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="The log to read (default for online-retail: <datasets>/online-retail/online-retail.csv.gz).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None, help="The log's format (--dataset file).")
@click.option("--timezone", default=None, help="The shop's time zone, where its days begin (IANA name).")
@click.option("--top-items", default=200, show_default=True, type=click.IntRange(0, 100_000))
@click.option("--categories/--no-categories", default=False, show_default=True, help="Also forecast each category.")
@click.option("--test-weeks", default=8, show_default=True, type=click.IntRange(1, 52))
@click.option("--validation-weeks", default=8, show_default=True, type=click.IntRange(1, 52))
@click.option("--horizon", default=7, show_default=True, type=click.IntRange(1, 7), help="Days forecast at each origin.")
@click.option("--shop-models", default=None, callback=lambda c, p, v: _models(v),
              help="Comma-separated candidates for the shop and categories (default: all of backtest.SHOP_CANDIDATES).")
@click.option("--item-models", default=None, callback=lambda c, p, v: _models(v),
              help="Comma-separated candidates for the items (default: all of backtest.ITEM_CANDIDATES).")
@click.option("--plot", "plot_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Write forecast-vs-actual PNGs (forecast-<level>.png) into this folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def backtest(dataset: str, events_path: Path | None, fmt: str | None, timezone: str | None, top_items: int,
             categories: bool, test_weeks: int, validation_weeks: int, horizon: int,
             shop_models: tuple[str, ...] | None, item_models: tuple[str, ...] | None, plot_dir: Path | None,
             as_json: bool) -> None:
    """Rolling-origin backtest: WAPE and MASE of the models against seasonal-naive on the last weeks of a log."""
    from rich.console import Console

    from streamrec.forecasting.backtest import (
        ITEM_CANDIDATES,
        SHOP_CANDIDATES,
        backtest_shop,
        hourly_backtest,
        report,
    )
    from streamrec.forecasting.demand import UK_BANK_HOLIDAYS

    console = Console(stderr=True)
    started = time.monotonic()
    counts, source = _load_counts(dataset, events_path, fmt, timezone)
    holidays = UK_BANK_HOLIDAYS if dataset == "online-retail" else frozenset()
    try:
        with console.status("backtesting") as status:
            results = backtest_shop(counts, top_items=top_items, test_weeks=test_weeks,
                                    validation_weeks=validation_weeks, horizon=horizon, holidays=holidays,
                                    categories=categories, shop_candidates=shop_models or SHOP_CANDIDATES,
                                    item_candidates=item_models or ITEM_CANDIDATES,
                                    progress=lambda text: status.update(text))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    rows = report(results, hourly_backtest(counts, results["shop"]))
    if plot_dir is not None:
        from streamrec.forecasting.plots import plot_forecasts

        for key, result in results.items():
            path = plot_forecasts(result, plot_dir / f"forecast-{key}.png",
                                  f"{Path(source).name}: {result.level}, test window")
            console.log(f"wrote {path}")
    if as_json:
        click.echo(json.dumps({"source": source, "seconds": round(time.monotonic() - started, 1), "levels": rows},
                              indent=2))
        return
    _print_table(rows, source)


def _print_table(rows: list[dict[str, Any]], source: str) -> None:
    from rich.console import Console
    from rich.table import Table

    for row in rows:
        table = Table(title=f"{Path(source).name} · {row['level']} · test {row['test_days'][0]} … {row['test_days'][1]}"
                            f" · chosen on validation: {row['chosen']}")
        for column in ("model", "validation WAPE", "test WAPE", "test MASE"):
            table.add_column(column, justify="left" if column == "model" else "right")
        for name, score in row["test"].items():
            mark = " ← chosen" if name == row["chosen"] else ""
            table.add_row(name + mark, f"{row['validation_wape'][name]:.4f}", f"{score['wape']:.4f}",
                          f"{score['mase']:.3f}")
        Console().print(table)
        click.echo(f"{row['level']}: {row['chosen']} WAPE is {row['wape_gain_vs_seasonal_naive_7']:.1%} lower "
                   f"than seasonal-naive-7")
        if "hourly_test_wape" in row:
            hourly = row["hourly_test_wape"]
            click.echo(f"{row['level']} by hour: {hourly['model']:.4f} WAPE (daily forecast × hourly shares) against "
                       f"{hourly['seasonal-naive-7-hourly']:.4f} (the same hour a week before)")


@forecast.command()
@click.option("--bootstrap", default=None, help="Kafka bootstrap servers (default: the settings').")
@click.option("--events-topic", default=None, help="The events topic (default: the settings').")
@click.option("--forecasts-topic", default=None, help="The compacted forecasts topic (default: the settings').")
@click.option("--dlq-topic", default="forecasts-dlq", show_default=True,
              help="Where events that break the contract go, with their reason.")
@click.option("--horizon", default=7, show_default=True, type=click.IntRange(1, 366), help="Days forecast.")
@click.option("--timezone", default="UTC", show_default=True, help="The shop's time zone, where its days begin.")
@click.option("--model", default="ets+arima+seasonal-naive", show_default=True,
              help="Model of the shop and category series (the backtest's choice on Online Retail).")
@click.option("--item-model", default="window-28", show_default=True, help="Model of the item series.")
@click.option("--top-items", default=200, show_default=True, type=click.IntRange(0, 1_000_000),
              help="How many best-selling items get a forecast.")
@click.option("--refit-interval", "refit_interval_s", default=3600.0, show_default=True,
              type=click.FloatRange(min=0), help="Seconds between two rounds of forecasts.")
@click.option("--rounds", default=None, type=click.IntRange(min=1), help="Stop after this many rounds (default: never).")
def run(bootstrap: str | None, events_topic: str | None, forecasts_topic: str | None, dlq_topic: str, horizon: int,
        timezone: str, model: str, item_model: str, top_items: int, refit_interval_s: float, rounds: int | None) -> None:
    """The live forecaster: read the events topic, publish daily forecasts per series to the forecasts topic."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from streamrec.config import get_settings
    from streamrec.forecasting.service import ForecasterConfig, run_forecaster

    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise click.BadParameter(f"{timezone!r} is not a time zone name like Europe/London", param_hint="--timezone") from None
    kafka = get_settings().kafka
    try:
        config = ForecasterConfig(bootstrap=bootstrap or kafka.bootstrap, events_topic=events_topic or kafka.events_topic,
                                  forecasts_topic=forecasts_topic or kafka.forecasts_topic, dlq_topic=dlq_topic,
                                  horizon=horizon, timezone=timezone, model=model, item_model=item_model,
                                  top_items=top_items, refit_interval_s=refit_interval_s)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    import signal

    stop = {"now": False}

    def request_stop(_signum: int, _frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        stats = run_forecaster(config, max_rounds=rounds, should_stop=lambda: stop["now"])
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({"events": stats.events, "rejected": stats.rejected, "rounds": stats.rounds,
                           "published": stats.published}))
