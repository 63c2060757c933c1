"""Unit tests for the parts of the local Kafka launcher that need neither Java nor a broker."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamrec.config import LocalKafkaSettings
from streamrec.kafka import LIB_ENV_VAR, KafkaLauncher, KafkaLauncherError
from streamrec.kafka import launcher as mod


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def listening() -> Iterator[int]:
    """A plain socket listening on a free loopback port."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield int(server.getsockname()[1])


@pytest.fixture
def launcher(tmp_path: Path) -> KafkaLauncher:
    settings = LocalKafkaSettings(home=tmp_path / "home", port=_free_port(), controller_port=_free_port())
    return KafkaLauncher(settings, lib_dir=tmp_path / "lib")


# -- server.properties ---------------------------------------------------------------------------


def test_server_properties_single_kraft_node_on_loopback(tmp_path: Path) -> None:
    settings = LocalKafkaSettings(home=tmp_path, port=19092, controller_port=19093)
    props = _properties(mod.render_server_properties(settings, tmp_path / "data"))

    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert "0.0.0.0" not in mod.render_server_properties(settings, tmp_path / "data")


def test_server_properties_single_node_friendly_settings(tmp_path: Path) -> None:
    props = _properties(mod.render_server_properties(LocalKafkaSettings(home=tmp_path), tmp_path))

    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["num.partitions"] == "4"
    assert props["auto.create.topics.enable"] == "true"
    assert props["log.retention.hours"] == "168"
    assert int(props["message.max.bytes"]) >= 2 * 1024 * 1024
    assert int(props["replica.fetch.max.bytes"]) >= int(props["message.max.bytes"])


def test_launcher_paths_and_addresses(launcher: KafkaLauncher, tmp_path: Path) -> None:
    port = launcher.settings.port
    assert launcher.bootstrap == f"127.0.0.1:{port}"
    assert launcher.data_dir == tmp_path / "home" / "data"
    assert launcher.pid_file == tmp_path / "home" / "kafka.pid"
    assert launcher.lib_dir == tmp_path / "lib"


def test_same_broker_and_controller_port_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KafkaLauncherError, match="must differ"):
        KafkaLauncher(LocalKafkaSettings(home=tmp_path, port=9100, controller_port=9100))


# -- lib folder resolution -----------------------------------------------------------------------


def test_lib_dir_argument_beats_environment(tmp_path: Path) -> None:
    env = {LIB_ENV_VAR: str(tmp_path / "from-env")}
    assert mod.resolve_lib_dir(tmp_path / "home", tmp_path / "arg", env) == tmp_path / "arg"
    assert mod.resolve_lib_dir(tmp_path / "home", None, env) == tmp_path / "from-env"
    assert mod.resolve_lib_dir(tmp_path / "home", None, {}) == tmp_path / "home" / "lib"


def test_lib_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LIB_ENV_VAR, str(tmp_path / "shared"))
    assert KafkaLauncher(LocalKafkaSettings(home=tmp_path / "home")).lib_dir == tmp_path / "shared"


# -- stamp / hash --------------------------------------------------------------------------------


def _fake_jars(lib: Path, stamp: str | None) -> None:
    lib.mkdir(parents=True, exist_ok=True)
    (lib / "kafka_2.13-4.1.1.jar").write_bytes(b"")
    (lib / "kafka-clients-4.1.1.jar").write_bytes(b"")
    if stamp is not None:
        (lib / mod.STAMP_NAME).write_text(stamp + "\n")


def test_pom_hash_is_sha256_of_the_packaged_pom() -> None:
    pom = mod.packaged_file("pom.xml")
    digest = mod.pom_hash(pom)
    assert digest == hashlib.sha256(pom.read_bytes()).hexdigest()
    assert "<artifactId>kafka_${scala.binary.version}</artifactId>" in pom.read_text()


def test_pom_hash_changes_with_content(tmp_path: Path) -> None:
    first, second = tmp_path / "a.xml", tmp_path / "b.xml"
    first.write_text("<project>4.1.1</project>")
    second.write_text("<project>4.1.2</project>")
    assert mod.pom_hash(first) != mod.pom_hash(second)


