"""``streamrec dashboard``: the live operations page (streams/dashboard.py, docs/operations.md)."""

from __future__ import annotations

import click

from streamrec.config import get_settings


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve the page on.")
@click.option("--port", default=8090, show_default=True, type=click.IntRange(1, 65535), help="Port to serve the page on.")
@click.option("--metrics", "urls", multiple=True, metavar="URL",
              help="A worker's (or serve's) /metrics endpoint to read; repeatable "
                   "[default: http://127.0.0.1:<worker.metrics_port>/metrics].")
@click.option("--bootstrap", help="Kafka bootstrap servers, for the dead-letter topic [default: from settings].")
@click.option("--dlq-topic", help="Dead-letter topic whose latest letters are shown [default: from settings].")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(min=0.1), help="Seconds between scrapes.")
def dashboard(host, port, urls, bootstrap, dlq_topic, interval) -> None:  # noqa: ANN001
    """Serve the operations page: events/s, latency, lag, dead letters, models in use."""
    from aiohttp import web

    from streams.dashboard import DeadLetterTail, Scraper, make_app

    settings = get_settings()
    urls = list(urls) or [f"http://127.0.0.1:{settings.worker.metrics_port}/metrics"]
    tail = DeadLetterTail(bootstrap or settings.kafka.bootstrap, dlq_topic or settings.kafka.dlq_topic)
    token = settings.serve.token.get_secret_value() if settings.serve.token is not None else None
    app = make_app(Scraper(urls, interval_s=interval, token=token), tail)  # serve's /metrics needs its token
    click.echo(f"dashboard on http://{host}:{port}/ reading {', '.join(urls)} and {tail.topic}", err=True)
    web.run_app(app, host=host, port=port, print=None)
