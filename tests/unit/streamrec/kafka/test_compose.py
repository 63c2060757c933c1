"""The files `streamrec kafka secrets` writes for docker-compose.secure.yml."""

from __future__ import annotations

import stat

from click.testing import CliRunner
from cryptography import x509

from streamrec.cli import main as cli
from streamrec.kafka.compose import write_secrets
from streamrec.kafka.secure import PRINCIPALS, SecureFiles


def test_every_file_is_private_and_points_inside_the_container(tmp_path) -> None:
    folder = tmp_path / "secrets"
    written = write_secrets(folder, host="kafka")
    assert {p.name for p in written} >= {"server.properties", "scram.args", "cluster.id", "admin-client.properties",
                                         *(f"{name}.env" for name in PRINCIPALS)}
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    props = dict(line.split("=", 1) for line in (folder / "server.properties").read_text().splitlines()
                 if line and not line.startswith("#"))
    assert props["controller.quorum.voters"] == "1@kafka:9093"
    assert props["advertised.listeners"] == "INTERNAL://kafka:19092,EXTERNAL://localhost:9092"
    assert props["listener.security.protocol.map"] == "CONTROLLER:SSL,INTERNAL:SASL_SSL,EXTERNAL:SASL_SSL"
    assert props["ssl.keystore.location"] == "/secrets/broker.pem" and props["log.dirs"] == "/var/lib/kafka/data"
    passwords = SecureFiles(folder).passwords()
    env = dict(line.split("=", 1) for line in (folder / "worker.env").read_text().splitlines())
    assert env["STREAMREC_KAFKA__BOOTSTRAP"] == "kafka:19092" and env["STREAMREC_KAFKA__SASL_USERNAME"] == "worker"
    assert env["STREAMREC_KAFKA__SASL_PASSWORD"] == passwords["worker"]
    assert env["STREAMREC_KAFKA__SSL_CAFILE"] == "/secrets/ca.pem"
    scram = (folder / "scram.args").read_text()
    assert scram.count("SCRAM-SHA-512=[name=") == len(PRINCIPALS)
    assert not any(password in scram for password in passwords.values())
    leaf = x509.load_pem_x509_certificates((folder / "broker.pem").read_bytes())[0]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert names == ["kafka", "localhost"]


def test_a_second_run_keeps_the_passwords_and_the_cluster_id(tmp_path) -> None:
    folder = tmp_path / "secrets"
    runner = CliRunner()
    first = runner.invoke(cli, ["kafka", "secrets", "--dir", str(folder)])
    assert first.exit_code == 0, first.output
    kept = {name: (folder / name).read_bytes() for name in ("credentials.json", "cluster.id", "ca.pem")}
    assert runner.invoke(cli, ["kafka", "secrets", "--dir", str(folder)]).exit_code == 0
    assert {name: (folder / name).read_bytes() for name in kept} == kept
    assert not any(p in first.output for p in SecureFiles(folder).passwords().values())


def test_provision_runs_only_as_admin(monkeypatch) -> None:
    from streamrec import config

    monkeypatch.setenv("STREAMREC_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("STREAMREC_KAFKA__SASL_USERNAME", "worker")
    monkeypatch.setenv("STREAMREC_KAFKA__SASL_PASSWORD", "x")
    config.get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["kafka", "provision"])
    finally:
        config.get_settings.cache_clear()
    assert result.exit_code == 1 and "provision runs as the 'admin' principal" in result.output
