"""``streamrec bench --floor``: what the Kafka clients and the broker cost before any work.

Three measurements against the bench's broker, each a number the batch engine's design rests on
(``streams/engine.py``, docs/performance.md):

- **consume floor**: CPU per message of reading a backlog of small events, with librdkafka
  (``Consumer.consume`` of 1,000) in this process, and with a Faust agent that does nothing but
  ``take_events(1000)`` in a child process (``python -m streamrec.benchmarks.floor faust ...``);
- **broker cost per request**: the broker's CPU per produce request (one small message,
  flushed), per offset commit, and per second of an idle consumer's 5 ms long-polls.

The broker's CPU is read from its process (psutil), so the bench must have started it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

from streamrec.config import get_settings
from streamrec.kafka.security import client_config, faust_credentials

FAUST_BATCH = 1000


def _topic(bootstrap: str, name: str, partitions: int = 4) -> str:
    from streamrec.kafka.admin import ensure_topics

    ensure_topics(bootstrap, {name: partitions})
    return name


def _fill(bootstrap: str, topic: str, n: int) -> None:
    from producers.publisher import EventPublisher

    with EventPublisher(bootstrap, topic, queue_buffering_max_messages=500_000) as publisher:
        for i in range(n):
            user = f"u{i % 50_000}".encode()
            publisher.publish_raw(user, b'{"event_id":"e%d","user_id":"%s","item_id":"i%d","type":"view","ts":1700000000.0}'
                                  % (i, user, i % 12_000))


def confluent_floor(bootstrap: str, topic: str, n: int) -> dict[str, float]:
    """librdkafka: read ``n`` messages of a backlog in batches of 1,000."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({**client_config(bootstrap), "group.id": f"floor-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(4)])
    got, wall, cpu = 0, None, None
    try:
        while got < n:
            batch = consumer.consume(FAUST_BATCH, timeout=1.0)
            if batch and wall is None:
                wall, cpu = time.perf_counter(), time.process_time()
            for message in batch:
                message.value()
            got += len(batch)
        return {"events": got, "events_per_s": got / (time.perf_counter() - wall),
                "cpu_us_per_event": 1e6 * (time.process_time() - cpu) / got}
    finally:
        consumer.close()


def faust_floor(bootstrap: str, topic: str, n: int, timeout: float = 300.0) -> dict[str, float]:
    """A Faust agent doing nothing but ``take_events(1000)``, in a child process."""
    done = subprocess.run([sys.executable, "-m", "streamrec.benchmarks.floor", "faust", bootstrap, topic, str(n)],
                          capture_output=True, text=True, timeout=timeout)
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"the Faust floor agent failed (exit {done.returncode}):\n{done.stderr[-2000:]}")


def _faust_child(bootstrap: str, topic: str, n: int) -> None:
    import faust

    app = faust.App(f"floor-{uuid.uuid4().hex[:6]}", broker=f"kafka://{bootstrap}", store="memory://",
                    broker_credentials=faust_credentials(get_settings().kafka),
                    web_enabled=False, consumer_auto_offset_reset="earliest", broker_max_poll_records=FAUST_BATCH,
                    stream_buffer_maxsize=4 * FAUST_BATCH, datadir=f"/tmp/streamrec-floor-{os.getpid()}")
    source = app.topic(topic, key_serializer="raw", value_serializer="raw")
    state: dict[str, float] = {"got": 0}

    @app.agent(source)
    async def noop(stream):  # noqa: ANN001
        async for batch in stream.take_events(FAUST_BATCH, within=0.05):
            if not state["got"]:
                state["wall"], state["cpu"] = time.perf_counter(), time.process_time()
            state["got"] += len(batch)
            if state["got"] >= n:
                got = state["got"]
                line = json.dumps({"events": got, "events_per_s": got / (time.perf_counter() - state["wall"]),
                                   "cpu_us_per_event": 1e6 * (time.process_time() - state["cpu"]) / got})
                os.write(1, (line + "\n").encode())  # fd 1 itself: Faust redirects sys.stdout to its logger
                os._exit(0)

    sys.argv = [sys.argv[0], "worker", "--loglevel", "error"]
    app.main()


