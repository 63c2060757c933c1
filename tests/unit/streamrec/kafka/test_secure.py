"""The secure broker's files, properties and ACLs, without Java or a broker."""

from __future__ import annotations

import datetime as dt
import json
import stat

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from streamrec.config import KafkaSettings, LocalKafkaSettings
from streamrec.kafka import KafkaLauncher, KafkaLauncherError
from streamrec.kafka import launcher as launcher_module
from streamrec.kafka.secure import (
    BROKER_CN,
    PRINCIPALS,
    SecureFiles,
    SecureSetupError,
    acl_rules,
    certificate_expiry,
    ensure_files,
    env_lines,
    secure_properties,
)


def _mode(path) -> int:  # noqa: ANN001
    return stat.S_IMODE(path.stat().st_mode)


def test_files_are_private_and_the_certificate_verifies_for_the_loopback_names(tmp_path) -> None:
    files = SecureFiles(tmp_path / "secure")
    assert ensure_files(files) is True
    assert _mode(files.folder) == 0o700
    for path in (files.ca_cert, files.ca_key, files.keystore, files.credentials):
        assert _mode(path) == 0o600, path
    passwords = files.passwords()
    assert set(passwords) == set(PRINCIPALS) and len(set(passwords.values())) == len(PRINCIPALS)
    assert all(len(p) >= 32 for p in passwords.values())

    # The keystore holds the key, the broker certificate and the CA; a standard X.509 verifier
    # accepts the chain for both names clients use.
    pem = files.keystore.read_bytes()
    assert b"-----BEGIN PRIVATE KEY-----" in pem
    leaf, ca = x509.load_pem_x509_certificates(pem)
    assert ca == x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    assert leaf.subject.rfc4514_string() == f"CN={BROKER_CN}"
    store = Store([ca])
    for name in (x509.DNSName("localhost"), x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))):
        chain = PolicyBuilder().store(store).build_server_verifier(name).verify(leaf, [])
        assert chain[-1] == ca
    # The controller listener authenticates the broker by the same certificate.
    PolicyBuilder().store(store).build_client_verifier().verify(leaf, [])
    with pytest.raises(x509.verification.VerificationError):
        PolicyBuilder().store(store).build_server_verifier(x509.DNSName("example.com")).verify(leaf, [])


def test_a_second_start_keeps_everything_and_an_expiring_certificate_is_issued_again(tmp_path) -> None:
    files = SecureFiles(tmp_path / "secure")
    ensure_files(files)
    before = {p: p.read_bytes() for p in (files.ca_cert, files.keystore, files.credentials)}
    assert ensure_files(files) is False
    assert {p: p.read_bytes() for p in before} == before
    # 340 days later the broker certificate (365 days) has less than 30 left: a new one, same CA
    # and passwords.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=340)
    assert ensure_files(files, now=later) is True
    assert files.keystore.read_bytes() != before[files.keystore]
    assert files.ca_cert.read_bytes() == before[files.ca_cert]
    assert files.credentials.read_bytes() == before[files.credentials]
    assert certificate_expiry(files.keystore) > later + dt.timedelta(days=300)


def test_client_settings_and_env_lines_of_a_principal(tmp_path) -> None:
    files = SecureFiles(tmp_path / "secure")
    ensure_files(files)
    worker = files.client_settings("worker", "127.0.0.1:1234")
    assert worker.security_protocol == "SASL_SSL" and worker.sasl_username == "worker"
    assert worker.sasl_password is not None
    assert worker.sasl_password.get_secret_value() == json.loads(files.credentials.read_text())["worker"]
    lines = env_lines(worker)
    assert "export STREAMREC_KAFKA__BOOTSTRAP=127.0.0.1:1234" in lines
    assert f"export STREAMREC_KAFKA__SSL_CAFILE={files.ca_cert}" in lines
    assert f"export STREAMREC_KAFKA__SASL_PASSWORD={worker.sasl_password.get_secret_value()}" in lines
    with pytest.raises(SecureSetupError, match="no principal 'nobody'"):
        files.client_settings("nobody", "h:1")
    with pytest.raises(SecureSetupError, match="up --secure"):
        SecureFiles(tmp_path / "none").passwords()


