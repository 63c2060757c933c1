"""``streamrec evaluate``: every model under one protocol on one dataset, as a table or JSON."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import click

from streamrec.evaluation.models import KNOWN_MODELS, MODEL_NAMES

logger = logging.getLogger(__name__)

from producers.readers import FORMATS

PROTOCOLS = ["leave-one-out", "prequential", "new-items"]


def _model_names(_ctx: click.Context, _param: click.Parameter, value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in KNOWN_MODELS]
    if unknown or not names:
        raise click.BadParameter(
            f"unknown model(s) {', '.join(unknown) or '(none given)'}; give a comma-separated list of "
            f"{', '.join(KNOWN_MODELS)}"
        )
    return names


def _overrides(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> dict[str, str]:
    from streamrec.evaluation.models import served_params

    pairs = {}
    for item in value:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{item!r} is not NAME=VALUE (e.g. targets=svd)")
        pairs[name.strip()] = text.strip()
    try:
        served_params(pairs)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return pairs


def _grid(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> dict[str, tuple[float, ...]]:
    from streamrec.evaluation.models import served_params
    from streamrec.evaluation.tune import setting_text

    grid = {}
    for item in value:
        name, sep, text = item.partition("=")
        try:
            values = tuple(float(v) for v in text.split(",") if v.strip())
        except ValueError:
            values = ()
        if not sep or not values:
            raise click.BadParameter(f"{item!r} is not NAME=V1,V2,... with numbers (e.g. knn_weight=0,0.1,0.3)")
        try:
            for v in values:
                served_params({name.strip(): setting_text(v)})  # the text the tuning passes
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        grid[name.strip()] = values
    return grid


@click.command()
@click.option("--dataset", required=True, type=click.Path(path_type=Path),
              help="Event file (e.g. ../shared/datasets/amazon-beauty/Beauty.txt).")
@click.option("--format", "fmt", required=True, type=click.Choice(FORMATS), help="Format of --dataset.")
@click.option("--protocol", default="leave-one-out", show_default=True, type=click.Choice(PROTOCOLS))
@click.option("--models", "names", default=",".join(MODEL_NAMES), show_default=True, callback=_model_names,
              help="Comma-separated models to evaluate (also: served+als, a prototype fusing the two).")
@click.option("--fusion-weight", default=0.5, show_default=True, type=click.FloatRange(min=0),
              help="Weight of ALS's ranks in the served+als prototype (docs/quality.md, the taste-only proxy).")
@click.option("--users", "n_users", type=click.IntRange(min=10),
              help="Evaluate a random sample of this many users (with all their events) instead of all.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the --users sample and of --shuffle-within-users.")
@click.option("--shuffle-within-users", "shuffle", is_flag=True,
              help="Put each user's events in a random order over their own times: a taste-only proxy, "
                   "the order that sequential models read removed (leave-one-out and prequential).")
@click.option("--dim", type=click.IntRange(min=1), help="Served model's dimension [default: TrainParams.dim].")
@click.option("--served-param", "served_param", multiple=True, metavar="NAME=VALUE", callback=_overrides,
              help="Override a TrainParams or InterestParams field of the served model (repeatable), "
                   "e.g. targets=svd or event_decay=0.7.")
@click.option("--pretrain", default=0.2, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Prequential: share of the stream the models are first trained on (not scored).")
@click.option("--retrain-every", default=20_000, show_default=True, type=click.IntRange(min=1),
              help="Prequential: batch models are retrained on everything so far every N events.")
@click.option("--recent-window", default=10_000, show_default=True, type=click.IntRange(min=1),
              help="Events counted by popularity-recent.")
@click.option("--window", default=5_000, show_default=True, type=click.IntRange(min=1),
              help="Prequential: scored events in the moving-window HR@10.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Prequential: write the moving-window HR@10 of every model here (long format).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Prequential: plot the moving-window HR@10 of every model to this PNG.")
@click.option("--through-kafka", is_flag=True,
              help="Leave-one-out: also replay the histories through a real broker and worker and score its messages.")
@click.option("--bootstrap", help="Kafka for --through-kafka [default: the local broker, started if needed].")
@click.option("--catalog", "catalog_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The catalog, whose features (category, brand, attributes, title words) the served model's "
                   "training shares between items, and new-items' priors [default: Online Retail's own log; "
                   "<name>_item2attributes.json beside an Amazon sequence file; else the categories the events "
                   "carry (Taobao)].")
@click.option("--train-fraction", default=0.5, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="New-items: the model is trained on this share of the events (by time); later items are new.")
@click.option("--end-fraction", default=1.0, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="New-items: replay the stream up to this share of its events (0.5 with --train-fraction 0.4 "
                   "is the validation segment before the default test segment).")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(min=1),
              help="New-items: events per micro-batch of the worker's core.")
@click.option("--limit", type=click.IntRange(min=1), help="Read at most this many events of --dataset.")
@click.option("--prior-events", type=click.FloatRange(min=0, min_open=True),
              help="New-items: ItemRules.new_item_prior_events [default: the rule's default].")
@click.option("--variants", default="frozen,fold-in,catalog,prior-only", show_default=True,
              help="New-items: comma-separated variants to run.")
@click.option("--repeat-purchases", is_flag=True,
              help="Prequential: purchased items may be recommended again (a shop whose every category is a "
                   "repeat-purchase one); by default they are excluded, as the worker does.")
@click.option("--tune", is_flag=True,
              help="Choose the served model's repeat-step and neighbour-step weights on the validation split (leave-one-out: the "
                   "second-to-last item; prequential: the first --tune-share of the stream) and print the choice; "
                   "no test numbers are computed.")
@click.option("--tune-grid", "tune_grid", multiple=True, metavar="NAME=V1,V2,...", callback=_grid,
              help="--tune: search these values of a served-model setting instead of the default grid's "
                   "(repeatable; a setting the default grid lacks is added), e.g. taste_decay=0,0.9.")
@click.option("--tune-share", default=0.5, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="--tune with prequential: the share of the stream the validation run replays.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per model.")
def evaluate(dataset: Path, fmt: str, protocol: str, names: list[str], fusion_weight: float, n_users: int | None,
             seed: int, shuffle: bool, dim: int | None, served_param: dict[str, str], pretrain: float, retrain_every: int, recent_window: int, window: int,
             csv_path: Path | None, plot_path: Path | None, through_kafka: bool, bootstrap: str | None,
             catalog_path: Path | None, train_fraction: float, end_fraction: float, batch_size: int, limit: int | None,
             prior_events: float | None, variants: str, repeat_purchases: bool, tune: bool,
             tune_grid: dict[str, tuple[float, ...]], tune_share: float, as_json: bool) -> None:
    """Measure recommendation quality: the served model and the baselines, one protocol.

    \b
    leave-one-out  per user the last item is the test item; full ranking, history masked (S3-Rec)
    prequential    test-then-learn over the time-ordered stream (Vinagre et al. 2014)
    new-items      the worker's core replays the stream; items after the training cut are new:
                   HR@10 on their events and how soon they are listed (streamrec/evaluation/new_items.py)
    """
    from streamrec.evaluation.data import load_log, sample_users, shuffle_within_users
    from streamrec.evaluation.models import build_models
    from streamrec.evaluation.protocols import run_leave_one_out, run_prequential
    from streamrec.evaluation.report import plot_windows, record, window_rows, write_csv

    if not dataset.is_file():
        raise click.BadParameter(
            f"there is no file {dataset}; the shared datasets live in ../shared/datasets "
            f"(see its README.md for the files and formats)", param_hint="--dataset")
    if through_kafka and protocol != "leave-one-out":
        raise click.BadParameter("--through-kafka replays the leave-one-out protocol only", param_hint="--protocol")
    if (csv_path or plot_path) and protocol != "prequential":
        raise click.BadParameter("--csv and --plot are for the prequential protocol", param_hint="--protocol")
    if repeat_purchases and protocol != "prequential":
        raise click.BadParameter("--repeat-purchases is for the prequential protocol", param_hint="--protocol")
    if shuffle and protocol == "new-items":
        raise click.BadParameter("--shuffle-within-users is for the leave-one-out and prequential protocols",
                                 param_hint="--protocol")
    if tune and (protocol == "new-items" or through_kafka):
        raise click.BadParameter("--tune chooses settings under leave-one-out or prequential, without --through-kafka",
                                 param_hint="--tune")

    console = _console()
    started = time.perf_counter()
    if protocol == "new-items":
        _new_items(dataset, fmt, n_users, seed, dim, catalog_path, train_fraction, end_fraction, batch_size, limit,
                   prior_events, variants, as_json, console, served_param)
        return
    try:
        log = load_log(dataset, fmt, limit=limit)
    except ValueError as exc:
        raise click.ClickException(f"cannot read {dataset} as {fmt}: {exc}") from None
    if n_users is not None:
        log = sample_users(log, n_users, seed=seed)
    log = _with_catalog(log, dataset, fmt, catalog_path, console)
    order = "each user's in a random order " if shuffle else ""
    if shuffle:
        log = shuffle_within_users(log, seed=seed)
    console.log(f"{dataset.name}: {len(log):,} events, {log.n_users:,} users, {log.n_items:,} items "
                f"{order}(read in {time.perf_counter() - started:.1f} s)")
    name = dataset.stem + ("-shuffled" if shuffle else "")
    if tune:
        _tune(log, name, protocol, dim, served_param, pretrain, retrain_every, repeat_purchases, tune_share, as_json,
              console, tune_grid)
        return
    results: list[dict[str, Any]] = []
    outcomes = []
    for model in build_models(names, dim=dim, recent_window=recent_window, served_overrides=served_param,
                              fusion_weight=fusion_weight):
        console.log(f"{model.name}: {protocol}")
        if protocol == "leave-one-out":
            outcome = run_leave_one_out(model, log)
        else:
            outcome = run_prequential(model, log, pretrain=max(1, int(pretrain * len(log))),
                                      retrain_every=retrain_every, exclude_purchased=not repeat_purchases)
        outcomes.append(outcome)
        results.append(record(outcome, name))
        console.log(f"{model.name}: HR@10 {outcome.metrics['HR@10']:.4f}, NDCG@10 {outcome.metrics['NDCG@10']:.4f} "
                    f"({outcome.seconds:.1f} s)")
    if through_kafka:
        results.append(_through_kafka(log, name, dim, served_param, bootstrap, console))
    if protocol == "prequential" and (csv_path or plot_path):
        every = max(1, window // 10)
        rows = window_rows(outcomes, log, window=window, every=every)
        if csv_path:
            write_csv(rows, csv_path)
            console.log(f"moving-window HR@10 -> {csv_path}")
        if plot_path:
            plot_windows(rows, plot_path, title=f"{name}: prequential HR@10 (retrain every {retrain_every:,})",
                         window=window)
            console.log(f"plot -> {plot_path}")
    if as_json:
        click.echo(json.dumps(results))
    else:
        _print_table(results)


def _with_catalog(log, dataset: Path, fmt: str, catalog_path: Path | None, console):  # noqa: ANN001, ANN202
    """``log`` with the features of its catalog (:func:`producers.catalog.catalog_for`),
    which the served model's training reads (``TrainParams.refine_features``)."""
    from dataclasses import replace

    from producers.catalog import catalog_for
    from streamrec.core.items import catalog_features

    try:
        catalog = catalog_for(dataset, fmt, catalog_path)
    except ValueError as exc:
        raise click.ClickException(f"cannot read the catalog of {dataset}: {exc}") from None
    if not catalog:
        return log
    known = sum(item_id in catalog for item_id in log.item_ids)
    console.log(f"catalog: {len(catalog):,} records, {known:,} of the log's {log.n_items:,} items")
    return replace(log, item_features=catalog_features(catalog))


