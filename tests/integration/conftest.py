"""The test session's own Apache Kafka broker, and helpers to drive a real worker against it."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamrec.config import LocalKafkaSettings
from streamrec.harness.worker import WorkerConfig, WorkerProcess
from streamrec.kafka import KafkaLauncher


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def kafka_launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaLauncher]:
    """One real broker for the whole session, in a temporary home, on free ports."""
    settings = LocalKafkaSettings(
        home=tmp_path_factory.mktemp("kafka"), port=free_port(), controller_port=free_port(), heap="1g"
    )
    launcher = KafkaLauncher(settings, lib_dir=LocalKafkaSettings().home / "lib")
    launcher.up(timeout=120)
    yield launcher
    launcher.down()


@pytest.fixture(scope="session")
def bootstrap(kafka_launcher: KafkaLauncher) -> str:
    return kafka_launcher.bootstrap


@dataclass
class Topics:
    events: str
    recommendations: str
    dlq: str
    app_id: str


@pytest.fixture
def topics() -> Topics:
    run = uuid.uuid4().hex[:8]
    return Topics(f"events-{run}", f"recommendations-{run}", f"events-dlq-{run}", f"streamrec-test-{run}")


@pytest.fixture
def start_worker(bootstrap: str, topics: Topics, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real ``streamrec worker`` processes for this test's topics; all stopped at the end."""
    started: list[WorkerProcess] = []

    def start(models_dir: Path, *, partitions: int = 2, name: str = "worker", **kwargs) -> WorkerProcess:
        config = WorkerConfig(
            bootstrap=bootstrap,
            models_dir=models_dir,
            data_dir=tmp_path / f"{name}-data",
            app_id=topics.app_id,
            events_topic=topics.events,
            recommendations_topic=topics.recommendations,
            dlq_topic=topics.dlq,
            partitions=partitions,
            **kwargs,
        )
        worker = WorkerProcess(config, log_file=tmp_path / f"{name}.log").start()
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.stop()
