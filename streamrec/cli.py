"""The one ``streamrec`` command: a click group whose subcommands live beside their code."""

from __future__ import annotations

import logging

import click

from streamrec import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "STREAMREC"})
@click.version_option(__version__, prog_name="streamrec")
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def main(log_level: str) -> None:
    """streamrec: events from Kafka in, fresh FAISS recommendations out."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _register() -> None:
    from benchmarks.cli import bench
    from evaluation.cli import evaluate
    from indexing.cli import train
    from indexing.lifecycle_cli import model, trainer
    from producers.cli import produce
    from streamrec.demo import demo
    from streamrec.kafka.cli import kafka
    from streams.cli import consume, worker

    for command in (kafka, produce, train, trainer, model, worker, consume, evaluate, bench, demo):
        main.add_command(command)


_register()


if __name__ == "__main__":
    main()