def test_jars_ready_needs_matching_stamp(launcher: KafkaLauncher) -> None:
    assert not launcher.jars_ready()
    _fake_jars(launcher.lib_dir, stamp=None)
    assert not launcher.jars_ready()
    (launcher.lib_dir / mod.STAMP_NAME).write_text("0" * 64)
    assert not launcher.jars_ready()
    (launcher.lib_dir / mod.STAMP_NAME).write_text(mod.pom_hash(mod.packaged_file("pom.xml")))
    assert launcher.jars_ready()


def test_jars_ready_needs_the_kafka_jar(launcher: KafkaLauncher) -> None:
    launcher.lib_dir.mkdir(parents=True)
    (launcher.lib_dir / mod.STAMP_NAME).write_text(mod.pom_hash(mod.packaged_file("pom.xml")))
    assert not launcher.jars_ready()


def test_fetch_skips_maven_when_jars_are_current(launcher: KafkaLauncher,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_jars(launcher.lib_dir, stamp=mod.pom_hash(mod.packaged_file("pom.xml")))
    monkeypatch.setattr(mod.shutil, "which", lambda name: None)  # no mvn needed
    assert launcher.fetch() is False


def test_fetch_without_maven_is_a_clear_error(launcher: KafkaLauncher,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mod.shutil, "which", lambda name: None)
    with pytest.raises(KafkaLauncherError, match=r"Maven \(`mvn`\).*not on PATH"):
        launcher.fetch()


def test_missing_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mod.shutil, "which", lambda name: None)
    with pytest.raises(KafkaLauncherError, match=r"Java .*not on PATH"):
        mod._require_java()


def test_kafka_version_from_jar_names(tmp_path: Path) -> None:
    assert mod.kafka_version_in(tmp_path / "missing") is None
    _fake_jars(tmp_path, stamp=None)
    assert mod.kafka_version_in(tmp_path) == "4.1.1"


# -- small pure helpers --------------------------------------------------------------------------


