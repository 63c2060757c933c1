"""Run a real, single-node Apache Kafka broker (KRaft) from plain jars, without Docker.

Layout of a broker *home* (``LocalKafkaSettings.home``, ``$STREAMREC_HOME/.kafka`` by default)::

    <home>/lib/                 the jars, resolved by Maven from ``pom.xml`` (shareable, see below)
    <home>/server.properties    rewritten by every ``up()``
    <home>/data/                the broker's log.dirs (``meta.properties`` once formatted)
    <home>/logs/server.log      the broker's own log (``log4j2.yaml``)
    <home>/logs/kafka.out       the JVM's stdout/stderr
    <home>/kafka.pid            the pid of the running broker
    <home>/secure/              with ``--secure``: CA, broker certificate, passwords (streamrec.kafka.secure)

The jar folder can be shared by several homes (a test broker in a temp folder reuses the jars of
the main one): pass ``lib_dir=`` to :class:`KafkaLauncher`, or set ``STREAMREC_KAFKA_LIB``.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psutil

from streamrec.config import KafkaSettings, LocalKafkaSettings
from streamrec.kafka import secure as secure_broker
from streamrec.kafka.security import client_config

logger = logging.getLogger(__name__)

#: Environment variable naming a jar folder shared by every broker home.
LIB_ENV_VAR = "STREAMREC_KAFKA_LIB"
#: File in the jar folder holding the sha256 of the pom the jars were resolved from.
STAMP_NAME = ".pom.sha256"
LOOPBACK = "127.0.0.1"
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
MIN_JAVA_MAJOR = 17
LOG_TAIL_LINES = 30
#: In the data folder of a broker formatted for ``--secure`` (its SCRAM users live there).
SECURE_MARKER = ".streamrec-secure"
#: Largest record batch the broker accepts: well above a 1 MB poison payload.
MESSAGE_MAX_BYTES = 4 * 1024 * 1024
_KAFKA_JAR = re.compile(r"^kafka_\d+\.\d+-(?P<version>.+)\.jar$")
_JAVA_VERSION = re.compile(r'version "(?P<version>[^"]+)"')
_HEAP = re.compile(r"^(?P<number>\d+)(?P<unit>[kmgKMG]?)$")


class KafkaLauncherError(RuntimeError):
    """The local broker could not be fetched, started, stopped or reset; the message says why."""


@dataclass(frozen=True)
class KafkaStatus:
    """What :meth:`KafkaLauncher.status` sees: one snapshot, nothing live."""

    #: The process named in the pid file is alive and is this home's broker.
    running: bool
    #: The broker answers a metadata request on ``bootstrap``.
    ready: bool
    pid: int | None
    bootstrap: str
    controller: str
    #: Version of the jars in ``lib_dir``; ``None`` before the first fetch.
    kafka_version: str | None
    home: Path
    data_dir: Path
    lib_dir: Path
    log_file: Path
    #: ``data_dir`` holds a formatted KRaft log (``meta.properties``).
    formatted: bool
    #: Started (or to be started) with ``--secure``: TLS, SASL/SCRAM and ACLs.
    secure: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (paths as strings)."""
        return {key: str(value) if isinstance(value, Path) else value for key, value in asdict(self).items()}


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------


def packaged_file(name: str) -> Path:
    """Path of a file shipped inside ``streamrec.kafka`` (``pom.xml``, ``log4j2.yaml``)."""
    return Path(str(resources.files("streamrec.kafka").joinpath(name)))


def pom_hash(pom: Path) -> str:
    """sha256 of the pom's bytes: the jars are stale when it no longer matches the stamp."""
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def resolve_lib_dir(home: Path, lib_dir: Path | None = None,
                    environ: Mapping[str, str] | None = None) -> Path:
    """The jar folder: ``lib_dir`` if given, else ``$STREAMREC_KAFKA_LIB``, else ``<home>/lib``."""
    if lib_dir is not None:
        return Path(lib_dir).expanduser().resolve()
    env = os.environ if environ is None else environ
    if env.get(LIB_ENV_VAR):
        return Path(env[LIB_ENV_VAR]).expanduser().resolve()
    return Path(home).expanduser().resolve() / "lib"


