"""What TLS and SASL/SCRAM cost the Kafka clients: produce and read back the same events on a
plaintext and on a secure local broker (``streamrec kafka up --secure``), each started here on
free ports, in turn. docs/security.md holds the numbers and the command:

    python -m streamrec.benchmarks.tls_cost --events 200000 --rounds 2 [--c2]

``--c2`` starts the brokers without the default ``-XX:TieredStopAtLevel=1`` (C1 only).
Every run checks that all events came back.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from producers.publisher import EventPublisher
from producers.synthetic import SyntheticShop
from streamrec.config import KafkaSettings, LocalKafkaSettings
from streamrec.kafka import KafkaLauncher
from streamrec.kafka.admin import ensure_worker_topics
from streamrec.kafka.secure import provision
from streamrec.kafka.security import client_config, security_config

PARTITIONS = 4


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _one(events: list, *, secure: bool, jvm_options: tuple[str, ...] | None) -> dict[str, float]:
    """Start a broker, produce ``events``, read them all back; events/s of each."""
    options = {} if jvm_options is None else {"jvm_options": jvm_options}
    settings = LocalKafkaSettings(home=Path(tempfile.mkdtemp(prefix="streamrec-tls-cost-")), port=_free_port(),
                                  controller_port=_free_port(), heap="512m", secure=secure, **options)
    launcher = KafkaLauncher(settings, lib_dir=LocalKafkaSettings().home / "lib")
    launcher.up(timeout=120)
    try:
        admin = launcher.client_settings("admin")
        kafka = KafkaSettings(**{**admin.model_dump(), "partitions": PARTITIONS})
        if secure:
            provision(admin, kafka, "streamrec")
            producer, reader = launcher.client_settings("producer"), launcher.client_settings("worker")
        else:
            ensure_worker_topics(kafka)
            producer = reader = admin
        started = time.perf_counter()
        with EventPublisher(launcher.bootstrap, kafka.events_topic, linger_ms=20,
                            config=security_config(producer)) as publisher:
            for event in events:
                publisher.publish(event)
        produce_s = time.perf_counter() - started
        consumer = Consumer({**client_config(launcher.bootstrap, reader), "group.id": "streamrec",
                             "enable.auto.commit": False})
        consumer.assign([TopicPartition(kafka.events_topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        started, read = time.perf_counter(), 0
        deadline = started + 300
        while read < len(events):
            if time.perf_counter() > deadline:
                raise RuntimeError(f"read {read} of {len(events)} events in 300 s")
            read += sum(1 for message in consumer.consume(1000, timeout=1.0) if message.error() is None)
        consume_s = time.perf_counter() - started
        consumer.close()
        if read != len(events):
            raise RuntimeError(f"read {read} events, produced {len(events)}")
        return {"produce_per_s": len(events) / produce_s, "consume_per_s": len(events) / consume_s}
    finally:
        launcher.down()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--c2", action="store_true", help="brokers with the JVM's C2 compiler (no extra options)")
    args = parser.parse_args(argv)
    events = list(SyntheticShop(items=2000, users=5000, seed=3).events(args.events, start_ts=1.7e9))
    jvm_options = () if args.c2 else None
    for number in range(1, args.rounds + 1):
        for secure in (False, True):
            result = _one(events, secure=secure, jvm_options=jvm_options)
            print(f"round {number} {'SASL_SSL ' if secure else 'PLAINTEXT'}{' C2' if args.c2 else ' C1'}: "
                  f"produce {result['produce_per_s']:,.0f} events/s, read {result['consume_per_s']:,.0f} events/s",
                  flush=True)


if __name__ == "__main__":
    main()
