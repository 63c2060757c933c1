"""A real broker in a temporary home: start, create a topic, produce, consume, stop."""

from __future__ import annotations

import json
import shutil
import socket
import time
import uuid
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streamrec.cli import main
from streamrec.config import LocalKafkaSettings
from streamrec.kafka import KafkaLauncher

pytestmark = pytest.mark.integration


def _cli_status(launcher: KafkaLauncher, *flags: str) -> tuple[int, str]:
    """``streamrec kafka status`` of this launcher's home: (exit code, output)."""
    result = CliRunner().invoke(main, ["kafka", "status", *flags, "--home", str(launcher.home),
                                       "--port", str(launcher.settings.port),
                                       "--controller-port", str(launcher.settings.controller_port)])
    return result.exit_code, result.output


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.timeout(180)
def test_broker_lifecycle_round_trip(tmp_path: Path) -> None:
    if shutil.which("java") is None:
        pytest.skip("Java is not installed")
    shared_lib = LocalKafkaSettings().home / "lib"  # reuse the main broker's jars
    settings = LocalKafkaSettings(home=tmp_path / "kafka", port=_free_port(),
                                  controller_port=_free_port(), heap="512m")
    launcher = KafkaLauncher(settings, lib_dir=shared_lib)
    if not launcher.jars_ready() and shutil.which("mvn") is None:
        pytest.skip("no Kafka jars and no Maven to fetch them")

    assert _cli_status(launcher)[0] == 3, "not started yet: `status` must exit 3"
    started = time.monotonic()
    assert launcher.up(timeout=90) is True
    pid = launcher.status().pid
    try:
        assert pid is not None and psutil.pid_exists(pid)
        status = launcher.status()
        assert status.running and status.ready and status.formatted
        assert status.kafka_version == "4.1.1"
        assert launcher.up(timeout=10) is False  # already running: no second broker
        startup_s = time.monotonic() - started
        code, output = _cli_status(launcher, "--json")
        assert code == 0, output
        assert json.loads(output)["pid"] == pid
        code, output = _cli_status(launcher)
        assert code == 0 and f"running, pid {pid}" in output, output

        topic = f"it-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": launcher.bootstrap})
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)

        producer = Producer({"bootstrap.servers": launcher.bootstrap})
        producer.produce(topic, key=b"user-1", value=b"hello kafka")
        assert producer.flush(30) == 0

        consumer = Consumer({"bootstrap.servers": launcher.bootstrap, "group.id": f"g-{topic}",
                             "auto.offset.reset": "earliest"})
        try:
            consumer.subscribe([topic])
            message = None
            deadline = time.monotonic() + 30
            while message is None and time.monotonic() < deadline:
                candidate = consumer.poll(1.0)
                if candidate is not None and candidate.error() is None:
                    message = candidate
        finally:
            consumer.close()
        assert message is not None, "no message consumed within 30 s"
        assert (message.key(), message.value()) == (b"user-1", b"hello kafka")
    finally:
        assert launcher.down(timeout=30) is True
    assert not psutil.pid_exists(pid)
    assert not launcher.pid_file.exists()
    assert not launcher.status().running
    for flags in ((), ("--json",)):
        code, output = _cli_status(launcher, *flags)
        assert code == 3, output
    assert startup_s < 60
