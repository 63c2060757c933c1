"""``streamrec kafka fetch|up|down|status``: a real local Kafka broker, no Docker needed."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from streamrec.config import LocalKafkaSettings, get_settings
from streamrec.kafka import secure as secure_broker
from streamrec.kafka.launcher import SECURE_MARKER, KafkaLauncher, KafkaLauncherError, KafkaStatus

T = TypeVar("T")

_home_option = click.option(
    "--home", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Folder for the broker's jars, data and logs  [default: from settings, $STREAMREC_HOME/.kafka]")
_port_option = click.option("--port", type=click.IntRange(1, 65535), default=None,
                             help="Broker port on 127.0.0.1  [default: from settings, 9092]")
_controller_port_option = click.option(
    "--controller-port", type=click.IntRange(1, 65535), default=None,
    help="KRaft controller port on 127.0.0.1  [default: from settings, 9093]")


def _launcher(home: Path | None, port: int | None = None, controller_port: int | None = None,
              secure: bool | None = None) -> KafkaLauncher:
    """A launcher from the settings, with the command-line overrides applied. Without
    ``secure``, a home whose data was formatted with ``--secure`` is secure."""
    base = get_settings().local_kafka
    overrides: dict[str, Any] = {key: value for key, value in
                                 (("home", home), ("port", port), ("controller_port", controller_port),
                                  ("secure", secure))
                                 if value is not None}
    settings = LocalKafkaSettings(**{**base.model_dump(), **overrides})
    if secure is None and (Path(settings.home).expanduser().resolve() / "data" / SECURE_MARKER).exists():
        settings = settings.model_copy(update={"secure": True})
    try:
        return KafkaLauncher(settings)
    except KafkaLauncherError as exc:
        raise click.ClickException(str(exc)) from exc


def _attempt(action: Callable[[], T]) -> T:
    """Run a launcher call, turning its errors into a click error (message, exit code 1)."""
    try:
        return action()
    except KafkaLauncherError as exc:
        raise click.ClickException(str(exc)) from exc


def _describe(status: KafkaStatus) -> str:
    """Human-readable lines for ``status``."""
    if status.running:
        state = f"running, pid {status.pid}" + ("" if status.ready else ", not answering yet")
    else:
        state = "stopped"
    return "\n".join([
        f"Kafka {status.kafka_version or '(jars not fetched yet)'}: {state}",
        f"  bootstrap   {status.bootstrap}"
        + ("  (SASL_SSL, SCRAM-SHA-512, ACLs: `streamrec kafka env --principal NAME`)" if status.secure else ""),
        f"  controller  {status.controller}",
        f"  home        {status.home}",
        f"  data        {status.data_dir}" + ("" if status.formatted else "  (not formatted yet)"),
        f"  jars        {status.lib_dir}",
        f"  log         {status.log_file}",
    ])


@click.group()
def kafka() -> None:
    """Run a real Apache Kafka broker locally (no Docker).

    Needs Java 17+ and, for the first `fetch`, Maven with access to Maven Central.
    """


@kafka.command()
@_home_option
@click.option("--force", is_flag=True, help="Download again even if the jars are up to date.")
def fetch(home: Path | None, force: bool) -> None:
    """Download the Kafka jars with Maven (done once; `up` does it when needed)."""
    launcher = _launcher(home)
    if not force and launcher.jars_ready():
        click.echo(f"Kafka jars are already in {launcher.lib_dir}.")
        return
    click.echo(f"Downloading the Kafka jars into {launcher.lib_dir} with Maven ...")
    _attempt(lambda: launcher.fetch(force=force))
    click.echo(f"Done: Kafka {launcher.status().kafka_version} is ready to start.")


@kafka.command()
@_home_option
@_port_option
@_controller_port_option
@click.option("--timeout", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds to wait for the broker to answer.")
@click.option("--secure/--no-secure", default=None,
              help="A TLS listener with SASL/SCRAM users and ACLs instead of the open plaintext one "
                   "(docs/security.md)  [default: from settings, or as the home was formatted; "
                   "env STREAMREC_LOCAL_KAFKA__SECURE]")
def up(home: Path | None, port: int | None, controller_port: int | None, timeout: float,
       secure: bool | None) -> None:
    """Start the broker in the background and wait until it answers."""
    launcher = _launcher(home, port, controller_port, secure)
    started_at = time.monotonic()
    if not launcher.jars_ready() and not launcher.status().running:
        _attempt(launcher.check_ports_free)  # fail fast, before a long download
        click.echo(f"Downloading the Kafka jars into {launcher.lib_dir} with Maven (first time only) ...")
        _attempt(launcher.fetch)
    started = _attempt(lambda: launcher.up(timeout=timeout))
    status = launcher.status()
    if started:
        click.echo(f"Kafka {status.kafka_version} is up at {status.bootstrap} (pid {status.pid}, "
                   f"{time.monotonic() - started_at:.1f} s). Logs: {status.log_file}")
    else:
        click.echo(f"Kafka is already running at {status.bootstrap} (pid {status.pid}).")
    if launcher.settings.secure:
        _provision(launcher, home, port)
        return
    configured = get_settings().kafka.bootstrap
    if configured != status.bootstrap:
        click.echo(f"Note: clients use {configured}; "
                   f"set STREAMREC_KAFKA__BOOTSTRAP={status.bootstrap} to reach this broker.")


def _provision(launcher: KafkaLauncher, home: Path | None, port: int | None) -> None:
    """Create the shared topics and the ACLs on a secure broker; say how clients connect."""
    settings = get_settings()
    try:
        secure_broker.provision(launcher.client_settings(), settings.kafka, settings.worker.app_id)
    except (RuntimeError, secure_broker.SecureSetupError) as exc:
        raise click.ClickException(f"the secure broker is up but could not be provisioned: {exc}") from exc
    files = launcher.secure_files
    expires = secure_broker.certificate_expiry(files.keystore)
    home_option = (f" --home {launcher.home}" if home is not None else "") + (f" --port {port}" if port else "")
    click.echo(f"TLS + SASL/SCRAM-SHA-512 with ACLs on {launcher.bootstrap}; CA {files.ca_cert}; "
               f"broker certificate valid until {expires:%Y-%m-%d}.")
    click.echo(f"Principals: {', '.join(secure_broker.PRINCIPALS)}; their passwords are in {files.credentials} (0600).")
    click.echo("Point a service at it with its principal's settings, e.g. for the worker:")
    click.echo(f'  eval "$(streamrec kafka env --principal worker{home_option})"')


@kafka.command()
@_home_option
@_port_option
@click.option("--principal", type=click.Choice(secure_broker.PRINCIPALS), default="admin", show_default=True,
              help="Whose user name and password to print.")
def env(home: Path | None, port: int | None, principal: str) -> None:
    """Print `export STREAMREC_KAFKA__...` lines that point a client at the local broker.

    For a broker started with --secure they carry the principal's password: use them with
    `eval "$(streamrec kafka env --principal worker)"` or write them to a file only you can read.
    """
    launcher = _launcher(home, port)
    try:
        settings = launcher.client_settings(principal)
    except secure_broker.SecureSetupError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("\n".join(secure_broker.env_lines(settings)))


@kafka.command()
@_home_option
@_port_option
@click.option("--principal", type=click.Choice(secure_broker.PRINCIPALS), required=True,
              help="Whose password to replace.")
def rotate(home: Path | None, port: int | None, principal: str) -> None:
    """Give a principal of the local secure broker a new password (the broker must run).

    Its services need the new settings (`streamrec kafka env --principal NAME`) at their next
    connection; open connections stay.
    """
    launcher = _launcher(home, port)
    if not launcher.settings.secure:
        raise click.ClickException(f"the broker in {launcher.home} is not secure: it has no passwords")
    try:
        secure_broker.rotate_password(launcher.secure_files, launcher.client_settings(), principal)
    except secure_broker.SecureSetupError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{principal} has a new password in {launcher.secure_files.credentials}; "
               f"restart its services with `streamrec kafka env --principal {principal}`.")


@kafka.command()
def provision() -> None:
    """Create the shared topics and every principal's ACLs on a secure broker, as `admin`.

    Reads the broker's address and the admin's credentials from the settings
    (STREAMREC_KAFKA__...), the topic names and the worker's app id too; `up --secure` does
    this by itself. Safe to repeat.
    """
    settings = get_settings()
    if settings.kafka.sasl_username != secure_broker.ADMIN:
        raise click.ClickException(f"provision runs as the {secure_broker.ADMIN!r} principal, but "
                                   f"STREAMREC_KAFKA__SASL_USERNAME is {settings.kafka.sasl_username!r}")
    try:
        secure_broker.provision(settings.kafka, settings.kafka, settings.worker.app_id)
    except (RuntimeError, secure_broker.SecureSetupError) as exc:
        raise click.ClickException(str(exc)) from exc
    rules = secure_broker.acl_rules(settings.kafka, settings.worker.app_id)
    click.echo(f"{len(rules)} ACLs for {', '.join(sorted({r.principal for r in rules}))} on {settings.kafka.bootstrap}.")


@kafka.command()
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the CA, the broker's certificate, the passwords and the settings files.")
@click.option("--host", default="kafka", show_default=True, help="The broker's host name in the containers.")
def secrets(folder: Path, host: str) -> None:
    """Write the secure broker's files for docker-compose.secure.yml (kept when they exist)."""
    from streamrec.kafka.compose import write_secrets

    written = write_secrets(folder, host=host)
    click.echo(f"{len(written)} files in {folder} (0600): CA, broker certificate for {host} and localhost, "
               f"server.properties, SCRAM users, and one .env file per principal.")


