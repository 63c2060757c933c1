"""The secure local broker (`streamrec kafka up --secure`): TLS, SASL/SCRAM-SHA-512 and ACLs.

The whole loop runs with one principal per role (producer -> worker, either engine -> a reader),
and the broker refuses what it must: no credentials, a wrong password, plaintext on the TLS
listener, and a principal reading a topic it has no ACL for.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from producers.publisher import EventPublisher
from streamrec.cli import main as cli
from streamrec.config import KafkaSettings, LocalKafkaSettings
from streamrec.contract import decode_dead_letter
from streamrec.harness.topics import last_event_per_user, read_topic, wait_for_answers
from streamrec.harness.worker import WorkerConfig, WorkerProcess
from streamrec.kafka import KafkaLauncher
from streamrec.kafka.secure import provision
from streamrec.kafka.security import client_config, security_config
from tests.integration.conftest import free_port
from tests.integration.helpers import Shop, trained_shop

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def secure_launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaLauncher]:
    """A broker of this module only, started as `streamrec kafka up --secure` starts it."""
    settings = LocalKafkaSettings(home=tmp_path_factory.mktemp("secure-kafka"), port=free_port(),
                                  controller_port=free_port(), heap="512m", secure=True)
    launcher = KafkaLauncher(settings, lib_dir=LocalKafkaSettings().home / "lib")
    launcher.up(timeout=120)
    yield launcher
    launcher.down()


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Shop:
    return trained_shop(tmp_path_factory.mktemp("models"), items=400, users=120, history=8000, live=1500, seed=5)


def topic_settings(launcher: KafkaLauncher, run: str) -> KafkaSettings:
    """This test's topic names, with the admin's credentials."""
    return launcher.client_settings("admin").model_copy(update={
        "events_topic": f"events-{run}", "recommendations_topic": f"recommendations-{run}",
        "dlq_topic": f"events-dlq-{run}", "items_topic": f"items-{run}", "models_topic": f"models-{run}",
        "erasures_topic": f"erasures-{run}", "partitions": 2})


def as_principal(launcher: KafkaLauncher, kafka: KafkaSettings, principal: str) -> KafkaSettings:
    """``kafka``'s topics with ``principal``'s credentials."""
    own = launcher.client_settings(principal)
    return kafka.model_copy(update={"sasl_username": own.sasl_username, "sasl_password": own.sasl_password})


def secret_env(settings: KafkaSettings) -> dict[str, str]:
    """The ``STREAMREC_KAFKA__...`` variables of ``settings``' security, as a service gets them."""
    assert settings.sasl_password is not None and settings.ssl_cafile is not None
    return {"STREAMREC_KAFKA__SECURITY_PROTOCOL": settings.security_protocol,
            "STREAMREC_KAFKA__SASL_MECHANISM": settings.sasl_mechanism,
            "STREAMREC_KAFKA__SASL_USERNAME": settings.sasl_username or "",
            "STREAMREC_KAFKA__SASL_PASSWORD": settings.sasl_password.get_secret_value(),
            "STREAMREC_KAFKA__SSL_CAFILE": str(settings.ssl_cafile)}


@pytest.mark.parametrize("engine", ["batch", "faust"])
def test_the_pipeline_runs_with_one_principal_per_role(secure_launcher, shop, tmp_path: Path, engine: str) -> None:
    run = f"{engine}-{uuid.uuid4().hex[:6]}"
    admin = topic_settings(secure_launcher, run)
    app_id = f"streamrec-{run}"
    provision(admin, admin, app_id)
    worker_kafka = as_principal(secure_launcher, admin, "worker")
    config = WorkerConfig(bootstrap=secure_launcher.bootstrap, models_dir=shop.models_dir, data_dir=tmp_path / "data",
                          app_id=app_id, events_topic=admin.events_topic,
                          recommendations_topic=admin.recommendations_topic, dlq_topic=admin.dlq_topic,
                          partitions=2, engine=engine,
                          extra_env={**secret_env(worker_kafka), "STREAMREC_KAFKA__ITEMS_TOPIC": admin.items_topic,
                                     "STREAMREC_KAFKA__MODELS_TOPIC": admin.models_topic,
                                     "STREAMREC_KAFKA__ERASURES_TOPIC": admin.erasures_topic})
    events = shop.live[:600]
    producer = as_principal(secure_launcher, admin, "producer")
    # At DEBUG, the most a worker ever logs: still no password in it.
    with WorkerProcess(config, log_file=tmp_path / "worker.log", loglevel="debug") as worker:
        worker.wait_ready(timeout=120)
        with EventPublisher(secure_launcher.bootstrap, admin.events_topic, config=security_config(producer)) as pub:
            for event in events:
                pub.publish(event)
            pub.publish_raw(b"u-bad", b'{"event_id": "broken"')
        answered = wait_for_answers(secure_launcher.bootstrap, admin.recommendations_topic,
                                    last_event_per_user(events).values(), timeout=120, kafka=admin)
        letters = read_topic(secure_launcher.bootstrap, admin.dlq_topic, done=lambda m: len(m) >= 1, timeout=60,
                             kafka=admin)
        assert worker.stop() == 0
    assert {rec.user_id for rec, _ in answered} == {e.user_id for e in events}
    assert [decode_dead_letter(value)["reason"] for _, value in letters] == ["malformed_json"]
    # The worker's DEBUG log (Faust's includes the SCRAM exchange) holds no password.
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert worker_kafka.sasl_password is not None
    assert worker_kafka.sasl_password.get_secret_value() not in log


