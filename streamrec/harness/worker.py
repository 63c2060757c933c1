"""Running a worker as a child process (for the demo, the tests, benchmarks and evaluation).

The worker is the real ``streamrec worker`` command in its own process, configured through
``STREAMREC_*`` environment variables; :class:`WorkerProcess` starts it, waits until its
consumer group has partitions assigned, and stops it (SIGTERM, or SIGKILL to simulate a
crash).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from streamrec.config import KafkaSettings
from streamrec.kafka.security import client_config

logger = logging.getLogger(__name__)


@dataclass
class WorkerConfig:
    bootstrap: str
    models_dir: Path
    data_dir: Path
    app_id: str
    events_topic: str = "events"
    recommendations_topic: str = "recommendations"
    dlq_topic: str = "events-dlq"
    partitions: int = 4
    batch_size: int | None = None
    #: ``batch`` or ``faust`` (``STREAMREC_WORKER__ENGINE``); None keeps the settings' default.
    engine: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "STREAMREC_KAFKA__BOOTSTRAP": self.bootstrap,
                "STREAMREC_KAFKA__EVENTS_TOPIC": self.events_topic,
                "STREAMREC_KAFKA__RECOMMENDATIONS_TOPIC": self.recommendations_topic,
                "STREAMREC_KAFKA__DLQ_TOPIC": self.dlq_topic,
                "STREAMREC_KAFKA__PARTITIONS": str(self.partitions),
                "STREAMREC_INDEX__MODELS_DIR": str(self.models_dir),
                "STREAMREC_WORKER__DATA_DIR": str(self.data_dir),
                "STREAMREC_WORKER__APP_ID": self.app_id,
                "PYTHONUNBUFFERED": "1",
                # Several workers run side by side here: no /metrics unless a caller asks for a port.
                "STREAMREC_WORKER__METRICS_PORT": "0",
            }
        )
        if self.batch_size is not None:
            env["STREAMREC_WORKER__BATCH_SIZE"] = str(self.batch_size)
        if self.engine is not None:
            env["STREAMREC_WORKER__ENGINE"] = self.engine
        env.update(self.extra_env)
        return env

    def kafka_settings(self) -> KafkaSettings:
        """The worker's Kafka settings (its address and credentials), as read from :meth:`env`."""
        prefix = "STREAMREC_KAFKA__"
        values = {key[len(prefix):].lower(): value for key, value in self.env().items() if key.startswith(prefix)}
        return KafkaSettings(**values)


class WorkerProcess:
    """One ``streamrec worker`` child process."""

    def __init__(self, config: WorkerConfig, *, log_file: Path, loglevel: str = "info") -> None:
        self.config = config
        self.log_file = log_file
        self.loglevel = loglevel
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None

    def start(self) -> WorkerProcess:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamrec.cli", "--log-level", self.loglevel.upper(), "worker"],
            env=self.config.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.started_at = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the worker has not been started")
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_file.exists():
            return "(no log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Wait until the worker's consumer group is stable with partitions assigned.

        Returns the seconds it took since :meth:`start`.
        """
        from confluent_kafka import ConsumerGroupState
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(client_config(self.config.bootstrap, self.config.kafka_settings()))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"the worker exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                group = admin.describe_consumer_groups([self.config.app_id])[self.config.app_id].result(timeout=5)
                assigned = any(m.assignment.topic_partitions for m in group.members)
                if group.state == ConsumerGroupState.STABLE and assigned:
                    return time.monotonic() - (self.started_at or 0.0)
            except Exception as exc:  # noqa: BLE001 - not there yet; keep polling
                logger.debug("worker group not ready: %s", exc)
            time.sleep(0.5)
        raise TimeoutError(f"the worker was not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; SIGKILL after ``timeout``. Returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("worker %d ignored SIGTERM for %.0f s; killing it", self.process.pid, timeout)
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the worker, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
