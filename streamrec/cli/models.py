"""``streamrec trainer`` and ``streamrec model list | promote | rollback``: thin shells over
:mod:`indexing.trainer` and :mod:`indexing.distribute`."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import click

from producers.readers import FORMATS
from streamrec.config import get_settings

_bootstrap = click.option("--bootstrap", help="Kafka bootstrap servers [default: from settings].")
_topic = click.option("--models-topic", help="Models topic [default: settings kafka.models_topic].")


def _kafka(bootstrap: str | None, models_topic: str | None) -> tuple[str, str]:
    kafka = get_settings().kafka
    return bootstrap or kafka.bootstrap, models_topic or kafka.models_topic


@click.command()
@_bootstrap
@click.option("--events-topic", help="Events topic to learn from [default: from settings].")
@click.option("--items-topic", help="Catalog topic, read whole before each training: items that share a category, "
                                    "brand, attribute or title word learn together [default: from settings].")
@_topic
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), help="Where the trainer saves versions [default: from settings].")
@click.option("--group", default="streamrec-trainer", show_default=True, help="Consumer group that records how far the trainer has read.")
@click.option("--window-events", default=5_000_000, show_default=True, type=click.IntRange(min=1), help="Newest events kept to train on.")
@click.option("--every-events", default=500_000, show_default=True, type=click.IntRange(min=1), help="Retrain after this many new events...")
@click.option("--every-minutes", default=60.0, show_default=True, type=click.FloatRange(min=0, min_open=True), help="...or after this many minutes, whichever first.")
@click.option("--holdout", default=0.1, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True), help="Newest fraction of the window held out for the gate.")
@click.option("--margin", default=0.005, show_default=True, type=click.FloatRange(min=0), help="Publish when candidate HR@10 >= serving HR@10 - margin.")
@click.option("--gate-cases", default=20_000, show_default=True, type=click.IntRange(min=1), help="Most held-out events scored per model.")
@click.option("--min-events", default=1_000, show_default=True, type=click.IntRange(min=1), help="No training with fewer events in the window.")
@click.option("--dim", type=click.IntRange(min=1), help="Vector dimension [default: TrainParams.dim].")
@click.option("--bootstrap-dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Archive file that seeds the window before the topic's tail (history older than the topic keeps).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Format of --bootstrap-dataset.")
@click.option("--once", is_flag=True, help="Read the topic to its current end, run one cycle and exit (tests, cron).")
@click.option("--json", "as_json", is_flag=True, help="Print each cycle's result as a JSON line.")
@click.option("--metrics-port", default=9109, show_default=True, type=click.IntRange(0, 65535),
              help="Serve the trainer's Prometheus /metrics on this port (0: none; docs/operations.md).")
def trainer(bootstrap, events_topic, items_topic, models_topic, models_dir, group, window_events, every_events, every_minutes, holdout,  # noqa: ANN001
            margin, gate_cases, min_events, dim, bootstrap_dataset, fmt, once, as_json, metrics_port) -> None:
    """Retrain from the events topic, gate each candidate against the serving model, publish and promote."""
    from functools import partial

    from indexing.train import TrainParams
    from indexing.trainer import Trainer, TrainerParams
    from streamrec.evaluation.choose import choose_for
    from streamrec.evaluation.gate import served_hits
    from streamrec.evaluation.served import ServedModel
    from streams.shell import interest_params

    if bootstrap_dataset is not None and fmt is None:
        raise click.UsageError(f"--format is required with --bootstrap-dataset; choose one of {', '.join(FORMATS)}")
    settings = get_settings()
    bootstrap, models_topic = _kafka(bootstrap, models_topic)
    train = TrainParams() if dim is None else replace(TrainParams(), dim=dim)
    interest = interest_params(settings)
    params = TrainerParams(window_events=window_events, every_events=every_events, every_minutes=every_minutes,
                           holdout=holdout, margin=margin, gate_cases=gate_cases, min_events=min_events, train=train,
                           interest=interest,
                           choose=partial(choose_for, model=ServedModel),
                           score=partial(served_hits, interest=interest),
                           target_recall=settings.index.target_recall)
    service = Trainer(bootstrap=bootstrap, events_topic=events_topic or settings.kafka.events_topic, models_topic=models_topic,
                      models_dir=models_dir or settings.index.models_dir, group=group, params=params,
                      erasures_topic=settings.kafka.erasures_topic, items_topic=items_topic or settings.kafka.items_topic)
    from streams.metrics import serve

    serve(service.metrics.registry, metrics_port, what="trainer")
    if bootstrap_dataset is not None:
        from producers.readers import read_events

        service.seed_from(read_events(bootstrap_dataset, fmt, skip_bad=True))

    def report(result) -> None:  # noqa: ANN001
        if result is None:
            click.echo(f"too few events in the window ({len(service.window)} < {min_events}): nothing trained", err=True)
        elif as_json:
            click.echo(json.dumps(result))
        else:
            gate = result["gate"]
            click.echo(f"model {result['version']}: {gate['decision']} ({gate['reason']}; {gate['cases']} cases) "
                       f"in {result['seconds']:.1f} s")

    try:
        service.run(once=once, on_cycle=report)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def model() -> None:
    """Model versions on the models topic: list them, promote one, roll back."""


def _rows(state) -> list[dict]:  # noqa: ANN001
    from indexing.artifact import version_number

    serving = state.serving.version if state.serving else None
    rows = []
    for version, entry in sorted(state.versions.items(), key=lambda kv: version_number(kv[0]) or 0):
        meta = (entry.manifest or {}).get("meta", {})
        gate = meta.get("gate", {})
        rows.append({
            "version": version, "serving": version == serving,
            "created_at": meta.get("created_at"), "items": meta.get("n_items"),
            "candidate_hr10": gate.get("candidate"), "serving_hr10": gate.get("serving"),
            "gate_vs": gate.get("serving_version"), "decision": gate.get("decision"),
            "bytes": (entry.manifest or {}).get("size"), "problem": entry.problem(),
        })
    return rows


def _score(value) -> str:  # noqa: ANN001
    return "-" if value is None else f"{value:.4f}"


@model.command("list")
@_bootstrap
@_topic
@click.option("--json", "as_json", is_flag=True, help="One JSON object: versions and serving history.")
def list_versions(bootstrap, models_topic, as_json) -> None:  # noqa: ANN001
    """Versions on the topic: created, items, gate scores, decision; * marks the serving one."""
    from indexing.distribute import DistributionError, read_models_topic

    bootstrap, models_topic = _kafka(bootstrap, models_topic)
    try:
        state = read_models_topic(bootstrap, models_topic)
    except DistributionError as exc:
        raise click.ClickException(str(exc)) from None
    rows = _rows(state)
    history = state.serving.history if state.serving else []
    if as_json:
        click.echo(json.dumps({"topic": models_topic, "serving": state.serving.version if state.serving else None,
                               "history": history, "versions": rows}))
        return
    if not rows:
        click.echo(f"no model versions on topic {models_topic}")
        return
    click.echo(f"{'':2}{'version':<9} {'created':<19} {'items':>8} {'cand HR@10':>10} {'serv HR@10':>10} {'vs':<8} {'decision':<8} state")
    for row in rows:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["created_at"])) if row["created_at"] else "-"
        click.echo(f"{'*' if row['serving'] else ' ':<2}{row['version']:<9} {created:<19} {row['items'] or '-':>8} "
                   f"{_score(row['candidate_hr10']):>10} {_score(row['serving_hr10']):>10} {row['gate_vs'] or '-':<8} "
                   f"{row['decision'] or '-':<8} {row['problem'] or 'complete'}")
    click.echo(f"promoted so far: {' -> '.join(history) if history else 'none'}")


@model.command()
@click.argument("version")
@_bootstrap
@_topic
def promote(version, bootstrap, models_topic) -> None:  # noqa: ANN001
    """Make every worker serve VERSION (it must be complete on the topic)."""
    from indexing.distribute import DistributionError, ModelPublisher

    bootstrap, models_topic = _kafka(bootstrap, models_topic)
    try:
        with ModelPublisher(bootstrap, models_topic) as publisher:
            serving = publisher.promote(version)
    except (DistributionError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"serving {serving.version} (promoted so far: {' -> '.join(serving.history)})")


@model.command()
@_bootstrap
@_topic
def rollback(bootstrap, models_topic) -> None:  # noqa: ANN001
    """Serve again the version promoted before the serving one."""
    from indexing.distribute import DistributionError, ModelPublisher

    bootstrap, models_topic = _kafka(bootstrap, models_topic)
    try:
        with ModelPublisher(bootstrap, models_topic) as publisher:
            serving = publisher.rollback()
    except (DistributionError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"rolled back: serving {serving.version}")