def refusal(settings: dict, *, timeout: float = 4.0) -> list[KafkaError]:
    """Ask for metadata with ``settings``; the errors librdkafka reported (it must fail)."""
    errors: list[KafkaError] = []
    admin = AdminClient({**settings, "error_cb": errors.append, "log_level": 0,
                         "socket.connection.setup.timeout.ms": 3000})
    with pytest.raises(KafkaException) as raised:
        admin.list_topics(timeout=timeout)
    admin.poll(1.0)  # serves error_cb
    return [raised.value.args[0], *errors]


def test_no_credentials_plaintext_and_a_wrong_password_are_refused(secure_launcher) -> None:
    admin = secure_launcher.client_settings("admin")
    bootstrap = secure_launcher.bootstrap
    # Plaintext on the TLS listener.
    refusal({"bootstrap.servers": bootstrap})
    # TLS that trusts the CA, but no SASL user.
    refusal({"bootstrap.servers": bootstrap, "security.protocol": "SSL", "ssl.ca.location": str(admin.ssl_cafile)})
    # A known user with a wrong password: an authentication error, which does not echo the password.
    wrong = admin.model_copy(update={"sasl_username": "worker", "sasl_password": SecretStr("not-the-password")})
    errors = refusal(client_config(bootstrap, wrong))
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    assert not any("not-the-password" in e.str() for e in errors)
    # TLS to a broker whose certificate the client cannot verify (no CA given).
    refusal(client_config(bootstrap, admin.model_copy(update={"ssl_cafile": None})))
    # The admin itself gets through.
    metadata = AdminClient(client_config(bootstrap, admin)).list_topics(timeout=10)
    assert metadata.brokers


def test_a_principal_without_a_read_acl_cannot_read_events(secure_launcher) -> None:
    run = f"acl-{uuid.uuid4().hex[:6]}"
    admin = topic_settings(secure_launcher, run)
    provision(admin, admin, f"streamrec-{run}")
    producer = as_principal(secure_launcher, admin, "producer")
    with EventPublisher(secure_launcher.bootstrap, admin.events_topic, config=security_config(producer)) as pub:
        pub.publish_raw(b"k", b"{}")
    reader = Consumer({**client_config(secure_launcher.bootstrap, producer), "group.id": f"producer-reads-{run}",
                       "enable.auto.commit": False, "log_level": 0})
    try:
        reader.assign([TopicPartition(admin.events_topic, p, OFFSET_BEGINNING) for p in range(2)])
        codes = set()
        for _ in range(20):
            message = reader.poll(0.5)
            if message is not None and message.error() is not None:
                codes.add(message.error().code())
            if message is not None and message.error() is None:
                pytest.fail("the producer principal read an event")
            if codes:
                break
        assert KafkaError.TOPIC_AUTHORIZATION_FAILED in codes or KafkaError.GROUP_AUTHORIZATION_FAILED in codes, codes
    finally:
        reader.close()
    # The worker may read it.
    worker = as_principal(secure_launcher, admin, "worker")
    consumer = Consumer({**client_config(secure_launcher.bootstrap, worker), "group.id": f"streamrec-{run}",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(admin.events_topic, p, OFFSET_BEGINNING) for p in range(2)])
        got = None
        for _ in range(40):
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got = message.value()
                break
        assert got == b"{}"
    finally:
        consumer.close()


def test_passwords_stay_out_of_the_broker_log_and_the_env_command_prints_them_for_eval(secure_launcher) -> None:
    passwords = secure_launcher.secure_files.passwords()
    broker_log = secure_launcher.log_file.read_text(errors="replace")
    # The authorizer runs and denies what no ACL allows.
    assert "super.users=User:CN=streamrec-broker,User:admin, default result=DENIED" in broker_log
    assert not any(password in broker_log for password in passwords.values())
    result = CliRunner().invoke(cli, ["kafka", "env", "--principal", "worker", "--home", str(secure_launcher.home),
                                      "--port", str(secure_launcher.settings.port)])
    assert result.exit_code == 0, result.output
    assert f"export STREAMREC_KAFKA__BOOTSTRAP={secure_launcher.bootstrap}" in result.output
    assert f"export STREAMREC_KAFKA__SASL_PASSWORD={passwords['worker']}" in result.output
    assert "STREAMREC_KAFKA__SASL_USERNAME=worker" in result.output
    assert passwords["admin"] not in result.output