def render_server_properties(settings: LocalKafkaSettings, data_dir: Path,
                             secure_lines: list[str] | None = None) -> str:
    """``server.properties`` of a single KRaft node, broker and controller in one, loopback only;
    ``secure_lines`` (from :func:`streamrec.kafka.secure.secure_properties`) replace the
    plaintext listeners."""
    port, controller_port = settings.port, settings.controller_port
    listeners = secure_lines if secure_lines is not None else [
        f"listeners=PLAINTEXT://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{controller_port}",
        f"advertised.listeners=PLAINTEXT://{LOOPBACK}:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    ]
    lines = [
        "# Written by `streamrec kafka up`; rewritten on every start, edits here are lost.",
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{LOOPBACK}:{controller_port}",
        *listeners,
        f"log.dirs={data_dir}",
        "num.partitions=4",
        "auto.create.topics.enable=true",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=10",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "log.retention.hours=168",
        f"message.max.bytes={MESSAGE_MAX_BYTES}",
        f"replica.fetch.max.bytes={MESSAGE_MAX_BYTES}",
        "num.recovery.threads.per.data.dir=1",
    ]
    return "\n".join(lines) + "\n"


def new_cluster_id() -> str:
    """A Kafka cluster id, as ``StorageTool random-uuid`` prints it, without starting a JVM.

    Kafka's ``Uuid.randomUuid()`` is 16 random bytes in unpadded URL-safe base64 that does not
    start with ``-`` (such ids would read as command-line flags).
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not text.startswith("-"):
            return text


def kafka_version_in(lib_dir: Path) -> str | None:
    """Version of the ``kafka_<scala>-<version>.jar`` in ``lib_dir``, if there is one."""
    if not lib_dir.is_dir():
        return None
    for jar in sorted(lib_dir.glob("kafka_*.jar")):
        match = _KAFKA_JAR.match(jar.name)
        if match:
            return match.group("version")
    return None


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when nothing listens on ``host:port`` (a socket may bind it right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Like the JVM, ignore sockets lingering in TIME_WAIT after a previous broker.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def java_major(version_output: str) -> int | None:
    """Major Java version from ``java -version`` output (``"1.8.0_x"`` -> 8, ``"17.0.1"`` -> 17)."""
    match = _JAVA_VERSION.search(version_output)
    if not match:
        return None
    parts = match.group("version").split(".")
    try:
        first = int(re.sub(r"\D.*", "", parts[0]) or "0")
        return int(parts[1]) if first == 1 and len(parts) > 1 else first
    except ValueError:
        return None


def initial_heap(heap: str, preferred: str = "256m") -> str:
    """``-Xms`` value: ``preferred`` unless the maximum heap is smaller than that."""
    def to_bytes(text: str) -> int | None:
        match = _HEAP.match(text.strip())
        if not match:
            return None
        scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[match.group("unit").lower()]
        return int(match.group("number")) * scale

    maximum, wanted = to_bytes(heap), to_bytes(preferred)
    if maximum is not None and wanted is not None and maximum < wanted:
        return heap
    return preferred


def tail(path: Path, lines: int = LOG_TAIL_LINES, start: int = 0) -> list[str]:
    """The last ``lines`` lines of ``path`` written after byte offset ``start``; [] if missing."""
    try:
        with path.open("rb") as handle:
            handle.seek(start)
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def file_size(path: Path) -> int:
    """Size of ``path`` in bytes, 0 when it does not exist."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def listener_of(port: int) -> str | None:
    """Best effort: ``"pid 123 (java ...)"`` for the process listening on ``port``."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                try:
                    command = " ".join(" ".join(psutil.Process(conn.pid).cmdline()).split())[:120]
                except psutil.Error:
                    command = "?"
                return f"pid {conn.pid} ({command})"
    except (psutil.Error, OSError):
        return None
    return None


# --------------------------------------------------------------------------------------------
# The launcher
# --------------------------------------------------------------------------------------------


class KafkaLauncher:
    """Fetch, start, stop and inspect one local broker living in ``settings.home``.

    Several launchers with different homes and ports can run side by side; they may share one
    jar folder (``lib_dir`` argument, else ``$STREAMREC_KAFKA_LIB``, else ``<home>/lib``).
    """

    def __init__(self, settings: LocalKafkaSettings | None = None, *, lib_dir: Path | None = None) -> None:
        self.settings = settings if settings is not None else LocalKafkaSettings()
        if self.settings.port == self.settings.controller_port:
            raise KafkaLauncherError(
                f"The broker port and the controller port are both {self.settings.port}; "
                "they must differ.")
        self.home = Path(self.settings.home).expanduser().resolve()
        self.lib_dir = resolve_lib_dir(self.home, lib_dir)

    # -- paths and addresses ------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """Address clients connect to, ``127.0.0.1:<port>``."""
        return f"{LOOPBACK}:{self.settings.port}"

    @property
    def controller(self) -> str:
        """Address of the KRaft controller listener."""
        return f"{LOOPBACK}:{self.settings.controller_port}"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def log_file(self) -> Path:
        """The broker's own log (written by log4j2)."""
        return self.logs_dir / "server.log"

    @property
    def console_file(self) -> Path:
        """The JVM's stdout and stderr."""
        return self.logs_dir / "kafka.out"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def secure_files(self) -> secure_broker.SecureFiles:
        """The CA, certificate and password files of ``--secure`` (``<home>/secure``)."""
        return secure_broker.SecureFiles(self.home / "secure")

    def client_settings(self, principal: str = secure_broker.ADMIN) -> KafkaSettings:
        """Kafka settings that reach this broker: plaintext, or with ``--secure`` as ``principal``."""
        if not self.settings.secure:
            return KafkaSettings(bootstrap=self.bootstrap)
        return self.secure_files.client_settings(principal, self.bootstrap)

    @property
    def properties_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def stamp_file(self) -> Path:
        return self.lib_dir / STAMP_NAME

    # -- jars ---------------------------------------------------------------------------------

    def jars_ready(self) -> bool:
        """True when ``lib_dir`` holds jars resolved from the current ``pom.xml``."""
        try:
            stamp = self.stamp_file.read_text(encoding="utf-8").strip()
        except OSError:
            return False
        return stamp == pom_hash(packaged_file("pom.xml")) and kafka_version_in(self.lib_dir) is not None

    def fetch(self, force: bool = False) -> bool:
        """Resolve the broker's jars into ``lib_dir`` with Maven unless they are already there.

        Returns True when Maven ran. Safe to call from several processes at once (file lock);
        the new jars replace the old folder in one rename, so no stale jar is left behind.
        """
        if not force and self.jars_ready():
            logger.debug("Kafka jars already in %s", self.lib_dir)
            return False
        mvn = _require_tool("mvn", "Maven (`mvn`)", "to download the Kafka jars")
        self.lib_dir.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.lib_dir.parent / f".{self.lib_dir.name}.lock"):
            if not force and self.jars_ready():
                return False
            self._run_maven(mvn)
        logger.info("Kafka %s jars are in %s", kafka_version_in(self.lib_dir), self.lib_dir)
        return True

    def _run_maven(self, mvn: str) -> None:
        """Copy the pom's dependencies into a fresh folder, stamp it and swap it into place."""
        pom = packaged_file("pom.xml")
        partial = self.lib_dir.with_name(f".{self.lib_dir.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        logger.info("Downloading the Kafka jars with Maven into %s (first time only)", self.lib_dir)
        with tempfile.TemporaryDirectory(prefix="streamrec-kafka-pom-") as build:
            shutil.copy2(pom, Path(build) / "pom.xml")
            command = [mvn, "-q", "-B", "-f", str(Path(build) / "pom.xml"),
                       "dependency:copy-dependencies", f"-DoutputDirectory={partial}"]
            try:
                done = subprocess.run(command, cwd=build, capture_output=True, text=True,
                                      timeout=900, check=False)
            except subprocess.TimeoutExpired as exc:
                raise KafkaLauncherError("Maven did not finish downloading the Kafka jars within "
                                         "15 minutes; is Maven Central reachable?") from exc
        if done.returncode != 0 or kafka_version_in(partial) is None:
            shutil.rmtree(partial, ignore_errors=True)
            output = "\n".join((done.stdout + done.stderr).splitlines()[-LOG_TAIL_LINES:])
            raise KafkaLauncherError(
                f"Maven could not download the Kafka jars (exit code {done.returncode}). "
                f"Is Maven Central reachable? Its last output:\n{output}")
        (partial / STAMP_NAME).write_text(pom_hash(pom) + "\n", encoding="utf-8")
        old = self.lib_dir.with_name(f".{self.lib_dir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if self.lib_dir.exists():
            self.lib_dir.rename(old)
        partial.rename(self.lib_dir)
        shutil.rmtree(old, ignore_errors=True)

    # -- process ------------------------------------------------------------------------------

    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return None

    def _process(self) -> psutil.Process | None:
        """This home's live broker process, or None (a stale pid file is not trusted)."""
        pid = self._read_pid()
        if pid is None:
            return None
        try:
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                process.wait(timeout=0)  # reaps it when it is our child
                return None
            command = process.cmdline()
        except (psutil.Error, psutil.TimeoutExpired):
            return None
        if MAIN_CLASS in command and str(self.properties_file) in command:
            return process
        return None

    def answers(self, timeout: float = 2.0) -> bool:
        """True when a broker on ``bootstrap`` answers a metadata request within ``timeout``."""
        if not port_accepts(self.settings.port, timeout=min(timeout, 0.5)):
            return False
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({
            **client_config(self.bootstrap, self.client_settings()),
            "socket.connection.setup.timeout.ms": max(1000, int(timeout * 1000)),
            "logger": logging.getLogger(f"{__name__}.librdkafka"),
        })
        try:
            metadata = admin.list_topics(timeout=timeout)
        except KafkaException:
            return False
        return bool(metadata.brokers)

    def check_ports_free(self) -> None:
        """Raise when something already listens on the broker or controller port."""
        for port, role in ((self.settings.port, "broker"), (self.settings.controller_port, "controller")):
            if not port_is_free(port):
                holder = listener_of(port)
                who = f" by {holder}" if holder else " by another process"
                raise KafkaLauncherError(
                    f"Port {port} on {LOOPBACK} (the {role} port) is already in use{who}. "
                    "Stop that process or choose another port.")

    def up(self, timeout: float = 60.0) -> bool:
        """Start the broker and wait until it answers; returns False when it was already running.

        Fetches the jars and formats the storage the first time. Raises
        :class:`KafkaLauncherError` when a port is taken, Java is missing, or the broker dies
        or stays silent for ``timeout`` seconds (it is then stopped; the log tail is included),
        and when the home's data was formatted in the other mode (``secure`` or not).
        """
        self._check_mode()
        process = self._process()
        if process is not None:
            if self.answers():
                logger.info("Kafka is already running at %s (pid %d)", self.bootstrap, process.pid)
                return False
            logger.info("Kafka (pid %d) is starting; waiting for it", process.pid)
            self._wait_ready(process, timeout, log_offset=0)
            return False
        self.pid_file.unlink(missing_ok=True)
        self.check_ports_free()
        self.fetch()
        java = _require_java()
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        secure_lines = None
        if self.settings.secure:
            secure_broker.ensure_files(self.secure_files)
            secure_lines = secure_broker.secure_properties(self.secure_files, self.settings.port,
                                                          self.settings.controller_port, LOOPBACK)
        # 0600: with --secure it holds the admin's password.
        secure_broker.write_private_text(self.properties_file,
                                         render_server_properties(self.settings, self.data_dir, secure_lines))
        self._format_storage(java)
        log_offset = file_size(self.log_file)
        started = time.monotonic()
        process = self._start(java)
        self._wait_ready(process, timeout, log_offset)
        logger.info("Kafka is up at %s (pid %d) after %.1f s", self.bootstrap, process.pid,
                    time.monotonic() - started)
        return True

    def _java_command(self, java: str, main_class: str, *args: str,
                      jvm_options: tuple[str, ...] = ()) -> list[str]:
        """A ``java`` command line with this home's logging setup and the shared class path."""
        return [java, *jvm_options, f"-Dkafka.logs.dir={self.logs_dir}",
                f"-Dlog4j2.configurationFile={packaged_file('log4j2.yaml')}",
                "-Djava.awt.headless=true", "-cp", str(self.lib_dir / "*"), main_class, *args]

    def _check_mode(self) -> None:
        """Refuse to start formatted data in the other mode: a home formatted without
        ``--secure`` has no SCRAM users, and one formatted with it holds the ACLs' data."""
        if not (self.data_dir / "meta.properties").exists():
            return
        formatted_secure = (self.data_dir / SECURE_MARKER).exists()
        if formatted_secure and self.settings.secure and not self.secure_files.credentials.exists():
            raise KafkaLauncherError(
                f"The broker data in {self.data_dir} has SCRAM users, but their passwords "
                f"({self.secure_files.credentials}) are gone. Delete its data with `streamrec kafka reset` "
                "to start over with new ones.")
        if formatted_secure != self.settings.secure:
            was, now = ("with", "without") if formatted_secure else ("without", "with")
            raise KafkaLauncherError(
                f"The broker data in {self.data_dir} was formatted {was} --secure and cannot be started "
                f"{now} it. Start it as it was, or delete its data with `streamrec kafka reset` "
                "(or choose another --home).")

    def _format_storage(self, java: str) -> None:
        """Format ``data_dir`` as a fresh single-node KRaft cluster, unless already formatted;
        with ``--secure``, with one SCRAM user per principal."""
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = new_cluster_id()
        logger.info("Formatting %s for new cluster %s", self.data_dir, cluster_id)
        scram: list[str] = []
        if self.settings.secure:
            for name, password in self.secure_files.passwords().items():
                scram += ["--add-scram", secure_broker.scram_argument(name, password)]
        command = self._java_command(java, STORAGE_TOOL, "format", "-t", cluster_id,
                                     "-c", str(self.properties_file), *scram)
        done = subprocess.run(command, cwd=self.home, capture_output=True, text=True,
                              timeout=120, check=False)
        if done.returncode != 0:
            output = "\n".join((done.stdout + done.stderr).splitlines()[-LOG_TAIL_LINES:])
            raise KafkaLauncherError(
                f"Kafka could not format its storage in {self.data_dir} "
                f"(exit code {done.returncode}):\n{output}")
        if self.settings.secure:
            (self.data_dir / SECURE_MARKER).write_text("formatted by `streamrec kafka up --secure`\n",
                                                       encoding="utf-8")

    def _start(self, java: str) -> psutil.Process:
        """Launch the broker detached from this process and record its pid."""
        heap = self.settings.heap
        options = (f"-Xmx{heap}", f"-Xms{initial_heap(heap)}", "-XX:+UseG1GC",
                   "-XX:MaxGCPauseMillis=20", "-XX:+ExitOnOutOfMemoryError", *self.settings.jvm_options)
        command = self._java_command(java, MAIN_CLASS, str(self.properties_file), jvm_options=options)
        logger.debug("Starting: %s", " ".join(command))
        with self.console_file.open("wb") as console:
            child = subprocess.Popen(command, cwd=self.home, stdin=subprocess.DEVNULL,
                                     stdout=console, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        _write_atomically(self.pid_file, f"{child.pid}\n")
        return psutil.Process(child.pid)

    def _wait_ready(self, process: psutil.Process, timeout: float, log_offset: int) -> None:
        """Poll until the broker answers; raise with its log tail if it dies or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(process):
                self.pid_file.unlink(missing_ok=True)
                raise KafkaLauncherError(
                    f"Kafka exited while starting (pid {process.pid}).\n"
                    + self._log_excerpt(log_offset))
            if self.answers(timeout=1.0):
                return
            time.sleep(0.25)
        excerpt = self._log_excerpt(log_offset)
        self._stop(process, timeout=15.0)
        raise KafkaLauncherError(
            f"Kafka did not answer on {self.bootstrap} within {timeout:g} s, so it was stopped. "
            f"Try again with a longer timeout.\n{excerpt}")

    def _log_excerpt(self, log_offset: int) -> str:
        """The last lines of the JVM console and of the broker log, for error messages."""
        parts = []
        for path, start in ((self.console_file, 0), (self.log_file, log_offset)):
            lines = tail(path, LOG_TAIL_LINES, start)
            if lines:
                parts.append(f"--- last {len(lines)} lines of {path} ---\n" + "\n".join(lines))
        return "\n".join(parts) if parts else f"(no log output in {self.logs_dir})"

    def down(self, timeout: float = 30.0) -> bool:
        """Stop the broker (SIGTERM, SIGKILL after ``timeout`` s); False if it was not running."""
        process = self._process()
        if process is None:
            self.pid_file.unlink(missing_ok=True)
            logger.info("Kafka is not running (home %s)", self.home)
            return False
        logger.info("Stopping Kafka (pid %d)", process.pid)
        self._stop(process, timeout)
        return True

    def _stop(self, process: psutil.Process, timeout: float) -> None:
        """SIGTERM, wait, SIGKILL if needed; always removes the pid file."""
        try:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except psutil.TimeoutExpired:
                logger.warning("Kafka (pid %d) ignored SIGTERM for %g s; killing it", process.pid, timeout)
                process.kill()
                process.wait(timeout=10)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired as exc:
            raise KafkaLauncherError(f"Kafka (pid {process.pid}) survived SIGKILL; "
                                     "check it with `ps`.") from exc
        finally:
            self.pid_file.unlink(missing_ok=True)

    def reset(self) -> None:
        """Delete the broker's data (all topics and offsets); only while it is stopped."""
        if self._process() is not None:
            raise KafkaLauncherError(f"Kafka is running at {self.bootstrap}; stop it before "
                                     "deleting its data.")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        logger.info("Deleted %s", self.data_dir)

    def status(self) -> KafkaStatus:
        """A snapshot: is it running, does it answer, where does everything live."""
        process = self._process()
        return KafkaStatus(
            running=process is not None,
            ready=process is not None and self.answers(),
            pid=process.pid if process is not None else None,
            bootstrap=self.bootstrap,
            controller=self.controller,
            kafka_version=kafka_version_in(self.lib_dir),
            home=self.home,
            data_dir=self.data_dir,
            lib_dir=self.lib_dir,
            log_file=self.log_file,
            formatted=(self.data_dir / "meta.properties").exists(),
            secure=self.settings.secure,
        )


# --------------------------------------------------------------------------------------------
# Small process and file helpers
# --------------------------------------------------------------------------------------------


def _alive(process: psutil.Process) -> bool:
    """True while ``process`` runs (a zombie child is reaped and counts as dead)."""
    try:
        if process.status() != psutil.STATUS_ZOMBIE:
            return True
        process.wait(timeout=0)
    except (psutil.Error, psutil.TimeoutExpired):
        pass
    return False


def _require_tool(name: str, label: str, purpose: str) -> str:
    """Absolute path of an executable on PATH, or a clear error."""
    path = shutil.which(name)
    if path is None:
        raise KafkaLauncherError(f"{label} is needed {purpose} but is not on PATH; please install it.")
    return path


def _require_java() -> str:
    """Path of a Java 17+ ``java`` executable, or a clear error."""
    java = _require_tool("java", "Java (`java`, version 17 or newer)", "to run the Kafka broker")
    done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60, check=False)
    major = java_major(done.stderr + done.stdout)
    if major is not None and major < MIN_JAVA_MAJOR:
        raise KafkaLauncherError(f"Kafka 4 needs Java {MIN_JAVA_MAJOR} or newer, but `{java}` is "
                                 f"Java {major}.")
    return java


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the block."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
