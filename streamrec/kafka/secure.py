"""What ``streamrec kafka up --secure`` adds to the local broker: a throw-away certificate
authority and broker certificate, one SCRAM-SHA-512 user per principal with a generated
password, the broker settings of a TLS + SASL listener with an authorizer, and the ACLs that
give each principal what it needs and nothing more (docs/security.md).

Layout, under ``<broker home>/secure/`` (folder 0700, every file 0600)::

    ca.pem             the CA's certificate: what clients trust (``kafka.ssl_cafile``)
    ca-key.pem         the CA's private key (signs the broker's certificate, nothing else)
    broker.pem         the broker's private key and certificate chain (PEM keystore)
    credentials.json   {"admin": "<password>", "worker": ..., ...}
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamrec.config import KafkaSettings

#: Every principal that gets a SCRAM user; ``admin`` is a super user (the broker itself, the
#: launcher, ACL and topic administration, ``streamrec consume``).
PRINCIPALS = ("admin", "worker", "producer", "catalog", "trainer", "serve")
ADMIN = "admin"
#: Subject of the broker's certificate; the controller listener (mutual TLS) knows the broker as
#: ``User:CN=streamrec-broker``, a super user.
BROKER_CN = "streamrec-broker"
SCRAM_MECHANISM = "SCRAM-SHA-512"
SCRAM_ITERATIONS = 8192
CA_DAYS = 3650
CERT_DAYS = 365
#: The consumer group of ``streamrec trainer`` (its ``--group`` default).
TRAINER_GROUP = "streamrec-trainer"


class SecureSetupError(RuntimeError):
    """The secure broker's files are missing or do not fit together; the message says why."""


@dataclass(frozen=True)
class SecureFiles:
    """Paths of a secure broker home's certificate and credential files."""

    folder: Path

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca-key.pem"

    @property
    def keystore(self) -> Path:
        return self.folder / "broker.pem"

    @property
    def credentials(self) -> Path:
        return self.folder / "credentials.json"

    def exists(self) -> bool:
        return all(p.exists() for p in (self.ca_cert, self.ca_key, self.keystore, self.credentials))

    def passwords(self) -> dict[str, str]:
        """``{principal: password}``; raises :class:`SecureSetupError` when there is no file."""
        try:
            data = json.loads(self.credentials.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SecureSetupError(f"{self.credentials} does not exist: start the broker with "
                                   "`streamrec kafka up --secure` first") from None
        return {str(name): str(password) for name, password in data.items()}

    def client_settings(self, principal: str, bootstrap: str, base: KafkaSettings | None = None) -> KafkaSettings:
        """``base`` (default: the defaults) with the bootstrap and ``principal``'s credentials."""
        passwords = self.passwords()
        if principal not in passwords:
            raise SecureSetupError(f"no principal {principal!r}; the secure broker knows "
                                   f"{', '.join(sorted(passwords))}")
        values = (base or KafkaSettings()).model_dump()
        values.update(bootstrap=bootstrap, security_protocol="SASL_SSL", sasl_mechanism=SCRAM_MECHANISM,
                      sasl_username=principal, sasl_password=passwords[principal], ssl_cafile=self.ca_cert)
        return KafkaSettings(**values)


def rotate_password(files: SecureFiles, admin_settings: KafkaSettings, principal: str, *,
                    timeout: float = 30.0) -> None:
    """Give ``principal`` a new random password on the running broker (as ``admin``, Kafka's
    AlterUserScramCredentials) and in ``credentials.json``. The principal's open connections
    stay; its next login needs the new password. For ``admin`` itself, the broker's own login
    (``server.properties``) takes the new password at its next start."""
    from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    from streamrec.kafka.security import client_config

    passwords = files.passwords()
    if principal not in passwords:
        raise SecureSetupError(f"no principal {principal!r}; the secure broker knows {', '.join(sorted(passwords))}")
    new = secrets.token_urlsafe(24)
    upsert = UserScramCredentialUpsertion(
        principal, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS), new.encode("utf-8"))
    admin = AdminClient({**client_config(admin_settings.bootstrap, admin_settings), "log_level": 0})
    for future in admin.alter_user_scram_credentials([upsert], request_timeout=timeout).values():
        try:
            future.result(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - re-raised with the principal it concerns
            raise SecureSetupError(f"the broker did not take {principal!r}'s new password: {exc}") from None
    write_private_text(files.credentials, json.dumps({**passwords, principal: new}, indent=2) + "\n")


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (0600), through a rename."""
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.chmod(temporary, 0o600)
    temporary.replace(path)


def write_private_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` with mode 0600."""
    _write_private(path, text.encode("utf-8"))


def ensure_files(files: SecureFiles, *, principals: Iterable[str] = PRINCIPALS,
                 now: dt.datetime | None = None, hosts: Iterable[str] = ("localhost",),
                 addresses: Iterable[str] = ("127.0.0.1",)) -> bool:
    """Create the CA, the broker's certificate and the passwords unless they all exist; True
    when they were created. A certificate that expires within 30 days is issued again (the
    passwords and the CA stay)."""
    files.folder.mkdir(parents=True, exist_ok=True)
    os.chmod(files.folder, 0o700)
    now = now or dt.datetime.now(dt.UTC)
    created = False
    if not files.credentials.exists():
        write_private_text(files.credentials, json.dumps({name: secrets.token_urlsafe(24) for name in principals},
                                                         indent=2) + "\n")
        created = True
    if not files.ca_cert.exists() or not files.ca_key.exists() or _expires_soon(files.ca_cert, now):
        ca_key, ca_cert = new_ca(now)
        _write_private(files.ca_key, _key_pem(ca_key))
        _write_private(files.ca_cert, _cert_pem(ca_cert))
        files.keystore.unlink(missing_ok=True)
        created = True
    if not files.keystore.exists() or _expires_soon(files.keystore, now):
        ca_key, ca_cert = _load_ca(files)
        key, cert = new_broker_certificate(ca_key, ca_cert, now, hosts, addresses)
        _write_private(files.keystore, _key_pem(key) + _cert_pem(cert) + _cert_pem(ca_cert))
        created = True
    return created


def new_ca(now: dt.datetime) -> tuple[Any, Any]:
    """A self-signed CA key and certificate, valid for :data:`CA_DAYS` days."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "streamrec local CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def new_broker_certificate(ca_key: Any, ca_cert: Any, now: dt.datetime,
                           hosts: Iterable[str] = ("localhost",),
                           addresses: Iterable[str] = ("127.0.0.1",)) -> tuple[Any, Any]:
    """The broker's key and a certificate signed by the CA for ``hosts`` and ``addresses``,
    valid for :data:`CERT_DAYS` days, usable as a server (clients) and as a client (the broker
    calling its controller listener)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(host) for host in hosts] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, BROKER_CN)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # type: ignore[no-any-return]
                             serialization.NoEncryption())