def test_up_secure_on_the_running_broker_provisions_and_prints_no_password(secure_launcher) -> None:
    settings = secure_launcher.settings
    result = CliRunner().invoke(cli, ["kafka", "up", "--secure", "--home", str(secure_launcher.home),
                                      "--port", str(settings.port), "--controller-port", str(settings.controller_port)])
    assert result.exit_code == 0, result.output
    assert "already running" in result.output and str(secure_launcher.secure_files.ca_cert) in result.output
    assert f"streamrec kafka env --principal worker --home {secure_launcher.home} --port {settings.port}" in result.output
    assert not any(password in result.output for password in secure_launcher.secure_files.passwords().values())
    # The topics of the default settings now exist, seen by the admin.
    topics = AdminClient(client_config(secure_launcher.bootstrap, secure_launcher.client_settings())).list_topics(
        timeout=10).topics
    assert {"events", "recommendations", "events-dlq", "items"} <= set(topics)
    # Asking for the plaintext broker on this home is refused at once, and the broker runs on.
    refused = CliRunner().invoke(cli, ["kafka", "up", "--no-secure", "--home", str(secure_launcher.home),
                                       "--port", str(settings.port), "--controller-port", str(settings.controller_port)])
    assert refused.exit_code == 1 and "formatted with --secure" in refused.output, refused.output
    assert secure_launcher.answers(timeout=10)


def test_a_rotated_password_replaces_the_old_one(secure_launcher) -> None:
    before = secure_launcher.client_settings("trainer")
    result = CliRunner().invoke(cli, ["kafka", "rotate", "--principal", "trainer", "--home", str(secure_launcher.home),
                                      "--port", str(secure_launcher.settings.port)])
    assert result.exit_code == 0, result.output
    after = secure_launcher.client_settings("trainer")
    assert after.sasl_password != before.sasl_password
    assert after.sasl_password is not None and after.sasl_password.get_secret_value() not in result.output
    errors = refusal(client_config(secure_launcher.bootstrap, before))
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    assert AdminClient(client_config(secure_launcher.bootstrap, after)).list_topics(timeout=10).brokers


def _write(launcher: KafkaLauncher, kafka: KafkaSettings, topic: str) -> KafkaError | None:
    """Produce one record to ``topic`` with ``kafka``'s credentials; its delivery error, if any."""
    from confluent_kafka import Producer

    outcome: list[KafkaError | None] = []
    producer = Producer({**client_config(launcher.bootstrap, kafka), "log_level": 0, "message.timeout.ms": 8000})
    try:
        producer.produce(topic, b"{}", b"k", on_delivery=lambda error, _message: outcome.append(error))
    except KafkaException as exc:
        return exc.args[0]
    producer.flush(10)
    return outcome[0] if outcome else KafkaError(KafkaError._MSG_TIMED_OUT)


def test_who_may_write_where(secure_launcher) -> None:
    """The write side of the ACL table in docs/security.md, against the real authorizer."""
    run = f"matrix-{uuid.uuid4().hex[:6]}"
    admin = topic_settings(secure_launcher, run)
    app_id = f"streamrec-{run}"
    provision(admin, admin, app_id)
    changelog = f"{app_id}-user-states-changelog"
    cases = [
        ("producer", admin.events_topic, True), ("producer", admin.recommendations_topic, False),
        ("producer", admin.items_topic, False), ("producer", admin.erasures_topic, True),
        ("catalog", admin.items_topic, True), ("catalog", admin.events_topic, False),
        ("worker", admin.recommendations_topic, True), ("worker", admin.dlq_topic, True),
        ("worker", changelog, True), ("worker", admin.events_topic, False),
        ("trainer", admin.models_topic, True), ("trainer", admin.events_topic, False),
        ("trainer", admin.erasures_topic, False), ("worker", admin.erasures_topic, False),
        ("serve", admin.events_topic, False), ("serve", changelog, False), ("serve", admin.recommendations_topic, False),
    ]
    wrong = []
    for principal, topic, allowed in cases:
        error = _write(secure_launcher, as_principal(secure_launcher, admin, principal), topic)
        denied = error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        if (error is None) != allowed or (not allowed and not denied):
            wrong.append((principal, topic, allowed, error))
    assert not wrong, wrong
