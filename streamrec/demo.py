"""``streamrec demo``: the whole loop, end to end, on a synthetic shop.

Starts the local broker (unless one runs), trains a model on the shop's history, starts a
real worker, replays live events through Kafka, and shows for a few shoppers what they just
did and what they are recommended now. Stops everything it started.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from contextlib import ExitStack

import click
import numpy as np

from streamrec.config import get_settings


def _show_user(user_id: str, events, rec, categories: dict[str, str], latency_ms: float | None) -> None:  # noqa: ANN001
    click.secho(f"\n{user_id}", bold=True)
    click.echo("  just did:")
    for event in events[-5:]:
        click.echo(f"    {event.type:<12} {event.item_id}  ({categories.get(event.item_id, '?')})")
    fresh = f", {latency_ms:.0f} ms after the event was published" if latency_ms is not None else ""
    click.echo(f"  recommended now (model {rec.model_version}{fresh}):")
    for scored in rec.items[:5]:
        click.echo(f"    {scored.score:7.3f}  {scored.item_id}  ({categories.get(scored.item_id, '?')})")


@click.command()
@click.option("--users", default=500, show_default=True, type=click.IntRange(min=10))
@click.option("--items", default=2000, show_default=True, type=click.IntRange(min=50))
@click.option("--history", default=60_000, show_default=True, type=click.IntRange(min=1000), help="Events to train on.")
@click.option("--live", default=4_000, show_default=True, type=click.IntRange(min=10), help="Events replayed live.")
@click.option("--rate", default=500.0, show_default=True, type=click.FloatRange(min=1), help="Live events per second.")
@click.option("--show", default=3, show_default=True, type=click.IntRange(min=1), help="Shoppers to show.")
@click.option("--seed", default=7, show_default=True, type=int)
def demo(users: int, items: int, history: int, live: int, rate: float, show: int, seed: int) -> None:
    """Run the whole loop on a synthetic shop and show fresh recommendations."""
    from indexing.artifact import save_artifact
    from indexing.train import TrainParams, interactions_from_events, train_item_vectors
    from producers.publisher import EventPublisher
    from producers.synthetic import SyntheticShop
    from streamrec.contract import decode_recommendation
    from streamrec.kafka import KafkaLauncher
    from streams.process import WorkerConfig, WorkerProcess
    from streams.reader import read_topic

    settings = get_settings()
    run = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    workdir = settings.home / ".demo" / run
    with ExitStack() as stack:
        launcher = KafkaLauncher(settings.local_kafka)
        click.secho("1. Kafka", bold=True)
        if launcher.up(timeout=120):
            stack.callback(launcher.down)
            click.echo(f"   started Apache Kafka {launcher.status().kafka_version} on {launcher.bootstrap}")
        else:
            click.echo(f"   using the broker already running on {launcher.bootstrap}")

        click.secho("2. A synthetic shop and a model trained on its history", bold=True)
        shop = SyntheticShop(items=items, users=users, seed=seed)
        start_ts = time.time() - 3 * 24 * 3600
        stream = list(shop.events(history + live, start_ts=start_ts))
        past, future = stream[:history], stream[history:]
        data = interactions_from_events(past)
        context, target, summary = train_item_vectors(data, TrainParams())
        models_dir = workdir / "models"
        save_artifact(models_dir, data.item_ids, context, target, factory="auto", training=summary)
        future = [e for e in future if e.item_id in set(data.item_ids)]
        click.echo(
            f"   {summary['events']} events of {summary['users']} shoppers over {summary['items']} items -> "
            f"item vectors d={context.shape[1]} in {summary['seconds']:.1f} s"
        )

        click.secho("3. A worker", bold=True)
        config = WorkerConfig(
            bootstrap=launcher.bootstrap,
            models_dir=models_dir,
            data_dir=workdir / "worker",
            app_id=f"streamrec-demo-{run}",
            events_topic=f"demo-{run}-events",
            recommendations_topic=f"demo-{run}-recommendations",
            dlq_topic=f"demo-{run}-events-dlq",
            partitions=settings.kafka.partitions,
        )
        worker = WorkerProcess(config, log_file=workdir / "worker.log")
        worker.start()
        stack.callback(worker.stop)
        ready_s = worker.wait_ready(timeout=120)
        click.echo(f"   ready in {ready_s:.1f} s (log: {worker.log_file})")

        click.secho(f"4. Replaying {len(future)} live events at {rate:.0f}/s", bold=True)
        published_at: dict[str, float] = {}
        interval = 1.0 / rate
        with EventPublisher(launcher.bootstrap, config.events_topic) as publisher:
            # A new broker needs a moment before the first idempotent producer may send: let
            # the first event through before the clock starts, so it does not hold up the rest.
            published_at[future[0].event_id] = time.time()
            publisher.publish(future[0])
            publisher.flush(timeout=60)
            read_topic(launcher.bootstrap, config.recommendations_topic, done=bool, timeout=60)
            future_rest = future[1:]
            began = time.monotonic()
            with click.progressbar(future_rest, label="   events", width=40) as bar:
                for n, event in enumerate(bar):
                    delay = began + n * interval - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    published_at[event.event_id] = time.time()
                    publisher.publish(event)
        last_event = {e.user_id: e.event_id for e in future}

        def caught_up(messages) -> bool:  # noqa: ANN001
            latest = {}
            for _, value in messages:
                rec = decode_recommendation(value)
                latest[rec.user_id] = rec.event_id
            return all(latest.get(u) == e for u, e in last_event.items())

        messages = read_topic(launcher.bootstrap, config.recommendations_topic, done=caught_up, timeout=120)
        recs = [decode_recommendation(v) for _, v in messages]
        latencies = [
            (r.produced_at - published_at[r.event_id]) * 1000 for r in recs if r.event_id in published_at
        ]
        click.echo(
            f"   {len(recs)} recommendation messages for {len(last_event)} shoppers; event-to-recommendation "
            f"p50 {np.percentile(latencies, 50):.0f} ms, p95 {np.percentile(latencies, 95):.0f} ms"
        )

        click.secho("5. What shoppers just did, and what they are recommended now", bold=True)
        per_user = defaultdict(list)
        for event in future:
            per_user[event.user_id].append(event)
        latest = {r.user_id: r for r in recs}
        categories = {e.item_id: e.category for e in stream if e.category}
        for user_id in sorted(per_user, key=lambda u: -len(per_user[u]))[:show]:
            rec = latest[user_id]
            lat = (rec.produced_at - published_at[rec.event_id]) * 1000 if rec.event_id in published_at else None
            _show_user(user_id, per_user[user_id], rec, categories, lat)
        click.secho("\n6. Stopping what the demo started", bold=True)
    click.echo(f"done; the run's files are in {workdir}")

