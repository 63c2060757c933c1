"""``streamrec attribute``: the attribution job (:mod:`streams.attribution`)."""

from __future__ import annotations

import json
import signal
import threading

import click

from streamrec.config import get_settings


@click.command()
@click.option("--bootstrap", help="Kafka bootstrap servers [default: from settings].")
@click.option("--window-hours", type=click.FloatRange(min=0, min_open=True),
              help="Attribute an action naming no list to a list that held its item this long before it "
                   "[default: settings attribution.window_s, 24 h].")
@click.option("--once", is_flag=True, help="Read the events topic to its current end, publish the aggregates and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print the job's statistics as JSON when it stops.")
def attribute(bootstrap, window_hours, once, as_json) -> None:  # noqa: ANN001
    """Credit clicks, add-to-carts and purchases to the lists that earned them; publish per hour,
    model version and experiment variant to the attribution topic."""
    from streams.attribution import AttributionJob

    settings = get_settings()
    updates = {}
    if bootstrap:
        updates["kafka"] = settings.kafka.model_copy(update={"bootstrap": bootstrap})
    if window_hours is not None:
        updates["attribution"] = settings.attribution.model_copy(update={"window_s": window_hours * 3600.0})
    settings = settings.model_copy(update=updates)
    kafka = settings.kafka
    click.echo(f"attribution: {kafka.recommendations_topic} + {kafka.events_topic} -> {kafka.attribution_topic} "
               f"on {kafka.bootstrap} (window {settings.attribution.window_s / 3600:g} h)", err=True)
    stop = threading.Event()
    if not once:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    try:
        stats = AttributionJob(settings).run(once=once, stop=stop)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    summary = {"events": stats.events, "lists": stats.lists, "attributed": stats.attributed,
               "published": stats.published, "skipped": stats.skipped}
    click.echo(json.dumps(summary) if as_json else
               f"{stats.events} events, {stats.lists} lists, {stats.attributed} attributed actions, "
               f"{stats.published} records published")
