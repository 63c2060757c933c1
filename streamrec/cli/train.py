"""``streamrec train``: item vectors from an event file, saved as a new model version."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from producers.readers import FORMATS
from streamrec.config import get_settings


def _events(dataset: Path | None, fmt: str | None, synthetic: bool, users: int, items: int, n_events: int, seed: int, limit):  # noqa: ANN001
    if synthetic:
        from producers.synthetic import SyntheticShop

        return SyntheticShop(items=items, users=users, seed=seed).events(n_events)
    from producers.readers import read_events

    return read_events(dataset, fmt, limit=limit)


def _catalog(dataset: Path | None, fmt: str | None, catalog_path: Path | None, synthetic: bool, users: int,  # noqa: ANN001, ANN202
             items: int, seed: int):
    """The shop's catalog records by item id: the synthetic shop's own, ``--catalog``, or the one
    found beside (or in) ``--dataset`` (:func:`producers.catalog.catalog_for`); None without one."""
    if synthetic and catalog_path is None:
        from producers.synthetic import SyntheticShop

        return {item.item_id: item for item in SyntheticShop(items=items, users=users, seed=seed).catalog()}
    from producers.catalog import catalog_for

    try:  # with --catalog the dataset only says which format an unnamed Online Retail file is
        return catalog_for(dataset or catalog_path, fmt or "", catalog_path)
    except (ValueError, OSError) as exc:
        raise click.ClickException(f"cannot read the catalog of {catalog_path or dataset}: {exc}") from None


@click.command()
@click.option("--dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Event file to train on.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Format of --dataset.")
@click.option("--synthetic", is_flag=True, help="Train on a seeded synthetic shop instead of a file.")
@click.option("--users", default=2000, show_default=True, type=click.IntRange(min=1))
@click.option("--items", default=5000, show_default=True, type=click.IntRange(min=2))
@click.option("--events", "n_events", default=100_000, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=7, show_default=True, type=int)
@click.option("--limit", type=click.IntRange(min=1), help="Read at most this many events.")
@click.option("--catalog", "catalog_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The shop's catalog (JSON lines, an Amazon *_item2attributes.json or the Online Retail log): items "
                   "that share a category, brand, attribute or title word learn together [default: found beside or "
                   "in --dataset, as streamrec evaluate finds it; --synthetic: the shop's own].")
@click.option("--no-catalog", is_flag=True, help="Train on the events alone, without the catalog's features.")
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), help="Where versions go [default: from settings].")
@click.option("--dim", type=click.IntRange(min=1), help="Vector dimension [default: TrainParams.dim].")
@click.option("--factory", default="auto", show_default=True, help="FAISS factory string, or auto by catalog size.")
@click.option("--json", "as_json", is_flag=True, help="Print the new version's metadata as JSON.")
@click.option("--publish", is_flag=True, help="Publish the new version to the models topic and make every worker serve it.")
@click.option("--bootstrap", help="Kafka bootstrap servers, with --publish [default: from settings].")
@click.option("--models-topic", help="Models topic, with --publish [default: from settings].")
def train(dataset, fmt, synthetic, users, items, n_events, seed, limit, catalog_path, no_catalog, models_dir, dim,  # noqa: ANN001
          factory, as_json, publish, bootstrap, models_topic) -> None:

    """Train item vectors and save them, with their FAISS index, as a new model version."""
    from dataclasses import replace

    from indexing.train import TrainParams, interactions_from_events, train_model
    from streamrec.evaluation.choose import Z, choose_for
    from streamrec.evaluation.served import ServedModel
    from streams.shell import interest_params

    if synthetic == (dataset is not None):
        raise click.UsageError("give exactly one source: --dataset PATH --format FORMAT, or --synthetic")
    if dataset is not None and fmt is None:
        raise click.UsageError(f"--format is required with --dataset; choose one of {', '.join(FORMATS)}")
    if factory != "auto":
        import faiss

        try:
            faiss.index_factory(dim or TrainParams().dim, factory, faiss.METRIC_INNER_PRODUCT)  # the model's dimension
        except RuntimeError:
            raise click.BadParameter(f"{factory!r} is not a FAISS factory string for d = {dim or TrainParams().dim} "
                                     "(try Flat, HNSW32 or IVF1024,Flat)", param_hint="--factory") from None
    started = time.perf_counter()
    params = TrainParams() if dim is None else replace(TrainParams(), dim=dim)
    try:
        data = interactions_from_events(_events(dataset, fmt, synthetic, users, items, n_events, seed, limit))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if catalog_path is not None and no_catalog:
        raise click.UsageError("--catalog and --no-catalog contradict each other; give one")
    catalog = None if no_catalog else _catalog(dataset, fmt, catalog_path, synthetic, users, items, seed)
    if catalog:
        from streamrec.core.items import catalog_features

        data.item_features = catalog_features(catalog)
    interest = interest_params(get_settings())  # the worker's rules: its taste map, its factor step's choice
    trained = train_model(data, params, interest)
    choice = choose_for(trained, data, params, interest, model=ServedModel)  # "auto": the version's own weight
    summary = trained.summary
    source = str(dataset) if dataset else f"synthetic(users={users}, items={items}, events={n_events}, seed={seed})"
    models_dir = models_dir or get_settings().index.models_dir
    if not publish:
        folder = trained.save(models_dir, factory=factory, source=source, target_recall=get_settings().index.target_recall)
    else:
        folder = _save_and_publish(models_dir, trained, factory, source, bootstrap, models_topic)
    meta = json.loads((folder / "meta.json").read_text())
    if as_json:
        click.echo(json.dumps(meta))
    else:
        click.echo(
            f"model {meta['version']}: {summary['items']} items x d={meta['dimension']} from {summary['events']} events "
            f"of {summary['users']} users, in {time.perf_counter() - started:.1f} s -> {folder}"
        )
        if catalog:
            shared = summary.get("refine", {}).get("features", 0)
            click.echo(f"catalog: {len(catalog):,} records; {shared:,} features shared by two or more items learnt "
                       "with their items")
        if choice is not None:
            click.echo(f"factor step: {choice.chosen()}, chosen on {choice.users:,} held-out users "
                       f"(HR@10 {choice.table()}; off unless a setting wins by {Z:g} standard errors)")


def _save_and_publish(models_dir, trained, factory, source, bootstrap, models_topic) -> Path:  # noqa: ANN001
    """Save as the version after the newest here or on the topic, publish it, promote it."""
    from indexing.artifact import newest_number
    from indexing.distribute import DistributionError, ModelPublisher, read_models_topic

    kafka = get_settings().kafka
    bootstrap, models_topic = bootstrap or kafka.bootstrap, models_topic or kafka.models_topic
    try:
        with ModelPublisher(bootstrap, models_topic) as publisher:
            number = max(newest_number(models_dir), read_models_topic(bootstrap, models_topic).newest_number()) + 1
            gate = {"decision": "publish", "reason": "streamrec train --publish (no gate)"}
            folder = trained.save(models_dir, factory=factory, source=source, number=number, extra_meta={"gate": gate},
                                  target_recall=get_settings().index.target_recall)
            publisher.publish_version(folder)
            publisher.promote(folder.name, reason="train --publish")
    except (DistributionError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"published {folder.name} to {models_topic} on {bootstrap} and promoted it", err=True)
    return folder