def broker_costs(bootstrap: str, broker_pid: int, seconds: float = 5.0) -> dict[str, float]:
    """The broker's CPU per produce request, per offset commit and per second of idle long-polls."""
    import psutil
    from confluent_kafka import Consumer, Producer, TopicPartition

    broker = psutil.Process(broker_pid)

    def cpu() -> float:
        times = broker.cpu_times()
        return times.user + times.system

    def measure(step: Callable[[], None]) -> tuple[int, float]:
        start, count, began = cpu(), 0, time.monotonic()
        while time.monotonic() - began < seconds:
            step()
            count += 1
        return count, cpu() - start

    topic = _topic(bootstrap, f"floor-requests-{uuid.uuid4().hex[:6]}")
    producer = Producer({**client_config(bootstrap), "linger.ms": 0, "acks": "all", "enable.idempotence": True})
    producer.produce(topic, b"x", b"k")
    producer.flush(30)

    def produce_one() -> None:
        producer.produce(topic, b"x" * 200, b"k")
        producer.flush(10)

    requests, produce_cpu = measure(produce_one)
    group = Consumer({**client_config(bootstrap), "group.id": f"floor-{uuid.uuid4().hex[:6]}",
                      "enable.auto.commit": False, "fetch.wait.max.ms": 500})
    group.subscribe([topic])
    deadline = time.monotonic() + 30
    while not group.assignment() and time.monotonic() < deadline:
        group.poll(0.2)
    offset = [0]

    def commit_one() -> None:
        offset[0] += 1
        group.commit(offsets=[TopicPartition(topic, p, offset[0]) for p in range(4)], asynchronous=True)
        group.poll(0.01)

    commits, commit_cpu = measure(commit_one)
    group.close()
    idle = Consumer({**client_config(bootstrap), "group.id": f"floor-{uuid.uuid4().hex[:6]}",
                     "enable.auto.commit": False, "fetch.wait.max.ms": 5, "fetch.min.bytes": 64 * 1024,
                     "auto.offset.reset": "latest"})
    idle.assign([TopicPartition(topic, p) for p in range(4)])
    _, idle_cpu = measure(lambda: idle.poll(0.1))
    idle.close()
    quiet_start = cpu()
    time.sleep(seconds)
    quiet = cpu() - quiet_start
    return {
        "produce_requests_per_s": requests / seconds,
        "broker_ms_per_produce_request": 1e3 * produce_cpu / requests,
        "commits_per_s": commits / seconds,
        "broker_ms_per_commit": 1e3 * commit_cpu / commits,
        "broker_cores_idle_consumer_5ms_polls": (idle_cpu - quiet) / seconds,
        "broker_cores_idle": quiet / seconds,
    }


def run_floor(bootstrap: str, broker_pid: int | None, events: int = 200_000,
              log: Callable[[str], None] = lambda text: None) -> dict[str, object]:
    topic = _topic(bootstrap, f"floor-events-{uuid.uuid4().hex[:6]}")
    log(f"floor: producing {events:,} small events")
    _fill(bootstrap, topic, events)
    log("floor: librdkafka consume")
    result: dict[str, object] = {"librdkafka_consume": confluent_floor(bootstrap, topic, events)}
    log("floor: Faust take_events(1000), doing nothing")
    result["faust_take_events_noop"] = faust_floor(bootstrap, topic, events)
    if broker_pid is not None:
        log("floor: broker CPU per request")
        result["broker"] = broker_costs(bootstrap, broker_pid)
    return result


if __name__ == "__main__":  # the Faust child: python -m streamrec.benchmarks.floor faust BOOTSTRAP TOPIC N
    if len(sys.argv) != 5 or sys.argv[1] != "faust":
        raise SystemExit("usage: python -m streamrec.benchmarks.floor faust BOOTSTRAP TOPIC N")
    _faust_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
