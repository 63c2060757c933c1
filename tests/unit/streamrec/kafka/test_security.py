"""Client security settings: what each protocol gives librdkafka and Faust, and that the password
never shows in a repr, a dump or a validation error."""

from __future__ import annotations

import ssl

import faust
import pytest
from pydantic import ValidationError

from streamrec.config import KafkaSettings, Settings, WorkerSettings
from streamrec.kafka.clients import faust_app_options, worker_client_configs
from streamrec.kafka.security import client_config, faust_credentials, security_config

PASSWORD = "pa55-w0rd-never-shown"


def secure(**overrides: object) -> KafkaSettings:
    values = dict(bootstrap="b:1", security_protocol="SASL_SSL", sasl_username="worker", sasl_password=PASSWORD,
                  ssl_cafile="/etc/ca.pem")
    values.update(overrides)
    return KafkaSettings(**values)


def test_plaintext_adds_nothing_and_sasl_ssl_adds_all_five_settings() -> None:
    assert client_config("h:1", KafkaSettings()) == {"bootstrap.servers": "h:1"}
    assert security_config(secure()) == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "worker",
        "sasl.password": PASSWORD, "ssl.ca.location": "/etc/ca.pem"}
    assert security_config(secure(security_protocol="SASL_PLAINTEXT", ssl_cafile=None)) == {
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "worker",
        "sasl.password": PASSWORD}
    assert security_config(KafkaSettings(security_protocol="SSL")) == {"security.protocol": "SSL"}


def test_client_config_defaults_to_the_process_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamrec import config

    monkeypatch.setenv("STREAMREC_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("STREAMREC_KAFKA__SASL_USERNAME", "producer")
    monkeypatch.setenv("STREAMREC_KAFKA__SASL_PASSWORD", PASSWORD)
    config.get_settings.cache_clear()
    try:
        made = client_config("h:2", **{"acks": "all"})
    finally:
        config.get_settings.cache_clear()
    assert made["bootstrap.servers"] == "h:2" and made["acks"] == "all"
    assert made["sasl.username"] == "producer" and made["sasl.password"] == PASSWORD


def test_both_engines_get_the_credentials(tmp_path) -> None:
    from streamrec.kafka.secure import SecureFiles, ensure_files

    files = SecureFiles(tmp_path / "secure")
    ensure_files(files)
    settings = Settings(kafka=secure(ssl_cafile=files.ca_cert), worker=WorkerSettings(app_id="shop"))
    consumer, producer = worker_client_configs(settings)
    for config in (consumer, producer):
        assert config["security.protocol"] == "SASL_SSL" and config["sasl.password"] == PASSWORD
    credentials = faust_app_options(settings)["broker_credentials"]
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.mechanism.value == "SCRAM-SHA-512" and credentials.protocol.value == "SASL_SSL"
    assert credentials.username == "worker" and credentials.password == PASSWORD
    assert PASSWORD not in repr(credentials)
    assert faust_app_options(Settings())["broker_credentials"] is None
    with pytest.raises(ValueError, match="kafka.ssl_cafile /nowhere/ca.pem cannot be read"):
        faust_credentials(secure(ssl_cafile="/nowhere/ca.pem"))


def test_the_tls_context_checks_the_broker_certificate_and_its_name(tmp_path) -> None:
    from streamrec.kafka.secure import SecureFiles, ensure_files

    files = SecureFiles(tmp_path / "secure")
    ensure_files(files)
    credentials = faust_credentials(KafkaSettings(security_protocol="SSL", ssl_cafile=files.ca_cert))
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials.context.verify_mode == ssl.CERT_REQUIRED and credentials.context.check_hostname
    assert credentials.context.cert_store_stats()["x509_ca"] == 1


def test_the_password_never_shows_in_reprs_dumps_or_validation_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = secure()
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
    assert PASSWORD not in str(settings.model_dump()) and PASSWORD not in settings.model_dump_json()
    assert PASSWORD not in repr(Settings(kafka=settings))
    # A mistake elsewhere in the same settings: the error names the field, not the input.
    with pytest.raises(ValidationError) as raised:
        KafkaSettings(security_protocol="SASL_SSL", sasl_password=PASSWORD)
    assert "sasl_username" in str(raised.value) and PASSWORD not in str(raised.value)
    with pytest.raises(ValidationError) as raised:
        KafkaSettings(security_protocol="SASL_SSL", sasl_username="w", sasl_password=PASSWORD, partitions=0)
    assert PASSWORD not in str(raised.value)
    monkeypatch.setenv("STREAMREC_KAFKA__SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("STREAMREC_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert PASSWORD not in str(raised.value)


def test_inconsistent_settings_are_refused_with_a_sentence() -> None:
    with pytest.raises(ValidationError, match="needs kafka.sasl_username and kafka.sasl_password"):
        KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_username="w")
    with pytest.raises(ValidationError, match="does not use TLS"):
        KafkaSettings(ssl_cafile="/ca.pem")
    with pytest.raises(ValidationError):
        KafkaSettings(security_protocol="TLS")
