"""The one ``streamrec`` command: a click group, one module per subcommand in this package, at
the top of the house (everything below is imported, nothing below imports it)."""

from __future__ import annotations

import logging

import click
from pydantic import ValidationError
from pydantic_settings import SettingsError

from streamrec import __version__
from streamrec.config import Settings, explain_settings_error


class _Group(click.Group):
    """Bad settings (an environment variable that does not parse) end a command with one sentence
    per setting, not a traceback."""

    def invoke(self, ctx: click.Context):  # noqa: ANN201 (click's own signature)
        try:
            return super().invoke(ctx)
        except ValidationError as exc:
            if exc.title != Settings.__name__:
                raise
            raise click.ClickException(explain_settings_error(exc)) from None
        except SettingsError as exc:  # a value that is not even JSON where JSON is expected
            raise click.ClickException(f"invalid settings: {exc} (a list or object setting takes JSON)") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "STREAMREC"})
@click.version_option(__version__, prog_name="streamrec")
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def main(log_level: str) -> None:
    """streamrec: events from Kafka in, fresh FAISS recommendations out."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _register() -> None:
    from streamrec.cli.attribute import attribute
    from streamrec.cli.bench import bench
    from streamrec.cli.dashboard import dashboard
    from streamrec.cli.demo import demo
    from streamrec.cli.evaluate import evaluate
    from streamrec.cli.forecast import forecast
    from streamrec.cli.kafka import kafka
    from streamrec.cli.models import model, trainer
    from streamrec.cli.privacy import forget, pseudonym
    from streamrec.cli.produce import produce
    from streamrec.cli.report import report
    from streamrec.cli.serve import serve
    from streamrec.cli.simulate import simulate
    from streamrec.cli.train import train
    from streamrec.cli.worker import consume, worker

    for command in (kafka, produce, train, trainer, model, worker, consume, serve, evaluate, bench, demo, dashboard,
                    pseudonym, forget, attribute, report, simulate, forecast):
        main.add_command(command)


_register()
