"""``streamrec demo``: the whole loop, end to end, on a synthetic shop.

Starts the local broker (unless one runs), publishes the shop's catalog, trains a model on
the shop's history, starts a real worker, replays live events through Kafka, and shows for a
few shoppers what they just did and what they are recommended now. Then the catalog lives: a
product that did not exist at training time is launched and its fans find it in their lists,
and the most recommended product sells out and leaves every list. Stops everything it started.
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
    from indexing.train import TrainParams, interactions_from_events, train_model
    from streamrec.evaluation.choose import choose_for
    from streamrec.evaluation.served import ServedModel
    from streams.shell import interest_params
    from producers.publisher import EventPublisher
    from producers.synthetic import SyntheticShop
    from streamrec.contract import encode_catalog_item
    from streamrec.core.items import catalog_features
    from streamrec.harness.topics import last_event_per_user, read_topic, wait_for_answers
    from streamrec.harness.worker import WorkerConfig, WorkerProcess
    from streamrec.kafka import KafkaLauncher
    from streamrec.kafka.admin import ensure_topics

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
        data.item_features = catalog_features({item.item_id: item for item in shop.catalog()})  # brands learn together
        interest = interest_params(settings)  # the worker's rules (the factor step's "auto" chooses here)
        trained = train_model(data, TrainParams(), interest)
        choice = choose_for(trained, data, TrainParams(), interest, model=ServedModel)
        summary = trained.summary
        models_dir = workdir / "models"
        trained.save(models_dir, factory="auto")
        click.echo(
            f"   {summary['events']} events of {summary['users']} shoppers over {summary['items']} items -> "
            f"item vectors d={trained.context.shape[1]} in {summary['seconds']:.1f} s; "
            f"{summary.get('refine', {}).get('features', 0)} catalog features (categories, brands) learnt with their items"
        )
        if choice is not None:
            click.echo(f"   factor step: {choice.chosen()}, chosen on {choice.users:,} shoppers' held-out events "
                       "(0: the order of their events says enough)")
        items_topic = f"demo-{run}-items"
        ensure_topics(launcher.bootstrap, {items_topic: settings.kafka.partitions},
                      configs={items_topic: {"cleanup.policy": "compact"}})
        with EventPublisher(launcher.bootstrap, items_topic) as publisher:
            for item in shop.catalog(updated_at=start_ts):
                publisher.publish_raw(item.item_id.encode(), encode_catalog_item(item))
        click.echo(f"   the catalog: {shop.n_items} products published to {items_topic} (compacted, keyed by item_id)")

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
            extra_env={"STREAMREC_KAFKA__ITEMS_TOPIC": items_topic},
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
        last_event = last_event_per_user(future)
        recs = [rec for rec, _ in wait_for_answers(launcher.bootstrap, config.recommendations_topic,
                                                     last_event.values(), timeout=120)]
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

        _living_catalog(shop, launcher.bootstrap, config, items_topic, future, recs)
        click.secho("\n8. Stopping what the demo started", bold=True)
    click.echo(f"done; the run's files are in {workdir}")



def _living_catalog(shop, bootstrap: str, config, items_topic: str, future, recs) -> None:  # noqa: ANN001
    """Launch a product the model never saw, let its line's fans find it; sell out the most
    recommended product and show that it leaves the lists."""
    import msgspec

    from producers.publisher import EventPublisher
    from streamrec.contract import Event, encode_catalog_item
    from streamrec.harness.topics import last_event_per_user, wait_for_answers

    click.secho("\n6. A new product, launched after the model was trained", bold=True)
    like = int(np.argmax(shop.item_popularity))
    cluster = int(shop.item_cluster[like])
    new = shop.new_item(f"sku-new-{uuid.uuid4().hex[:6]}", like, updated_at=time.time())
    fans = [shop.user_ids[u] for u in range(shop.n_users) if cluster in shop.user_clusters[u]][:40]
    siblings = [shop.item_ids[i] for i in np.flatnonzero(shop.item_cluster == cluster)]
    now = time.time()
    events = []
    for rep in range(3):
        for n, user in enumerate(fans):
            events.append(Event(f"demo-new-{rep}-{n}-{new.item_id}", user, new.item_id, "view", now + rep + n / 1000))
            events.append(Event(f"demo-sib-{rep}-{n}-{new.item_id}", user, siblings[(rep + n) % len(siblings)], "view",
                                now + rep + n / 1000 + 0.0005))
    with EventPublisher(bootstrap, items_topic) as publisher:
        publisher.publish_raw(new.item_id.encode(), encode_catalog_item(new))
    with EventPublisher(bootstrap, config.events_topic) as publisher:
        for event in events:
            publisher.publish(event)
    click.echo(f"   {new.item_id} ({new.title}, {' > '.join(new.category)}): in the catalog, unknown to the model; "
               f"{len(fans)} fans of its line view it {len(events) // (2 * len(fans))} times, between its siblings")
    lists = [rec for rec, _ in wait_for_answers(bootstrap, config.recommendations_topic,
                                                last_event_per_user(events).values(), timeout=120)]
    latest = {r.user_id: r for r in lists}
    holding = [u for u in fans if any(i.item_id == new.item_id for i in latest[u].items)]
    click.echo(f"   {len(holding)} of the {len(fans)} fans now have {new.item_id} in their list, e.g. {holding[:1] or '-'}")
    if holding:
        rec = latest[holding[0]]
        for scored in rec.items:
            mark = "  <- new" if scored.item_id == new.item_id else ""
            click.echo(f"    {scored.score:7.3f}  {scored.item_id}  [{scored.source}]{mark}")

    click.secho("\n7. The most recommended product sells out", bold=True)
    counts: dict[str, int] = {}
    for rec in latest.values():
        for scored in rec.items:
            counts[scored.item_id] = counts.get(scored.item_id, 0) + 1
    sold_out = max(counts, key=counts.get)
    holders = [u for u, r in latest.items() if any(i.item_id == sold_out for i in r.items)]
    record = next(i for i in shop.catalog() if i.item_id == sold_out) if sold_out in shop.item_ids else new
    with EventPublisher(bootstrap, items_topic) as publisher:
        publisher.publish_raw(sold_out.encode(), encode_catalog_item(msgspec.structs.replace(record, available=False)))
    written = time.time()
    by_user = {e.user_id: e for e in future}
    again = [Event(f"demo-after-{n}-{sold_out}", u, by_user[u].item_id if u in by_user else siblings[0], "view",
                   time.time()) for n, u in enumerate(holders)]
    with EventPublisher(bootstrap, config.events_topic) as publisher:
        for event in again:
            publisher.publish(event)
    wanted_after = {e.event_id for e in again}
    lists = [rec for rec, _ in wait_for_answers(bootstrap, config.recommendations_topic, wanted_after, timeout=120)]
    after = [r for r in lists if r.event_id in wanted_after]
    still = sum(any(i.item_id == sold_out for i in r.items) for r in after)
    last = max((r.produced_at for r in lists if any(i.item_id == sold_out for i in r.items)), default=written)
    click.echo(f"   {sold_out} was in {len(holders)} shoppers' lists; marked available: false in the catalog")
    click.echo(f"   their next {len(after)} lists: {still} still hold it, every one has {min(len(r.items) for r in after)}"
               f"-{max(len(r.items) for r in after)} items; the last list holding it was published "
               f"{max(0.0, last - written) * 1000:.0f} ms after the catalog write")