def _tune(log, name: str, protocol: str, dim: int | None, overrides: dict[str, str], pretrain: float,  # noqa: ANN001
          retrain_every: int, repeat_purchases: bool, share: float, as_json: bool, console,  # noqa: ANN001
          grid_overrides: dict[str, tuple[float, ...]] | None = None) -> None:
    from streamrec.evaluation.models import build_models
    from streamrec.evaluation.protocols import run_leave_one_out, run_prequential
    from streamrec.evaluation.tune import GRID, tune, validation_log

    validation = validation_log(log, protocol, share)
    console.log(f"validation split: {len(validation):,} events ({protocol})")

    def run(point: dict[str, str]) -> dict[str, float]:
        (model,) = build_models(["served"], dim=dim, served_overrides={**overrides, **point})
        if protocol == "leave-one-out":
            return run_leave_one_out(model, validation).metrics
        return run_prequential(model, validation, pretrain=max(1, int(pretrain * len(validation))),
                               retrain_every=retrain_every, exclude_purchased=not repeat_purchases).metrics

    grid = {**GRID, **(grid_overrides or {})}
    result = tune(run, grid, progress=console.log)
    if as_json:
        click.echo(json.dumps({"dataset": name, "protocol": protocol, "validation_events": len(validation),
                               "grid": result.rows, "chosen": result.chosen}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{name} · {protocol} · validation split ({len(validation):,} events)")
    for column in [*grid, "HR@10", "NDCG@10"]:
        table.add_column(column, justify="right")
    for row in result.rows:
        table.add_row(*(f"{row[c]:g}" if c in grid else f"{row[c]:.4f}" for c in [*grid, "HR@10", "NDCG@10"]))
    Console().print(table)
    click.echo("chosen: " + " ".join(f"--served-param {k}={v:g}" for k, v in result.chosen.items()))


def _new_items(dataset: Path, fmt: str, n_users: int | None, seed: int, dim: int | None, catalog_path: Path | None,
               train_fraction: float, end_fraction: float, batch_size: int, limit: int | None,
               prior_events: float | None, variants: str, as_json: bool, console,  # noqa: ANN001
               overrides: dict[str, str] | None = None) -> None:
    from dataclasses import replace

    from streamrec.core.items import ItemRules
    from streamrec.evaluation.models import served_params
    from streamrec.evaluation.data import load_log, sample_users
    from producers.catalog import catalog_for
    from streamrec.evaluation.new_items import VARIANTS, run_new_items

    chosen = [v.strip() for v in variants.split(",") if v.strip()]
    if not chosen or any(v not in VARIANTS for v in chosen):
        raise click.BadParameter(f"choose from {', '.join(VARIANTS)}", param_hint="--variants")
    if not train_fraction < end_fraction:
        raise click.BadParameter("--train-fraction must be below --end-fraction", param_hint="--train-fraction")
    started = time.perf_counter()
    try:
        log = load_log(dataset, fmt, limit=limit)
        catalog = catalog_for(dataset, fmt, catalog_path)
    except ValueError as exc:
        raise click.ClickException(f"cannot read {dataset} as {fmt}: {exc}") from None
    if n_users is not None:
        log = sample_users(log, n_users, seed=seed)
    console.log(f"{dataset.name}: {len(log):,} events, {log.n_users:,} users, {log.n_items:,} items, "
                f"catalog {len(catalog) if catalog else 0:,} records (read in {time.perf_counter() - started:.1f} s)")
    params, interest = served_params(overrides)  # --served-param: the replayed version's settings
    params = params if dim is None else replace(params, dim=dim)
    rules = ItemRules() if prior_events is None else ItemRules(new_item_prior_events=prior_events)
    outcome = run_new_items(log, catalog=catalog, variants=chosen, train_fraction=train_fraction,
                            end_fraction=end_fraction, batch_size=batch_size, train_params=params, interest=interest,
                            rules=rules, progress=console.log)
    records = outcome.records(dataset.stem)
    if as_json:
        click.echo(json.dumps(records))
        return
    from rich.console import Console
    from rich.table import Table

    d = outcome.details
    table = Table(title=f"{dataset.stem} · new items · trained on {d['train_events']:,} events, "
                        f"{d['scored_segment']:,} replayed after the cut, {d['new_items_in_segment']:,} new items")
    columns = ["variant", "HR@10 new items", "HR@10 all", "listed", "delay events (median / p90)",
               "delay hours (median / p90)", "seconds"]
    for column in columns:
        table.add_column(column, justify="left" if column == "variant" else "right")
    for r in records:
        hours = ("-" if r["delay_seconds_median"] is None
                 else f"{r['delay_seconds_median'] / 3600:.1f} / {r['delay_seconds_p90'] / 3600:.1f}")
        table.add_row(r["variant"], f"{r['HR@10_new_items']:.4f} ({r['scored_new_item_events']:,})",
                      f"{r['HR@10_all']:.4f} ({r['scored_events']:,})", f"{r['share_listed']:.1%}",
                      "-" if r["delay_events_median"] is None else f"{r['delay_events_median']:.0f} / {r['delay_events_p90']:.0f}",
                      hours, f"{r['seconds']:.1f}")
    Console().print(table)


def _through_kafka(log, name: str, dim: int | None, overrides: dict[str, str], bootstrap: str | None,  # noqa: ANN001
                   console) -> dict[str, Any]:  # noqa: ANN001
    from contextlib import ExitStack
    from dataclasses import replace

    from streamrec.config import get_settings
    from streamrec.evaluation.models import served_params
    from streamrec.evaluation.through_kafka import run_through_kafka

    params, interest = served_params(overrides)
    rules = {"taste_decay": interest.taste_decay, "factor_weight": interest.factor_weight}  # the worker's settings
    if replace(interest, **{name: getattr(type(interest)(), name) for name in rules}) != type(interest)():
        raise click.BadParameter("the worker runs the default InterestParams but for its rules' taste_decay and "
                                 "factor_weight: --through-kafka cannot override the others", param_hint="--served-param")
    params = params if dim is None else replace(params, dim=dim)
    with ExitStack() as stack:
        if bootstrap is None:
            from streamrec.kafka import KafkaLauncher

            launcher = KafkaLauncher(get_settings().local_kafka)
            if launcher.up(timeout=120):
                stack.callback(launcher.down)
                console.log(f"started the local broker on {launcher.bootstrap}")
            bootstrap = launcher.bootstrap
        outcome = run_through_kafka(log, bootstrap=bootstrap, train_params=params,
                                    partitions=get_settings().kafka.partitions, progress=console.log, **rules)
    console.log(f"through Kafka: HR@10 {outcome.metrics['HR@10']:.4f} (in process {outcome.in_process_metrics['HR@10']:.4f}); "
                f"{outcome.same_lists:,} of {outcome.users:,} lists identical, {outcome.hit_disagreements} hit disagreements")
    return {
        "name": "served-through-kafka",
        "served": True,
        "dataset": name,
        "protocol": "leave-one-out",
        **outcome.metrics,
        "users": outcome.users,
        "seconds": round(outcome.seconds, 2),
        "in_process": outcome.in_process_metrics,
        "identical_lists": outcome.same_lists,
        "hit_disagreements": outcome.hit_disagreements,
        "events_published": outcome.events_published,
        "messages_read": outcome.messages_read,
        "replay_seconds": round(outcome.replay_seconds, 2),
    }


def _console():  # noqa: ANN202 - rich.console.Console
    from rich.console import Console

    return Console(stderr=True, log_path=False)


def _print_table(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    metrics = [k for k in ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "coverage@10", "ILD@10",
                           "novelty@10") if any(k in r for r in results)]
    table = Table(title=f"{results[0]['dataset']} · {results[0]['protocol']}" if results else "no results")
    for column in ["model", *metrics, "users", "seconds"]:
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in results:
        label = f"{r['name']} (served)" if r["served"] and r["name"] == "served" else r["name"]
        table.add_row(label, *[f"{r[m]:.4f}" if m in r else "-" for m in metrics], f"{r['users']:,}", f"{r['seconds']:.1f}")
    Console().print(table)
