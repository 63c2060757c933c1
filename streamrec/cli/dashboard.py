"""``streamrec dashboard``: the live operations page (streams/dashboard.py, docs/operations.md),
with the business panels (streams/panels.py, docs/business.md)."""

from __future__ import annotations

import click

from streamrec.config import get_settings


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve the page on.")
@click.option("--port", default=8090, show_default=True, type=click.IntRange(1, 65535), help="Port to serve the page on.")
@click.option("--metrics", "urls", multiple=True, metavar="URL",
              help="A worker's (or serve's) /metrics endpoint to read; repeatable "
                   "[default: http://127.0.0.1:<worker.metrics_port>/metrics].")
@click.option("--bootstrap", help="Kafka bootstrap servers, for the topics read [default: from settings].")
@click.option("--dlq-topic", help="Dead-letter topic whose latest letters are shown [default: from settings].")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(min=0.1), help="Seconds between scrapes.")
@click.option("--business/--no-business", default=True, show_default=True,
              help="Show the conversion, forecast and funnel panels (read from the attribution, forecasts and events topics).")
@click.option("--attribution-topic", help="Attribution topic (conversion panel) [default: settings kafka.attribution_topic].")
@click.option("--forecasts-topic", help="Forecasts topic (forecast panel) [default: settings kafka.forecasts_topic].")
@click.option("--events-topic", help="Events topic (funnel and actuals) [default: settings kafka.events_topic].")
@click.option("--funnel-window", default="24h", show_default=True,
              help="Event time the funnel covers, back from the newest event (like 24h, 30m, 7d).")
@click.option("--max-events", default=100_000, show_default=True, type=click.IntRange(min=1),
              help="Most events the funnel window holds (the oldest go first).")
@click.option("--actual-days", default=7, show_default=True, type=click.IntRange(1, 366),
              help="Days of sold units kept as the forecasts' actuals.")
@click.option("--timezone", default="UTC", show_default=True,
              help="The shop's time zone, where its days begin (as `streamrec forecast run --timezone`).")
def dashboard(host, port, urls, bootstrap, dlq_topic, interval, business, attribution_topic, forecasts_topic,  # noqa: ANN001
              events_topic, funnel_window, max_events, actual_days, timezone) -> None:
    """Serve the operations page: events/s, latency, lag, dead letters, models in use; and
    conversion by experiment variant, forecasts against actuals, and the funnel."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from aiohttp import web

    from streamrec.cli.report import parse_duration
    from streamrec.core.experiments import experiment_from_dict
    from streams.dashboard import DeadLetterTail, Scraper, make_app
    from streams.panels import BusinessPanels

    try:
        window_s = parse_duration(funnel_window)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--funnel-window") from None
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise click.BadParameter(f"{timezone!r} is not an IANA time zone name (like UTC or Europe/London)",
                                 param_hint="--timezone") from None
    settings = get_settings()
    kafka = settings.kafka
    bootstrap = bootstrap or kafka.bootstrap
    urls = list(urls) or [f"http://127.0.0.1:{settings.worker.metrics_port}/metrics"]
    tail = DeadLetterTail(bootstrap, dlq_topic or kafka.dlq_topic)
    panels = None
    if business:
        panels = BusinessPanels(
            bootstrap, attribution_topic=attribution_topic or kafka.attribution_topic,
            forecasts_topic=forecasts_topic or kafka.forecasts_topic, events_topic=events_topic or kafka.events_topic,
            experiments=[experiment_from_dict(e.model_dump()) for e in settings.experiments], window_s=window_s,
            max_events=max_events, actual_days=actual_days, timezone=timezone)
    token = settings.serve.token.get_secret_value() if settings.serve.token is not None else None
    app = make_app(Scraper(urls, interval_s=interval, token=token), tail, panels)  # serve's /metrics needs its token
    click.echo(f"dashboard on http://{host}:{port}/ reading {', '.join(urls)} and {tail.topic}", err=True)
    web.run_app(app, host=host, port=port, print=None)