def test_secure_properties_have_no_plaintext_listener_and_deny_by_default(tmp_path) -> None:
    files = SecureFiles(tmp_path / "secure")
    ensure_files(files)
    settings = LocalKafkaSettings(home=tmp_path, port=9500, controller_port=9501, secure=True)
    text = launcher_module.render_server_properties(settings, tmp_path / "data",
                                                    secure_properties(files, 9500, 9501, "127.0.0.1"))
    props = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert props["listeners"] == "SASL_SSL://127.0.0.1:9500,CONTROLLER://127.0.0.1:9501"
    assert props["listener.security.protocol.map"] == "CONTROLLER:SSL,SASL_SSL:SASL_SSL"
    assert "PLAINTEXT://" not in text
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert props["super.users"] == f"User:admin;User:CN={BROKER_CN}"


def test_each_principal_gets_only_its_own_rights() -> None:
    kafka = KafkaSettings()
    rules = acl_rules(kafka, "shop")

    def rights(principal: str) -> set[tuple[str, str, str, bool]]:
        return {(r.resource, r.name, r.operation, r.prefixed) for r in rules if r.principal == principal}

    assert "admin" not in {r.principal for r in rules}  # a super user
    assert rights("producer") == {("topic", "events", "WRITE", False), ("topic", "erasures", "WRITE", False)}
    assert rights("catalog") == {("topic", "items", "WRITE", False)}
    worker = rights("worker")
    assert ("topic", "events", "READ", False) in worker and ("topic", "recommendations", "WRITE", False) in worker
    assert ("topic", "events-dlq", "WRITE", False) in worker and ("topic", "shop-", "ALL", True) in worker
    assert ("group", "shop", "READ", False) in worker and ("group", "shop-recovery", "READ", False) in worker
    # Not the groups of other services whose names start like the app id (streamrec-trainer).
    assert not any(kind == "group" and prefixed and name.startswith("shop") for kind, name, _, prefixed in worker)
    assert not any(op in ("WRITE", "ALL") and name == "events" for _, name, op, _ in worker)
    assert not any(name in ("recommendations", "events-dlq") and op != "DESCRIBE_CONFIGS"
                   for _, name, op, _ in rights("serve") | rights("trainer"))
    assert ("topic", "models", "WRITE", False) in rights("trainer")
    assert not any(op in ("WRITE", "ALL", "CREATE") for _, _, op, _ in rights("serve"))


def test_a_home_formatted_in_the_other_mode_is_refused(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "meta.properties").write_text("cluster.id=x\n")
    secure = KafkaLauncher(LocalKafkaSettings(home=tmp_path, secure=True), lib_dir=tmp_path / "lib")
    with pytest.raises(KafkaLauncherError, match="formatted without --secure"):
        secure._check_mode()
    (data / launcher_module.SECURE_MARKER).write_text("")
    plain = KafkaLauncher(LocalKafkaSettings(home=tmp_path), lib_dir=tmp_path / "lib")
    with pytest.raises(KafkaLauncherError, match="formatted with --secure"):
        plain._check_mode()
    assert secure.status().secure and not plain.status().secure
    with pytest.raises(KafkaLauncherError, match="passwords .* are gone"):
        secure._check_mode()
    ensure_files(secure.secure_files)
    secure._check_mode()


def test_reset_deletes_the_data_and_then_a_secure_home_starts_over(tmp_path) -> None:
    from click.testing import CliRunner

    from streamrec.cli import main as cli

    data = tmp_path / "data"
    data.mkdir()
    (data / "meta.properties").write_text("cluster.id=x\n")
    (data / launcher_module.SECURE_MARKER).write_text("")
    refused = CliRunner().invoke(cli, ["kafka", "reset", "--home", str(tmp_path)], input="n\n")
    assert refused.exit_code == 1 and data.exists()
    done = CliRunner().invoke(cli, ["kafka", "reset", "--home", str(tmp_path), "--yes"])
    assert done.exit_code == 0, done.output
    assert not data.exists()
    # Unformatted now: either mode may start it.
    KafkaLauncher(LocalKafkaSettings(home=tmp_path), lib_dir=tmp_path / "lib")._check_mode()