@kafka.command()
@_home_option
@click.option("--timeout", type=click.FloatRange(min=1), default=30.0, show_default=True,
              help="Seconds to wait for a clean shutdown before killing the broker.")
def down(home: Path | None, timeout: float) -> None:
    """Stop the broker (its data is kept)."""
    launcher = _launcher(home)
    if _attempt(lambda: launcher.down(timeout=timeout)):
        click.echo("Kafka stopped.")
    else:
        click.echo(f"Kafka is not running (home {launcher.home}).")


@kafka.command()
@_home_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def reset(home: Path | None, yes: bool) -> None:
    """Delete the stopped broker's data: all topics, offsets, SCRAM users and ACLs.

    The jars and, for a secure home, the CA, certificate and passwords stay; the next `up`
    formats a new cluster (with `--secure`: with the same passwords, or new ones when
    `secure/credentials.json` was deleted too).
    """
    launcher = _launcher(home)
    if not yes:
        click.confirm(f"Delete {launcher.data_dir} (every topic and offset)?", abort=True)
    _attempt(launcher.reset)
    click.echo(f"Deleted {launcher.data_dir}.")


#: Exit codes of ``status``, as ``pg_ctl status`` and LSB init scripts use them.
STATUS_RUNNING = 0
STATUS_NOT_ANSWERING = 1
STATUS_STOPPED = 3


def status_exit_code(status: KafkaStatus) -> int:
    """0 when the broker runs and answers, 1 when it runs but does not answer, 3 when stopped."""
    if not status.running:
        return STATUS_STOPPED
    return STATUS_RUNNING if status.ready else STATUS_NOT_ANSWERING


@kafka.command()
@_home_option
@_port_option
@_controller_port_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(home: Path | None, port: int | None, controller_port: int | None, as_json: bool) -> None:
    """Show whether the broker runs, where it listens and where its files are.

    Exits with 0 when the broker runs and answers, 1 when it runs but does not answer
    (yet), and 3 when it is not running, like `pg_ctl status` and `systemctl status`.
    """
    result = _attempt(_launcher(home, port, controller_port).status)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else _describe(result))
    code = status_exit_code(result)
    if code != STATUS_RUNNING:
        click.get_current_context().exit(code)