def _cert_pem(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)  # type: ignore[no-any-return]


def _load_ca(files: SecureFiles) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    return key, x509.load_pem_x509_certificate(files.ca_cert.read_bytes())


def _expires_soon(pem: Path, now: dt.datetime, days: int = 30) -> bool:
    """True when the first certificate in ``pem`` expires within ``days`` days."""
    from cryptography import x509

    certs = x509.load_pem_x509_certificates(pem.read_bytes())
    return bool(certs) and certs[0].not_valid_after_utc < now + dt.timedelta(days=days)


def certificate_expiry(pem: Path) -> dt.datetime:
    """When the first certificate in ``pem`` expires (UTC)."""
    from cryptography import x509

    return x509.load_pem_x509_certificates(pem.read_bytes())[0].not_valid_after_utc  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------ SCRAM and broker


def scram_argument(name: str, password: str, *, salt: bytes | None = None,
                   iterations: int = SCRAM_ITERATIONS) -> str:
    """``kafka-storage format --add-scram`` value for one user, holding the salted password
    (PBKDF2-HMAC-SHA-512, RFC 5802's ``Hi``) rather than the password itself, so that no
    password appears on a command line.

    >>> scram_argument("u", "p", salt=b"s" * 16, iterations=4096).split(",")[:3]
    ['SCRAM-SHA-512=[name=u', 'iterations=4096', 'salt="c3Nzc3Nzc3Nzc3Nzc3Nzcw=="']
    """
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    encode = lambda raw: base64.b64encode(raw).decode("ascii")  # noqa: E731
    return (f'{SCRAM_MECHANISM}=[name={name},iterations={iterations},salt="{encode(salt)}",'
            f'saltedpassword="{encode(salted)}"]')