def test_cluster_id_looks_like_a_kafka_uuid() -> None:
    ids = {mod.new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cluster_id in ids:
        assert len(cluster_id) == 22 and not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


@pytest.mark.parametrize(("output", "major"), [
    ('openjdk version "17.0.15" 2025-04-15', 17),
    ('java version "1.8.0_392"', 8),
    ('openjdk version "21" 2023-09-19', 21),
    ("no version here", None),
])
def test_java_major(output: str, major: int | None) -> None:
    assert mod.java_major(output) == major


@pytest.mark.parametrize(("heap", "xms"), [("1g", "256m"), ("512m", "256m"), ("128m", "128m"),
                                            ("256m", "256m"), ("weird", "256m")])
def test_initial_heap_never_exceeds_maximum(heap: str, xms: str) -> None:
    assert mod.initial_heap(heap) == xms


def test_tail_reads_only_new_lines(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("".join(f"old {i}\n" for i in range(5)))
    offset = mod.file_size(log)
    with log.open("a") as handle:
        handle.write("".join(f"new {i}\n" for i in range(40)))
    assert mod.tail(log, 30, offset) == [f"new {i}" for i in range(10, 40)]
    assert mod.tail(tmp_path / "missing.log") == []
    assert mod.file_size(tmp_path / "missing.log") == 0


# -- ports ---------------------------------------------------------------------------------------


def test_port_probe_sees_a_plain_listening_socket(listening: int) -> None:
    assert not mod.port_is_free(listening)
    assert mod.port_accepts(listening)
    assert mod.port_is_free(_free_port())


def test_up_refuses_a_port_in_use(tmp_path: Path, listening: int,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(KafkaLauncher, "fetch", lambda self, force=False: pytest.fail("fetched"))
    launcher = KafkaLauncher(LocalKafkaSettings(home=tmp_path, port=listening, controller_port=_free_port()),
                             lib_dir=tmp_path / "lib")
    with pytest.raises(KafkaLauncherError, match=rf"Port {listening} .*already in use"):
        launcher.up(timeout=5)
    assert not launcher.pid_file.exists()


def test_controller_port_in_use_is_refused_too(tmp_path: Path, listening: int) -> None:
    launcher = KafkaLauncher(LocalKafkaSettings(home=tmp_path, port=_free_port(), controller_port=listening),
                             lib_dir=tmp_path / "lib")
    with pytest.raises(KafkaLauncherError, match="controller port"):
        launcher.check_ports_free()


def test_a_plain_socket_is_not_a_broker(tmp_path: Path, listening: int) -> None:
    launcher = KafkaLauncher(LocalKafkaSettings(home=tmp_path, port=listening, controller_port=_free_port()))
    assert not launcher.answers(timeout=0.5)


# -- status / down / reset while stopped ---------------------------------------------------------


def test_status_when_not_running(launcher: KafkaLauncher) -> None:
    status = launcher.status()
    assert not status.running and not status.ready and status.pid is None
    assert status.bootstrap == launcher.bootstrap
    assert status.kafka_version is None and not status.formatted
    data = status.to_dict()
    assert json.loads(json.dumps(data))["data_dir"] == str(launcher.data_dir)


def test_stale_pid_file_is_ignored_and_cleaned(launcher: KafkaLauncher) -> None:
    launcher.home.mkdir(parents=True)
    launcher.pid_file.write_text("1\n")  # pid 1 exists but is not this home's broker
    assert not launcher.status().running
    assert launcher.down() is False
    assert not launcher.pid_file.exists()


def test_down_when_not_running_is_a_no_op(launcher: KafkaLauncher) -> None:
    assert launcher.down() is False


def test_reset_deletes_data_when_stopped(launcher: KafkaLauncher) -> None:
    launcher.data_dir.mkdir(parents=True)
    (launcher.data_dir / "meta.properties").write_text("node.id=1\n")
    assert launcher.status().formatted
    launcher.reset()
    assert not launcher.data_dir.exists()


# -- command line --------------------------------------------------------------------------------


@pytest.fixture
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A ``STREAMREC_HOME`` with no broker in it, on a port nothing listens on."""
    from streamrec.config import get_settings

    home = tmp_path / "home"
    monkeypatch.setenv("STREAMREC_HOME", str(home))
    monkeypatch.delenv("STREAMREC_LOCAL_KAFKA__HOME", raising=False)
    monkeypatch.setenv("STREAMREC_LOCAL_KAFKA__PORT", str(_free_port()))
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


def test_cli_status_json_when_stopped_exits_3(empty_home: Path) -> None:
    from streamrec.cli import main

    result = CliRunner().invoke(main, ["kafka", "status", "--json"])
    assert result.exit_code == 3, result.output
    data = json.loads(result.output)
    assert data["running"] is False and data["ready"] is False
    assert data["home"] == str(empty_home / ".kafka")
    assert data["lib_dir"] == str(empty_home / ".kafka" / "lib")


def test_cli_status_text_when_stopped_exits_3(empty_home: Path) -> None:
    from streamrec.cli import main

    result = CliRunner().invoke(main, ["kafka", "status"])
    assert result.exit_code == 3, result.output
    assert ": stopped" in result.output and str(empty_home / ".kafka") in result.output


def test_cli_status_of_a_broker_that_does_not_answer_exits_1(launcher: KafkaLauncher) -> None:
    """A live process that looks like this home's broker but listens on nothing."""
    import subprocess
    import sys

    from streamrec.cli import main

    launcher.home.mkdir(parents=True)
    fake = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", mod.MAIN_CLASS,
                             str(launcher.properties_file)])
    try:
        launcher.pid_file.write_text(f"{fake.pid}\n")
        where = ["--home", str(launcher.home), "--port", str(launcher.settings.port)]
        result = CliRunner().invoke(main, ["kafka", "status", *where])
        assert result.exit_code == 1, result.output
        assert f"running, pid {fake.pid}, not answering" in result.output
        result = CliRunner().invoke(main, ["kafka", "status", "--json", *where])
        assert result.exit_code == 1, result.output
        data = json.loads(result.output)
        assert (data["running"], data["ready"], data["pid"]) == (True, False, fake.pid)
    finally:
        fake.kill()
        fake.wait()


def test_cli_down_when_stopped(tmp_path: Path) -> None:
    from streamrec.cli import main

    result = CliRunner().invoke(main, ["kafka", "down", "--home", str(tmp_path)])
    assert result.exit_code == 0
    assert "not running" in result.output


def test_cli_up_on_a_busy_port_says_why(tmp_path: Path, listening: int) -> None:
    from streamrec.cli import main

    result = CliRunner().invoke(main, ["kafka", "up", "--home", str(tmp_path), "--port", str(listening),
                                       "--controller-port", str(_free_port())])
    assert result.exit_code == 1
    assert f"Port {listening}" in result.output and "already in use" in result.output
