"""How every Kafka client of streamrec connects: the bootstrap address and the security settings
(TLS, SASL, the CA file) from :class:`streamrec.config.KafkaSettings`, in librdkafka's names
(:func:`client_config`) and in Faust's (:func:`faust_credentials`).

Every Producer, Consumer and AdminClient is built from :func:`client_config`, so a client that
talks to a secure broker needs nothing but the ``STREAMREC_KAFKA__...`` settings.
"""

from __future__ import annotations

import ssl
from typing import Any

from streamrec.config import KafkaSettings, get_settings


def security_config(kafka: KafkaSettings) -> dict[str, Any]:
    """librdkafka's security settings of ``kafka``: nothing for PLAINTEXT.

    >>> security_config(KafkaSettings())
    {}
    >>> sorted(security_config(KafkaSettings(security_protocol="SSL", ssl_cafile="/ca.pem")).items())
    [('security.protocol', 'SSL'), ('ssl.ca.location', '/ca.pem')]
    """
    if kafka.security_protocol == "PLAINTEXT":
        return {}
    config: dict[str, Any] = {"security.protocol": kafka.security_protocol}
    if kafka.uses_sasl:
        config.update({
            "sasl.mechanism": kafka.sasl_mechanism,
            "sasl.username": kafka.sasl_username,
            "sasl.password": _password(kafka),
        })
    if kafka.uses_tls and kafka.ssl_cafile is not None:
        config["ssl.ca.location"] = str(kafka.ssl_cafile)
    return config


def client_config(bootstrap: str | None = None, kafka: KafkaSettings | None = None, **extra: Any) -> dict[str, Any]:
    """Settings of a confluent-kafka Producer, Consumer or AdminClient: ``bootstrap`` (default:
    ``kafka.bootstrap``), the security settings of ``kafka`` (default: this process's settings,
    ``STREAMREC_KAFKA__...``), then ``extra`` (librdkafka settings, ``**{"group.id": ...}``).

    >>> client_config("h:1", KafkaSettings(), **{"group.id": "g"})
    {'bootstrap.servers': 'h:1', 'group.id': 'g'}
    """
    kafka = kafka if kafka is not None else get_settings().kafka
    return {"bootstrap.servers": bootstrap or kafka.bootstrap, **security_config(kafka), **extra}


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """A TLS client context that trusts ``kafka.ssl_cafile`` (or the system's authorities) and
    checks the broker's host name, as librdkafka does."""
    cafile = str(kafka.ssl_cafile) if kafka.ssl_cafile is not None else None
    try:
        return ssl.create_default_context(purpose=ssl.Purpose.SERVER_AUTH, cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"kafka.ssl_cafile {cafile} cannot be read as PEM certificates: {exc}") from None


def faust_credentials(kafka: KafkaSettings) -> Any:
    """Faust's ``broker_credentials`` for ``kafka``: None for PLAINTEXT, else a
    ``faust.SASLCredentials`` or ``faust.SSLCredentials``."""
    if kafka.security_protocol == "PLAINTEXT":
        return None
    import faust

    if kafka.security_protocol == "SSL":
        return faust.SSLCredentials(ssl_context(kafka))
    return faust.SASLCredentials(
        username=kafka.sasl_username, password=_password(kafka),
        ssl_context=ssl_context(kafka) if kafka.uses_tls else None, mechanism=kafka.sasl_mechanism)


def _password(kafka: KafkaSettings) -> str:
    if kafka.sasl_password is None:  # the settings' validator makes this unreachable
        raise ValueError(f"kafka.security_protocol {kafka.security_protocol} needs kafka.sasl_password")
    return kafka.sasl_password.get_secret_value()

