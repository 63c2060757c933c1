"""``streamrec serve``: recommendations on request, an HTTP JSON API over a read replica of the
workers' user states, the catalog and the model (:mod:`streams.serve`, docs/serving.md)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from streamrec.config import get_settings


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--bootstrap", help="Kafka bootstrap servers [default: from settings].")
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), help="Folder of model versions.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where this instance keeps its catalog table [default: <home>/.serve/<port>; never a worker's].")
def serve(host, port, bootstrap, models_dir, data_dir) -> None:  # noqa: ANN001
    """Answer recommendation requests over HTTP from a replica of the workers' states."""
    from streams.serve import serve as run

    settings = get_settings()
    updates: dict[str, dict] = {"worker": {"data_dir": data_dir or settings.home / ".serve" / str(port)}}
    if bootstrap:
        updates["kafka"] = {"bootstrap": bootstrap}
    if models_dir:
        updates["index"] = {"models_dir": models_dir}
    settings = settings.model_copy(
        update={part: getattr(settings, part).model_copy(update=values) for part, values in updates.items()}
    )
    level = str(click.get_current_context().find_root().params.get("log_level") or "WARNING").upper()
    logging.getLogger().setLevel(level)
    click.echo(f"serve: http://{host}:{port} (replica of {settings.worker.app_id}'s states on {settings.kafka.bootstrap}, "
               f"catalog {settings.kafka.items_topic}, models {settings.index.models_dir})", err=True)
    run(settings, host=host, port=port)
