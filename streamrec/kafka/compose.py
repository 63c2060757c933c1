"""The files of docker-compose.secure.yml's broker and services, written by
``streamrec kafka secrets --dir DIR``: the same CA, certificate, users and settings as
``streamrec kafka up --secure``, for a broker named ``kafka`` in a container.

``DIR`` then holds, besides the files of :class:`streamrec.kafka.secure.SecureFiles`::

    server.properties   the broker's settings (paths under ``/secrets``, the folder's mount point)
    scram.args          one ``kafka-storage format --add-scram`` value per line (salted passwords)
    cluster.id          the KRaft cluster id
    admin-client.properties   Kafka's own tools as ``admin`` (the health check's ``--command-config``)
    <principal>.env     ``STREAMREC_KAFKA__...=...`` lines of each principal, for ``set -a; . FILE``
"""

from __future__ import annotations

from pathlib import Path

from streamrec.config import KafkaSettings, LocalKafkaSettings
from streamrec.kafka import secure as secure_broker
from streamrec.kafka.launcher import new_cluster_id, render_server_properties

#: Where the compose file mounts the secrets folder, in every container.
MOUNT = Path("/secrets")
#: The broker's data folder in the apache/kafka container.
DATA_DIR = Path("/var/lib/kafka/data")
INTERNAL_PORT, EXTERNAL_PORT, CONTROLLER_PORT = 19092, 9092, 9093


def container_properties(admin_password: str, host: str = "kafka") -> str:
    """``server.properties`` of the secure broker in its container: SASL_SSL for containers on
    ``host:19092`` and for the machine on ``localhost:9092``, mutual TLS to the controller."""
    files = secure_broker.SecureFiles(MOUNT)
    listeners = {"INTERNAL": (f"0.0.0.0:{INTERNAL_PORT}", f"{host}:{INTERNAL_PORT}"),
                 "EXTERNAL": (f"0.0.0.0:{EXTERNAL_PORT}", f"localhost:{EXTERNAL_PORT}")}
    lines = secure_broker.listener_properties(files, admin_password, listeners, f"{host}:{CONTROLLER_PORT}")
    # The controller's own listener binds every interface; its address for the quorum is the host name.
    lines[0] = lines[0].replace(f"CONTROLLER://{host}:{CONTROLLER_PORT}", f"CONTROLLER://0.0.0.0:{CONTROLLER_PORT}")
    text = render_server_properties(LocalKafkaSettings(port=EXTERNAL_PORT, controller_port=CONTROLLER_PORT),
                                    DATA_DIR, lines)
    text = text.replace("Written by `streamrec kafka up`; rewritten on every start, edits here are lost.",
                        "Written by `streamrec kafka secrets` for docker-compose.secure.yml.")
    return text.replace(f"controller.quorum.voters=1@127.0.0.1:{CONTROLLER_PORT}",
                        f"controller.quorum.voters=1@{host}:{CONTROLLER_PORT}")


def java_client_properties(admin_password: str) -> str:
    """``--command-config`` of Kafka's own tools (the broker's health check), as ``admin``."""
    jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{secure_broker.ADMIN}" '
            f'password="{admin_password}";')
    return "\n".join([
        "security.protocol=SASL_SSL", f"sasl.mechanism={secure_broker.SCRAM_MECHANISM}", f"sasl.jaas.config={jaas}",
        "ssl.truststore.type=PEM", f"ssl.truststore.location={MOUNT / 'ca.pem'}", ""])


def write_secrets(folder: Path, *, host: str = "kafka") -> list[Path]:
    """Write (or keep) the CA, certificate and passwords, and write the broker's and each
    principal's settings; every file 0600. Returns the files written."""
    files = secure_broker.SecureFiles(folder)
    secure_broker.ensure_files(files, hosts=(host, "localhost"), addresses=("127.0.0.1",))
    passwords = files.passwords()
    written = [files.ca_cert, files.ca_key, files.keystore, files.credentials]
    properties = folder / "server.properties"
    secure_broker.write_private_text(properties, container_properties(passwords[secure_broker.ADMIN], host))
    scram = folder / "scram.args"
    secure_broker.write_private_text(scram, "".join(secure_broker.scram_argument(name, password) + "\n"
                                                    for name, password in passwords.items()))
    cluster = folder / "cluster.id"
    if not cluster.exists():
        secure_broker.write_private_text(cluster, new_cluster_id() + "\n")
    client = folder / "admin-client.properties"
    secure_broker.write_private_text(client, java_client_properties(passwords[secure_broker.ADMIN]))
    written += [properties, scram, cluster, client]
    in_container = secure_broker.SecureFiles(MOUNT)
    for principal in passwords:
        settings = KafkaSettings(bootstrap=f"{host}:{INTERNAL_PORT}", security_protocol="SASL_SSL",
                                 sasl_mechanism=secure_broker.SCRAM_MECHANISM, sasl_username=principal,
                                 sasl_password=passwords[principal], ssl_cafile=in_container.ca_cert)
        env = folder / f"{principal}.env"
        lines = [line.removeprefix("export ") for line in secure_broker.env_lines(settings)]
        secure_broker.write_private_text(env, "\n".join(lines) + "\n")
        written.append(env)
    return written