def secure_properties(files: SecureFiles, port: int, controller_port: int, host: str) -> list[str]:
    """``server.properties`` lines of the local secure layout: clients on
    ``SASL_SSL://host:port`` (TLS, SCRAM-SHA-512), the controller on mutual TLS, ACLs enforced."""
    return listener_properties(files, files.passwords()[ADMIN], {"SASL_SSL": (f"{host}:{port}", f"{host}:{port}")},
                               f"{host}:{controller_port}")


def listener_properties(files: SecureFiles, admin_password: str, listeners: Mapping[str, tuple[str, str]],
                        controller: str) -> list[str]:
    """``server.properties`` lines of SASL_SSL ``listeners`` (``{name: (bind address,
    advertised address)}``, the first one also between brokers), a mutual-TLS controller
    listener on ``controller``, the keystore and truststore of ``files`` and the authorizer."""
    jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN}" '
            f'password="{admin_password}";')
    names = list(listeners)
    return [
        "listeners=" + ",".join([*(f"{name}://{bind}" for name, (bind, _) in listeners.items()),
                                 f"CONTROLLER://{controller}"]),
        "advertised.listeners=" + ",".join(f"{name}://{shown}" for name, (_, shown) in listeners.items()),
        "controller.listener.names=CONTROLLER",
        f"inter.broker.listener.name={names[0]}",
        "listener.security.protocol.map=" + ",".join(["CONTROLLER:SSL", *(f"{name}:SASL_SSL" for name in names)]),
        f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
        f"sasl.mechanism.inter.broker.protocol={SCRAM_MECHANISM}",
        *(f"listener.name.{name.lower()}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config={jaas}" for name in names),
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={files.keystore}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={files.ca_cert}",
        "ssl.endpoint.identification.algorithm=https",
        "listener.name.controller.ssl.client.auth=required",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        f"super.users=User:{ADMIN};User:CN={BROKER_CN}",
        "allow.everyone.if.no.acl.found=false",
    ]


# ------------------------------------------------------------------------------ ACLs


@dataclass(frozen=True)
class AclRule:
    """One ALLOW rule: ``principal`` may ``operation`` the ``resource`` (``topic``, ``group``)
    named ``name`` (exactly, or every name starting with it when ``prefixed``)."""

    principal: str
    resource: str
    name: str
    operation: str
    prefixed: bool = False


def acl_rules(kafka: KafkaSettings, app_id: str) -> list[AclRule]:
    """The ACLs of every principal but ``admin`` (a super user), from the topic names and the
    worker's ``app_id`` (its consumer group and the prefix of its own topics).

    >>> rules = acl_rules(KafkaSettings(), "streamrec")
    >>> sorted((r.resource, r.name, r.operation) for r in rules if r.principal == "producer")
    [('topic', 'erasures', 'WRITE'), ('topic', 'events', 'WRITE')]
    """
    rules: list[AclRule] = []

    def allow(principal: str, resource: str, names: Iterable[str], operations: Iterable[str], *,
              prefixed: bool = False) -> None:
        for name in names:
            rules.extend(AclRule(principal, resource, name, op, prefixed) for op in operations)

    read_groups = ("READ",)
    # The worker: reads events, the catalog and the models; writes lists and dead letters;
    # owns every topic named after its app_id (changelogs, Faust's internal topics) and its
    # group and recovery group. Its catalog and model readers assign partitions under
    # throw-away group names.
    allow("worker", "topic", (kafka.events_topic, kafka.items_topic, kafka.models_topic), ("READ", "DESCRIBE_CONFIGS"))
    allow("worker", "topic", (kafka.recommendations_topic, kafka.dlq_topic), ("WRITE", "DESCRIBE_CONFIGS"))
    # It takes erasure requests from the events topic; it only checks that the erasures topic exists.
    allow("worker", "topic", (kafka.erasures_topic,), ("DESCRIBE",))
    allow("worker", "topic", (f"{app_id}-",), ("ALL",), prefixed=True)
    allow("worker", "group", (app_id, f"{app_id}-recovery"), read_groups)
    allow("worker", "group", ("catalog-", "models-reader-"), read_groups, prefixed=True)
    # The producer: writes events and erasure requests (``streamrec forget`` writes the request
    # to the compacted erasures topic and, in order with the user's events, to the events topic).
    allow("producer", "topic", (kafka.events_topic, kafka.erasures_topic), ("WRITE",))
    # The catalog feed: writes catalog records (and tombstones).
    allow("catalog", "topic", (kafka.items_topic,), ("WRITE",))
    # The trainer: reads events under its group, reads and publishes model versions.
    allow("trainer", "topic", (kafka.events_topic, kafka.erasures_topic, kafka.items_topic), ("READ",))
    allow("trainer", "topic", (kafka.models_topic,), ("CREATE", "READ", "WRITE", "DESCRIBE_CONFIGS"))
    allow("trainer", "group", (TRAINER_GROUP, "models-reader-", "streamrec-erasures-reader", "streamrec-catalog-reader"),
          read_groups, prefixed=True)
    # serve: a read replica of the worker's states (its changelog), the catalog, the models and
    # the recent events (trending counts).
    allow("serve", "topic", (kafka.events_topic, kafka.items_topic, kafka.models_topic), ("READ",))
    allow("serve", "topic", (f"{app_id}-",), ("READ", "DESCRIBE_CONFIGS"), prefixed=True)
    allow("serve", "group", ("serve-", "catalog-", "models-reader-"), read_groups, prefixed=True)
    return rules


def acl_bindings(rules: Iterable[AclRule]) -> list[Any]:
    """confluent-kafka ``AclBinding`` objects of ``rules`` (ALLOW from any host)."""
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    return [
        AclBinding(ResourceType[rule.resource.upper()], rule.name,
                   ResourcePatternType.PREFIXED if rule.prefixed else ResourcePatternType.LITERAL,
                   f"User:{rule.principal}", "*", AclOperation[rule.operation], AclPermissionType.ALLOW)
        for rule in rules
    ]


def provision(admin_settings: KafkaSettings, kafka: KafkaSettings, app_id: str, *, timeout: float = 30.0) -> None:
    """As ``admin``: create the shared topics (events, lists, dead letters, the catalog) and
    every principal's ACLs. Idempotent. The models topic is the trainer's to create."""
    from confluent_kafka.admin import AdminClient

    from streamrec.kafka.admin import ensure_worker_topics
    from streamrec.kafka.security import client_config

    ensure_worker_topics(kafka.model_copy(update={"bootstrap": admin_settings.bootstrap}),
                         admin_factory=lambda config: AdminClient(
                             {**config, **client_config(admin_settings.bootstrap, admin_settings)}))
    admin = AdminClient({**client_config(admin_settings.bootstrap, admin_settings), "log_level": 0})
    bindings = acl_bindings(acl_rules(kafka, app_id))
    futures = admin.create_acls(bindings, request_timeout=timeout)
    for binding, future in futures.items():
        try:
            future.result(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - re-raised with the rule it concerns
            raise SecureSetupError(f"could not create the ACL {binding}: {exc}") from None
    _wait_for_acls(admin, bindings, timeout)


def _wait_for_acls(admin: Any, bindings: list[Any], timeout: float) -> None:
    """Wait until the broker's authorizer knows every binding: the controller has committed
    them when ``create_acls`` returns, but the broker applies them a moment later, and a
    client that comes sooner is refused."""
    import time

    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    every = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                             AclPermissionType.ANY)
    wanted = set(bindings)
    deadline = time.monotonic() + timeout
    while True:
        known = set(admin.describe_acls(every, request_timeout=timeout).result(timeout=timeout))
        missing = wanted - known
        if not missing:
            return
        if time.monotonic() > deadline:
            raise SecureSetupError(f"{len(missing)} ACL(s) created but not in force after {timeout:g} s, "
                                   f"e.g. {next(iter(missing))}")
        time.sleep(0.1)


def env_lines(settings: KafkaSettings) -> list[str]:
    """``export STREAMREC_KAFKA__...=...`` lines that point a service at ``settings`` (the
    password included: they are meant for ``eval`` or a 0600 env file, not for a log)."""
    import shlex

    values = {"BOOTSTRAP": settings.bootstrap, "SECURITY_PROTOCOL": settings.security_protocol}
    if settings.uses_sasl:
        values.update(SASL_MECHANISM=settings.sasl_mechanism, SASL_USERNAME=settings.sasl_username or "",
                      SASL_PASSWORD=settings.sasl_password.get_secret_value() if settings.sasl_password else "")
    if settings.ssl_cafile is not None:
        values["SSL_CAFILE"] = str(settings.ssl_cafile)
    return [f"export STREAMREC_KAFKA__{key}={shlex.quote(value)}" for key, value in values.items()]
